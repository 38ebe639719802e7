"""Simulated GPUs: the GPUs a CPU node declares to Ray, for laptops, CI and demos.

A node declares them with `ray start --num-gpus 4`.

A simulated GPU is busy exactly while Ray has assigned it to a running worker: its utilisation is
the share of it the worker holds (100% for a whole GPU), and its power moves linearly between the
configured idle and busy power. Memory and temperature follow utilisation the same way. It has no
energy counter, so energy is integrated from power (in factory-clock time, so that a replayed day
uses a day's energy). Every reading says `source: simulated`.

A simulated GPU can be power-capped (`set_power_limit_w`, between half and all of its busy power):
its power then never exceeds the cap, and `throughput_share` models how much of its speed it keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from factory.errors import DeviceError
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.models import GpuReading

IDLE_TEMPERATURE_C = 35.0
BUSY_TEMPERATURE_C = 72.0
MIN_LIMIT_SHARE = 0.5     # the lowest cap, as a share of full power
THROUGHPUT_EXPONENT = 0.3  # throughput ~ (power share) ** this, under a cap (`throughput_share`)
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
        self.limits_w: dict[int, float] = {}  # GPUs capped below `busy_power_w`

    @classmethod
    def is_available(cls) -> bool:
        """Always: a simulation needs no hardware."""
        return True

    @property
    def gpu_count(self) -> int:
        """GPUs modelled."""
        return self._num_gpus

    def power_w(self, share: float, limit_w: float | None = None) -> float:
        """Power of a GPU of which `share` (0..1) is in use, never above its limit."""
        drawn = self.idle_power_w + (self.busy_power_w - self.idle_power_w) * share
        return drawn if limit_w is None else min(drawn, limit_w)

    def power_limit_range_w(self, index: int) -> tuple[float, float, float]:
        """(min, max, default): down to half the busy power (as data-centre GPUs allow), up to it."""
        self._check_index(index)
        return self.busy_power_w * MIN_LIMIT_SHARE, self.busy_power_w, self.busy_power_w

    def set_power_limit_w(self, index: int, watts: float | None) -> float:
        """Cap a modelled GPU: its power follows the cap, its throughput `throughput_share` of it."""
        low_w, high_w, default_w = self.power_limit_range_w(index)
        limit_w = default_w if watts is None else min(high_w, max(low_w, float(watts)))
        if limit_w >= high_w:
            self.limits_w.pop(index, None)
        else:
            self.limits_w[index] = limit_w
        return limit_w

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._num_gpus:
            raise DeviceError(f"no simulated GPU {index} (this node models {self._num_gpus})")

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
                power_w=self.power_w(share, self.limits_w.get(index)),
                temperature_c=IDLE_TEMPERATURE_C + (BUSY_TEMPERATURE_C - IDLE_TEMPERATURE_C) * share,
                power_limit_w=self.limits_w.get(index, self.busy_power_w),
            ))
        return readings


def throughput_share(limit_w: float, busy_power_w: float) -> float:
    """The share of its uncapped speed a GPU keeps under a power cap: (cap / full power) ** 0.3.

    Throughput falls less than power: at 70 % of full power a training step keeps about 90 % of its
    speed (DVFS lowers clocks, and with them voltage, so energy per step drops), the shape reported for
    data-centre GPUs under power capping. The exponent is a model, not a measurement of any one GPU.
    """
    return min(1.0, max(0.0, limit_w / busy_power_w)) ** THROUGHPUT_EXPONENT
