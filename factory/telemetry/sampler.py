"""One node's sampling step: read the devices, account energy, attribute it, keep history.

`NodeSampler.tick()` is the whole step; the TelemetryActor calls it every `interval_s` from a
background thread. It takes its clock, backends and Ray view as arguments, so a test (or the
benchmark) drives it without Ray.

Invariants:
  * A tick never raises because a device or the Ray state API failed: the failure shows in the
    readings (`healthy=False`) or in `NodeStatus.error`, and the next tick tries again.
  * Sample times are factory-clock times, so histories line up with prices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from factory.clock import Clock
from factory.config import TelemetryConfig
from factory.telemetry.attribution import Consumer, RayWorkloads, SimulatedAssignment
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.backends.host import HostBackend
from factory.telemetry.energy import J_PER_KWH, EnergyLedger, GpuEnergyMeter, factory_day
from factory.telemetry.history import GpuHistory
from factory.telemetry.models import OTHER, GpuReading, GpuStatus, HostReading, JobEnergy, NodeStatus
from factory.telemetry.power_caps import cap_floor_w


@dataclass
class NodeSnapshot:
    """Everything one tick produced."""

    node_id: str
    time_s: float
    gpus: list[GpuStatus]
    node: NodeStatus
    job_energy_kwh: dict[str, float] = field(default_factory=dict)


class NodeSampler:
    """Samples one node's GPUs (any backend, or none) and host."""

    def __init__(self, node_id: str, node_ip: str | None, backend: GpuBackend | None,
                 host: HostBackend | None, clock: Clock, config: TelemetryConfig,
                 workloads: RayWorkloads | None = None, backend_error: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.node_ip = node_ip
        self.backend = backend
        self.host = host
        self.clock = clock
        self.config = config
        self.workloads = workloads
        self.backend_error = backend_error
        self._monotonic = monotonic
        gpu_count = backend.gpu_count if backend is not None else 0
        self.histories = [GpuHistory(config.history_samples) for _ in range(gpu_count)]
        self.meters = [GpuEnergyMeter() for _ in range(gpu_count)]
        self.ledger = EnergyLedger()
        self.cpu_energy_j = 0.0
        self._assignment = SimulatedAssignment(gpu_count) if self.simulated else None
        self._usage: dict[int, list[tuple[float, Consumer]]] = {}
        self._last_refresh_mono: float | None = None
        self._last_time_s: float | None = None
        self._last_mono: float | None = None
        self._last_cpu_counter_j: float | None = None
        self.latest: NodeSnapshot | None = None
        self.power_cap_floor_w = cap_floor_w(backend)

    @property
    def simulated(self) -> bool:
        """The GPUs here are simulated."""
        return self.backend is not None and self.backend.source == "simulated"

    def usage_shares(self) -> dict[int, float]:
        """The share of each simulated GPU that Ray has assigned (the simulated backend's input)."""
        return {index: sum(share for share, _ in holders) for index, holders in self._usage.items()}

    def refresh_workloads(self) -> None:
        """Ask Ray who holds which GPU now.

        Safe to run beside `tick()` in another thread (the actor does, so that a slow state API
        never holds the lock its queries wait on): it only rebinds `_usage` and the workloads'
        lists, each in one step. Two refreshes must not run at once.
        """
        if self.workloads is None:
            return
        self.workloads.refresh()
        self._last_refresh_mono = self._monotonic()
        if self._assignment is not None:
            self._usage = self._assignment.update(self.workloads.holders)

    def refresh_workloads_if_due(self) -> None:
        """Refresh who holds which GPU if `attribution_interval_s` has passed since the last time."""
        if self.workloads is not None and (
            self._last_refresh_mono is None
            or self._monotonic() - self._last_refresh_mono >= self.config.attribution_interval_s
        ):
            self.refresh_workloads()

    def tick(self, refresh: bool = True) -> NodeSnapshot:
        """Take one sample of every device; account and attribute the energy since the last.

        `refresh=False`: the caller refreshes the workloads itself (`refresh_workloads_if_due`).
        """
        if refresh:
            self.refresh_workloads_if_due()
        mono = self._monotonic()
        time_s = self.clock.now_s()
        readings = self.backend.read() if self.backend is not None else []
        host = self.host.read() if self.host is not None else None
        factory_dt = 0.0 if self._last_time_s is None else max(0.0, time_s - self._last_time_s)
        real_dt = 0.0 if self._last_mono is None else max(0.0, mono - self._last_mono)
        first = self._last_time_s is None
        gpus = []
        for reading in readings:
            consumers = self._consumers(reading)
            interval_s = factory_dt if reading.source == "simulated" else real_dt
            energy_j = self.meters[reading.index].update(reading, interval_s)
            if not first:
                self.ledger.charge(consumers, energy_j, interval_s, time_s)
            self.histories[reading.index].append(time_s, reading, self.meters[reading.index].energy_j)
            gpus.append(self._status(reading, consumers, time_s))
        cpu_power_w = self._account_cpu(host, real_dt, factory_dt, time_s)
        self._last_time_s, self._last_mono = time_s, mono
        snapshot = NodeSnapshot(
            node_id=self.node_id, time_s=time_s, gpus=gpus,
            node=self._node_status(gpus, host, cpu_power_w, time_s),
            job_energy_kwh=self._energy_by_job_kwh(),
        )
        self.latest = snapshot
        return snapshot

    def job_energy(self, job_id: str) -> JobEnergy | None:
        """Energy charged to a factory job (or Ray job) id on this node; None if never seen."""
        entry = self.ledger.job(job_id)
        if entry is None:
            return None
        return JobEnergy(job_id=job_id, energy_kwh=entry.energy_j / J_PER_KWH,
                         gpu_seconds=entry.gpu_seconds,
                         by_node_kwh={self.node_id: entry.energy_j / J_PER_KWH},
                         first_seen_s=entry.first_seen_s, last_seen_s=entry.last_seen_s)

    def history(self, index: int, since_s: float | None = None) -> dict[str, list[float]]:
        """One GPU's samples since `since_s` (factory time), columns oldest first."""
        return self.histories[index].since(since_s)

    def averages(self, index: int, since_s: float | None = None) -> dict[str, float | None]:
        """One GPU's mean utilisation, memory, power and temperature since `since_s`."""
        return self.histories[index].mean(since_s)

    def _consumers(self, reading: GpuReading) -> list[Consumer]:
        if reading.source == "simulated":
            return [consumer for _, consumer in self._usage.get(reading.index, [])]
        consumers = []
        for process in reading.processes:
            consumer = (self.workloads.consumer_of_pid(process.pid) if self.workloads is not None
                        else Consumer(factory_job=OTHER))
            process.factory_job = consumer.factory_job
            process.ray_job_id = consumer.ray_job_id
            process.actor_id = consumer.actor_id
            consumers.append(consumer)
        return consumers

    def _status(self, reading: GpuReading, consumers: list[Consumer], time_s: float) -> GpuStatus:
        busy = reading.healthy and (
            bool(consumers)
            or (reading.utilization_pct or 0.0) >= self.config.busy_utilization_pct
        )
        return GpuStatus(
            **reading.model_dump(), node_id=self.node_id, node_ip=self.node_ip, time_s=time_s,
            busy=busy, energy_kwh=self.meters[reading.index].energy_j / J_PER_KWH,
            consumers=sorted({consumer.factory_job for consumer in consumers}),
        )

    def _account_cpu(self, host: HostReading | None, real_dt: float, factory_dt: float,
                     time_s: float) -> float | None:
        """Count CPU package energy since the last tick; return its mean power (None without RAPL).

        On a node with simulated GPUs, whose energy runs on the factory clock, the CPU's measured
        power is counted over factory time too, so the node's energy adds up on one time base.
        """
        if host is None or host.cpu_energy_counter_j is None:
            return None
        previous, self._last_cpu_counter_j = self._last_cpu_counter_j, host.cpu_energy_counter_j
        if previous is None or real_dt <= 0:
            return None
        power_w = max(0.0, host.cpu_energy_counter_j - previous) / real_dt
        energy_j = power_w * (factory_dt if self.simulated else real_dt)
        self.cpu_energy_j += energy_j
        self.ledger.add_day_energy(energy_j, time_s)
        return power_w

    def _node_status(self, gpus: list[GpuStatus], host: HostReading | None, cpu_power_w: float | None,
                     time_s: float) -> NodeStatus:
        gpu_power_w = sum(gpu.power_w or 0.0 for gpu in gpus)
        errors = [message for message in (
            self.backend_error,
            self.workloads.last_error if self.workloads is not None else None,
        ) if message]
        gpu_energy_j = sum(meter.energy_j for meter in self.meters)
        return NodeStatus(
            node_id=self.node_id, node_ip=self.node_ip, state="alive",
            source=self.backend.source if self.backend is not None else "host",
            error="; ".join(errors) or None, time_s=time_s,
            gpus=len(gpus), gpus_busy=sum(gpu.busy for gpu in gpus),
            gpus_unhealthy=sum(not gpu.healthy for gpu in gpus),
            gpu_power_w=gpu_power_w, cpu_power_w=cpu_power_w,
            it_power_w=gpu_power_w + (cpu_power_w or 0.0),
            cpu_utilization_pct=host.cpu_utilization_pct if host else None,
            memory_used_mib=host.memory_used_mib if host else None,
            memory_total_mib=host.memory_total_mib if host else None,
            energy_kwh=(gpu_energy_j + self.cpu_energy_j) / J_PER_KWH,
            energy_today_kwh=self.ledger.by_day_j.get(factory_day(time_s), 0.0) / J_PER_KWH,
            history_bytes=sum(history.nbytes for history in self.histories),
            power_cap_floor_w=self.power_cap_floor_w,
        )

    def _energy_by_job_kwh(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for consumer, entry in self.ledger.by_consumer.items():
            totals[consumer.factory_job] = totals.get(consumer.factory_job, 0.0) + entry.energy_j / J_PER_KWH
        return totals
