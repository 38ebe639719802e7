"""A bounded in-memory history of one GPU's samples, for plots and window averages.

Invariants:
  * Memory is fixed at creation: `capacity` samples of `SAMPLE_DTYPE` (33 bytes each; 3600
    samples, an hour at 1 s, hold 116 KiB per GPU). Appending beyond capacity overwrites the oldest.
  * Samples are kept in time order; a query returns copies, never views into the buffer.
"""

from __future__ import annotations

import numpy as np

from factory.telemetry.models import GpuReading

# Packed (no alignment padding): 8 + 4 * 4 + 8 + 1 bytes per sample.
SAMPLE_DTYPE = np.dtype([
    ("time_s", "<f8"),
    ("utilization_pct", "<f4"),
    ("memory_used_mib", "<f4"),
    ("power_w", "<f4"),
    ("temperature_c", "<f4"),
    ("energy_j", "<f8"),  # cumulative since the telemetry actor started
    ("healthy", "u1"),
])
SAMPLE_BYTES = SAMPLE_DTYPE.itemsize
FIELDS = SAMPLE_DTYPE.names


class GpuHistory:
    """A ring buffer of one GPU's samples."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._buffer = np.zeros(capacity, dtype=SAMPLE_DTYPE)
        self._next = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        """Samples kept at most."""
        return len(self._buffer)

    @property
    def nbytes(self) -> int:
        """Memory held by the samples (fixed at creation)."""
        return self._buffer.nbytes

    def __len__(self) -> int:
        return self._size

    def append(self, time_s: float, reading: GpuReading, energy_j: float) -> None:
        """Record one sample; NaN stands for a field the reading lacks."""
        row = self._buffer[self._next]
        row["time_s"] = time_s
        for name in ("utilization_pct", "memory_used_mib", "power_w", "temperature_c"):
            value = getattr(reading, name)
            row[name] = np.nan if value is None else value
        row["energy_j"] = energy_j
        row["healthy"] = reading.healthy
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def _ordered(self) -> np.ndarray:
        if self._size < self.capacity:
            return self._buffer[: self._size]
        return np.concatenate((self._buffer[self._next:], self._buffer[: self._next]))

    def _window(self, since_s: float | None) -> np.ndarray:
        """The samples at or after `since_s` (all when None), oldest first."""
        rows = self._ordered()
        return rows if since_s is None else rows[rows["time_s"] >= since_s]

    def since(self, since_s: float | None = None) -> dict[str, list[float]]:
        """Columns of the samples at or after `since_s` (all when None), oldest first."""
        rows = self._window(since_s)
        return {name: rows[name].astype(float).tolist() for name in FIELDS}

    def mean(self, since_s: float | None = None) -> dict[str, float | None]:
        """Averages of utilisation, memory, power and temperature over the window (healthy samples)."""
        rows = self._window(since_s)
        rows = rows[rows["healthy"] == 1]
        result: dict[str, float | None] = {}
        for name in ("utilization_pct", "memory_used_mib", "power_w", "temperature_c"):
            values = rows[name][~np.isnan(rows[name])]
            result[name] = float(values.mean()) if len(values) else None
        return result
