"""The interface every GPU telemetry source implements.

Invariants:
  * `read()` returns one reading per GPU, in index order, and never raises because one GPU
    failed: that GPU's reading has `healthy=False` and the error, and the others are read.
  * Backends read devices only; attribution to jobs and energy accounting happen above them.
  * The one thing a backend may change on a device is its power limit (`set_power_limit_w`), always
    within the range the device accepts; `None` restores the device's default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from factory.errors import DeviceNotSupportedError
from factory.telemetry.models import GpuReading, Source


class GpuBackend(ABC):
    """A source of GPU readings on this node."""

    source: ClassVar[Source]

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool:
        """Whether this source can be used on this node right now (cheap; never raises)."""

    @property
    @abstractmethod
    def gpu_count(self) -> int:
        """GPUs this backend reads."""

    @abstractmethod
    def read(self) -> list[GpuReading]:
        """One reading per GPU, index order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the device library."""

    def power_limit_range_w(self, index: int) -> tuple[float, float, float]:
        """(min, max, default) power limit GPU `index` accepts, in W.

        Raises:
            DeviceNotSupportedError: this source cannot cap power.
        """
        raise DeviceNotSupportedError(f"{self.source} GPUs cannot be power-capped here")

    def set_power_limit_w(self, index: int, watts: float | None) -> float:
        """Cap GPU `index` at `watts`, clamped into its range (None: its default); return the limit set.

        Raises:
            DeviceNotSupportedError: this source cannot cap power.
            DeviceError: the device refused (e.g. not permitted without root).
        """
        raise DeviceNotSupportedError(f"{self.source} GPUs cannot be power-capped here")
