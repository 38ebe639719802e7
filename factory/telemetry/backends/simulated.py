"""Simulated GPUs: the GPUs a CPU node declares to Ray, for laptops, CI and demos.

A node declares them with `ray start --num-gpus 4`.

A simulated GPU is busy exactly while Ray has assigned it to a running worker: its utilisation is
the share of it the worker holds (100% for a whole GPU), and its power moves linearly between the
configured idle and busy power. Memory and temperature follow utilisation the same way. It has no
energy counter, so energy is integrated from power (in factory-clock time, so that a replayed day
uses a day's energy). Every reading says `source: simulated`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.models import GpuReading

IDLE_TEMPERATURE_C = 35.0
BUSY_TEMPERATURE_C = 72.0
BUSY_MEMORY_SHARE = 0.8  # a training job fills most of a GPU's memory

# Which GPU index is busy, and how much of it (0..1): given by whoever knows Ray's assignment.
UsageSource = Callable[[], Mapping[int, float]]


class SimulatedGpuBackend(GpuBackend):
    """`num_gpus` modelled GPUs whose load follows `usage()`."""

    source = "simulated"

    def __init__(self, num_gpus: int, usage: UsageSource, idle_power_w: float = 75.0,
                 busy_power_w: float = 700.0, memory_total_mib: float = 81920.0) -> None:
        if busy_power_w < idle_power_w:
            raise ValueError("busy_power_w must be at least idle_power_w")
        self._num_gpus = num_gpus
        self._usage = usage
        self.idle_power_w = idle_power_w
        self.busy_power_w = busy_power_w
        self.memory_total_mib = memory_total_mib

    @classmethod
    def is_available(cls) -> bool:
        """Always: a simulation needs no hardware."""
        return True

    @property
    def gpu_count(self) -> int:
        """GPUs modelled."""
        return self._num_gpus

    def power_w(self, share: float) -> float:
        """Power of a GPU of which `share` (0..1) is in use."""
        return self.idle_power_w + (self.busy_power_w - self.idle_power_w) * share

    def read(self) -> list[GpuReading]:
        """One reading per modelled GPU, from the current assignment."""
        usage = self._usage()
        readings = []
        for index in range(self._num_gpus):
            share = min(1.0, max(0.0, usage.get(index, 0.0)))
            readings.append(GpuReading(
                index=index,
                uuid=f"SIM-GPU-{index}",
                name="Simulated GPU",
                source="simulated",
                utilization_pct=100.0 * share,
                memory_used_mib=self.memory_total_mib * BUSY_MEMORY_SHARE * share,
                memory_total_mib=self.memory_total_mib,
                power_w=self.power_w(share),
                temperature_c=IDLE_TEMPERATURE_C + (BUSY_TEMPERATURE_C - IDLE_TEMPERATURE_C) * share,
                power_limit_w=self.busy_power_w,
            ))
        return readings
