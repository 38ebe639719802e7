"""Choosing a node's GPU backend.

`auto`: NVML if it initialises and sees a GPU; else simulated GPUs if the node declares `GPU`
resources to Ray (or `simulated_gpus_per_node` is set); else none (host only).
A backend the config forces but the node cannot offer (say `nvml` on a CPU node) leaves that node
host-only and says why, rather than failing the node's telemetry altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from factory.config import TelemetryConfig
from factory.errors import TelemetryError
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.backends.nvml import NvmlBackend
from factory.telemetry.backends.simulated import SimulatedGpuBackend, UsageSource


@dataclass
class Selection:
    """The chosen backend (None: host only) and, where the wanted one was not possible, why."""

    backend: GpuBackend | None
    error: str | None = None


def select_backend(config: TelemetryConfig, ray_gpus: float, usage: UsageSource,
                   nvml_available: Callable[[], bool] = NvmlBackend.is_available) -> Selection:
    """The GPU backend for a node that declares `ray_gpus` GPUs to Ray."""
    simulated_count = (config.simulated_gpus_per_node if config.simulated_gpus_per_node is not None
                       else int(ray_gpus))

    def simulated() -> Selection:
        return Selection(SimulatedGpuBackend(
            simulated_count, usage, idle_power_w=config.simulated_idle_power_w,
            busy_power_w=config.simulated_busy_power_w,
            memory_total_mib=config.simulated_memory_total_mib,
        ))

    if config.backend == "host":
        return Selection(None)
    if config.backend == "simulated":
        return simulated()
    if nvml_available():
        try:
            return Selection(NvmlBackend())
        except TelemetryError as exc:
            return Selection(None, f"NVML failed to start: {exc}")
    if config.backend == "nvml":
        return Selection(None, "telemetry.backend is 'nvml' but NVML is not available on this node "
                               "(no NVIDIA driver or GPU); sampling the host only")
    if simulated_count > 0:
        return simulated()
    return Selection(None)
