"""The forecast: known prices up to the horizon, and beyond it a same-interval-of-day estimate.

Method ("same time on recent days"): an interval beyond the horizon is estimated by the median of
the same time of day on the `days` most recent days whose value is known; its band is the lowest
and highest of those values. Known intervals have no band (low = high = value). Intervals with no
known same-time day (a series shorter than a day) have no estimate (NaN).

It is deliberately simple, cheap (a few array operations for any number of intervals) and honest:
it only reads values the caller passes as known, so it cannot leak the future. Daily shape is what
drives flexible training; a scheduler that wants more can use the band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.prices.series import IntervalSeries

DAY_S = 86400.0


@dataclass(frozen=True)
class ForecastArrays:
    """Per interval starting at `starts_s`: value, band, and whether the value is known."""

    starts_s: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    known: np.ndarray


def forecast(known: IntervalSeries, starts_s: np.ndarray, days: int) -> ForecastArrays:
    """Values at `starts_s` from `known` where it has them, else the same-time-of-day estimate."""
    starts_s = np.asarray(starts_s, dtype=float)
    value = known.sample(starts_s)
    is_known = ~np.isnan(value)
    low, high = value.copy(), value.copy()
    todo = np.flatnonzero(~is_known & (starts_s >= known.end_s))
    if todo.size and len(known):
        times = starts_s[todo]
        # The most recent day back whose same time lies inside the known series.
        first_back = np.maximum(1, np.ceil((times - known.end_s + known.interval_s) / DAY_S))
        back = first_back[:, None] + np.arange(days)[None, :]
        samples = known.sample(times[:, None] - back * DAY_S)
        has_any = ~np.isnan(samples).all(axis=1)
        rows = todo[has_any]
        samples = samples[has_any]
        value[rows] = np.nanmedian(samples, axis=1)
        low[rows] = np.nanmin(samples, axis=1)
        high[rows] = np.nanmax(samples, axis=1)
    return ForecastArrays(starts_s, value, low, high, is_known)
