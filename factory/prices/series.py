"""`IntervalSeries`: values on a uniform grid of time intervals (a price or carbon series).

Nomenclature:
  interval k  -- [start_s + k * interval_s, start_s + (k + 1) * interval_s), factory time (Unix s).
  end_s       -- the end of the last interval: the series covers [start_s, end_s).

Invariants:
  * `values` is a 1-D float64 array with no NaN: loaders fill or reject gaps before building one,
    so a lookup never meets a hole and never shifts the series.
  * Lookups are O(1) index arithmetic; `window` returns a view, not a copy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

# The largest price magnitude accepted from any source: real markets cap near +-10,000 per MWh, so a
# value beyond this is a unit or parsing mistake (cents, per kWh misread, an exponent), refused.
PRICE_LIMIT_PER_MWH = 100_000.0


@dataclass(frozen=True)
class IntervalSeries:
    """A uniform series of intervals starting at `start_s`, each `interval_s` long."""

    start_s: float
    interval_s: float
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if self.values.ndim != 1:
            raise ValueError("values must be one-dimensional")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end_s(self) -> float:
        """The end of the last interval."""
        return self.start_s + len(self.values) * self.interval_s

    def index_at(self, time_s: float) -> int | None:
        """The interval that contains `time_s`, or None outside the series."""
        if time_s < self.start_s or time_s >= self.end_s:
            return None
        return int((time_s - self.start_s) // self.interval_s)

    def value_at(self, time_s: float) -> float | None:
        """The value of the interval containing `time_s`, or None outside the series."""
        index = self.index_at(time_s)
        return None if index is None else float(self.values[index])

    def sample(self, times_s: np.ndarray) -> np.ndarray:
        """The value at each of `times_s`; NaN where a time lies outside the series."""
        index = np.floor((np.asarray(times_s, dtype=float) - self.start_s) / self.interval_s)
        inside = (index >= 0) & (index < len(self.values))
        out = np.full(index.shape, np.nan)
        out[inside] = self.values[index[inside].astype(np.int64)]
        return out

    def starts(self) -> np.ndarray:
        """The start time of every interval."""
        return self.start_s + self.interval_s * np.arange(len(self.values), dtype=float)

    def window(self, start_s: float, end_s: float) -> IntervalSeries:
        """The intervals that overlap [start_s, end_s) (a view; possibly empty)."""
        first = max(0, math.floor((start_s - self.start_s) / self.interval_s))
        stop = min(len(self.values), math.ceil((end_s - self.start_s) / self.interval_s))
        stop = max(first, stop)
        return IntervalSeries(self.start_s + first * self.interval_s, self.interval_s,
                              self.values[first:stop])

    def through(self, time_s: float) -> IntervalSeries:
        """The intervals that start at or before `time_s` (what is published when that is the horizon)."""
        if math.isinf(time_s):
            return self if time_s > 0 else self.window(self.start_s, self.start_s)
        stop = min(len(self.values), max(0, math.floor((time_s - self.start_s) / self.interval_s) + 1))
        return IntervalSeries(self.start_s, self.interval_s, self.values[:stop])


def utc_label(time_s: float) -> str:
    """'2024-07-01 13:00 UTC' (seconds shown only when not zero) for messages; never raises.

    The same text as `datetime.fromtimestamp(time_s, UTC).strftime(...)` (its rounding to microseconds
    included), a fifth of the cost: a long queue's wait reasons name a latest safe start for every job, and
    `strftime` runs once per minute here, not once per label.
    """
    try:
        fraction, whole_s = math.modf(float(time_s))
        microseconds = round(fraction * 1e6)  # as `datetime.fromtimestamp` rounds (half to even)
        whole_s += 1 if microseconds >= 1_000_000 else -1 if microseconds < 0 else 0
        minute, second = divmod(int(whole_s), 60)
        prefix = _minute_label(minute)
    except (ValueError, OverflowError, OSError):  # beyond what datetime represents (or not a number)
        return f"{float(time_s):.0f} (Unix seconds)"
    return f"{prefix}:{second:02d} UTC" if second else f"{prefix} UTC"


@functools.lru_cache(maxsize=65536)
def _minute_label(minute: int) -> str:
    """'2024-07-01 13:00' for the minute that starts `minute` x 60 s after the epoch."""
    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%d %H:%M")
