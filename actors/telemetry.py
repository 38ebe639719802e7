"""TelemetryActor: one per Ray node, pinned to it; the factory's eyes on that node.

It samples the node's GPUs (NVML, or simulated GPUs the node declares to Ray) and host every
`telemetry.interval_s` on a background thread, keeps a bounded history, accounts each GPU's
energy and attributes it to the jobs holding the GPU, and exports everything as Ray metrics.

It holds no durable state (the store lives on the head node): a restart begins fresh energy
totals and history, which is why it reports `restarted` but no persisted incarnation.
"""

from __future__ import annotations

import threading
from typing import Any

import ray

from actors.base import FactoryActor
from factory.errors import TelemetryError
from factory.telemetry.attribution import RayWorkloads
from factory.telemetry.backends.host import HostBackend
from factory.telemetry.metrics import TelemetryMetrics
from factory.telemetry.models import GpuStatus, JobEnergy, NodeStatus, PowerCaps
from factory.telemetry.power_caps import apply_job_caps
from factory.telemetry.sampler import NodeSampler, NodeSnapshot
from factory.telemetry.select import select_backend


class TelemetryActor(FactoryActor):
    """The telemetry agent of one node."""

    kind = "telemetry"

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        assert self.clock is not None, "telemetry actors are created with the factory clock"
        settings = self.config.telemetry
        ray_gpus = next((node["Resources"].get("GPU", 0.0) for node in ray.nodes()
                         if node["NodeID"] == self._node_id), 0.0)
        # The simulated backend reads the sampler's view of Ray's GPU assignment.
        selection = select_backend(settings, ray_gpus, usage=lambda: self._sampler.usage_shares())
        if selection.error:
            self._record_error(selection.error)
        self._sampler = NodeSampler(
            node_id=self._node_id, node_ip=ray.util.get_node_ip_address(), backend=selection.backend,
            host=HostBackend(), clock=self.clock, config=settings,
            workloads=RayWorkloads(self._node_id), backend_error=selection.error,
        )
        self._metrics = TelemetryMetrics()
        self._lock = threading.Lock()  # guards the sampler's state: ticks and queries
        self._refresh_lock = threading.Lock()  # one Ray state API refresh at a time, outside `_lock`
        try:
            self._sample()
        except Exception as exc:  # noqa: BLE001 - a failed first sample must not fail the actor
            self._record_error(exc)
        self._run_every(settings.interval_s, self._sample, "telemetry-sampler")

    def gpus(self) -> list[GpuStatus]:
        """The latest reading of each GPU on this node, with energy and consumers."""
        with self._lock:
            return self._latest().gpus

    def node_status(self) -> NodeStatus:
        """This node's power, GPU counts, host load and energy, as of the latest sample."""
        with self._lock:
            return self._latest().node

    def history(self, index: int, since_s: float | None = None) -> dict[str, list[float]]:
        """One GPU's samples since `since_s` (factory time), for plots."""
        with self._lock:
            return self._sampler.history(index, since_s)

    def averages(self, index: int, since_s: float | None = None) -> dict[str, float | None]:
        """One GPU's mean utilisation, memory, power and temperature since `since_s`."""
        with self._lock:
            return self._sampler.averages(index, since_s)

    def job_energy(self, job_id: str) -> JobEnergy | None:
        """GPU energy attributed to a factory job (or Ray job) id on this node."""
        with self._lock:
            return self._sampler.job_energy(job_id)

    def apply_power_caps(self, caps_by_job: dict[str, float]) -> PowerCaps:
        """Cap the GPUs of these jobs (W per GPU) and restore every other GPU here; sample again at once."""
        with self._lock:
            caps = apply_job_caps(self._sampler.backend, self._node_id, self._latest().gpus, caps_by_job)
        if caps.changed:
            try:
                self._sample()  # power under the new limits shows now, not one interval later
            except Exception as exc:  # noqa: BLE001 - the limits are set; the next tick samples them
                self._record_error(exc)
        return caps

    def _latest(self) -> NodeSnapshot:
        latest = self._sampler.latest
        if latest is None:
            raise TelemetryError(f"no sample yet on this node: {self._last_error or 'starting'}")
        return latest

    def _sample(self) -> NodeSnapshot:
        with self._refresh_lock:
            self._sampler.refresh_workloads_if_due()
        with self._lock:
            snapshot = self._sampler.tick(refresh=False)
        self._metrics.export(snapshot)
        return snapshot
