"""Telemetry as Ray metrics, scraped from every node's Prometheus endpoint.

Names follow the DCGM exporter where it has the field, so dashboards and alerts written for DCGM
work; factory-specific series are prefixed `factory_`. Ray lowercases metric names and prefixes
them with `ray_` on export, so `dcgm_fi_dev_power_usage` is scraped as
`ray_dcgm_fi_dev_power_usage`. `METRICS` is the documented contract (the table in docs/telemetry.md is made
from it and a test scrapes every name).

Tags: `node` (Ray node id), `gpu` (index on the node), `source` (nvml | simulated), `job` (factory
job id, `other` or `idle`). The per-GPU series do not carry `job`: a gauge keeps its last value
per tag set, so a `job` tag on power would leave a finished job's power behind and double-count.
The job's energy is its own monotonic series instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from factory.telemetry.energy import J_PER_KWH

if TYPE_CHECKING:
    from factory.telemetry.sampler import NodeSnapshot

GPU_TAGS = ("node", "gpu", "source")
NODE_TAGS = ("node",)
JOB_TAGS = ("node", "job")


@dataclass(frozen=True)
class MetricSpec:
    """One exported series: its name (before Ray's `ray_` prefix), unit, tags and meaning.

    `simulated=False`: simulated GPUs do not model this field, so their nodes do not export it.
    """

    name: str
    unit: str
    tags: tuple[str, ...]
    description: str
    simulated: bool = True


METRICS = (
    MetricSpec("dcgm_fi_dev_gpu_util", "%", GPU_TAGS, "GPU utilisation"),
    MetricSpec("dcgm_fi_dev_fb_used", "MiB", GPU_TAGS, "GPU memory used"),
    MetricSpec("dcgm_fi_dev_fb_free", "MiB", GPU_TAGS, "GPU memory free"),
    MetricSpec("dcgm_fi_dev_power_usage", "W", GPU_TAGS, "GPU power draw"),
    MetricSpec("dcgm_fi_dev_total_energy_consumption", "mJ", GPU_TAGS,
               "GPU energy since the telemetry actor started (hardware counter or integrated)"),
    MetricSpec("dcgm_fi_dev_gpu_temp", "C", GPU_TAGS, "GPU temperature"),
    MetricSpec("dcgm_fi_dev_sm_clock", "MHz", GPU_TAGS, "SM clock", simulated=False),
    MetricSpec("factory_gpu_healthy", "1/0", GPU_TAGS, "1 if the GPU answered its last read"),
    MetricSpec("factory_node_it_power_w", "W", NODE_TAGS, "GPU plus measured CPU package power"),
    MetricSpec("factory_node_cpu_utilization_pct", "%", NODE_TAGS, "host CPU utilisation"),
    MetricSpec("factory_node_energy_kwh", "kWh", NODE_TAGS, "node energy since the actor started"),
    MetricSpec("factory_job_energy_kwh", "kWh", JOB_TAGS, "GPU energy attributed to a job on a node"),
)


class TelemetryMetrics:
    """The Ray gauges of one telemetry actor. Create inside a Ray worker (the actor)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self._gauges = {
            spec.name: Gauge(spec.name, description=f"{spec.description} ({spec.unit})",
                             tag_keys=spec.tags)
            for spec in METRICS
        }

    def export(self, snapshot: NodeSnapshot) -> None:
        """Set every gauge from one node snapshot."""
        node = snapshot.node_id
        for gpu in snapshot.gpus:
            tags = {"node": node, "gpu": str(gpu.index), "source": gpu.source}
            self._set("factory_gpu_healthy", 1.0 if gpu.healthy else 0.0, tags)
            self._set("dcgm_fi_dev_gpu_util", gpu.utilization_pct, tags)
            self._set("dcgm_fi_dev_fb_used", gpu.memory_used_mib, tags)
            if gpu.memory_total_mib is not None and gpu.memory_used_mib is not None:
                self._set("dcgm_fi_dev_fb_free", gpu.memory_total_mib - gpu.memory_used_mib, tags)
            self._set("dcgm_fi_dev_power_usage", gpu.power_w, tags)
            self._set("dcgm_fi_dev_total_energy_consumption", gpu.energy_kwh * J_PER_KWH * 1000.0, tags)
            self._set("dcgm_fi_dev_gpu_temp", gpu.temperature_c, tags)
            self._set("dcgm_fi_dev_sm_clock", gpu.sm_clock_mhz, tags)
        status = snapshot.node
        self._set("factory_node_it_power_w", status.it_power_w, {"node": node})
        self._set("factory_node_cpu_utilization_pct", status.cpu_utilization_pct, {"node": node})
        self._set("factory_node_energy_kwh", status.energy_kwh, {"node": node})
        for job, energy_kwh in snapshot.job_energy_kwh.items():
            self._set("factory_job_energy_kwh", energy_kwh, {"node": node, "job": job})

    def _set(self, name: str, value: float | None, tags: dict[str, str]) -> None:
        if value is not None:
            self._gauges[name].set(float(value), tags=tags)
