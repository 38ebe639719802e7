"""The interface every GPU telemetry source implements.

Invariants:
  * `read()` returns one reading per GPU, in index order, and never raises because one GPU
    failed: that GPU's reading has `healthy=False` and the error, and the others are read.
  * Backends read devices only; attribution to jobs and energy accounting happen above them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

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
