"""The energy-weighted cost (and carbon) of a consumption profile, exact on the price intervals.

A profile is a list of intervals [start_s, end_s) with the energy used in each (kWh), spread evenly
over its interval. The cost is the integral of power x price: because a price series is piecewise
constant, that is the energy in each overlap of a profile interval and a price interval times that
price, computed through the running integral of the price (piecewise linear, so interpolation at
the profile's ends is exact). A profile interval of zero length is priced at its instant.

Energy outside the series is priced at the nearest known interval (the last price is carried
forward, as the live price is) and reported as `uncovered_kwh`, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.prices.series import IntervalSeries

KWH_PER_MWH = 1000.0


@dataclass(frozen=True)
class ProfileCost:
    """Totals over a profile: energy, cost (currency), carbon (g), energy outside the series."""

    energy_kwh: float
    cost: float
    carbon_g: float | None
    uncovered_kwh: float


def weighted_sum(series: IntervalSeries, start_s: np.ndarray, end_s: np.ndarray,
                 energy_kwh: np.ndarray) -> np.ndarray:
    """Per profile interval: its energy times the time-average of `series` over the interval."""
    duration_s = end_s - start_s
    integral = _running_integral(series, end_s) - _running_integral(series, start_s)
    instant = series.sample(np.clip(start_s, series.start_s, series.end_s - series.interval_s / 2))
    mean = np.divide(integral, duration_s, out=instant.copy(), where=duration_s > 0)
    return energy_kwh * mean


def uncovered_energy(series: IntervalSeries, start_s: np.ndarray, end_s: np.ndarray,
                     energy_kwh: np.ndarray) -> float:
    """The energy that falls outside [series.start_s, series.end_s)."""
    duration_s = end_s - start_s
    inside_s = np.clip(np.minimum(end_s, series.end_s) - np.maximum(start_s, series.start_s), 0, None)
    share_inside = np.divide(inside_s, duration_s, out=((start_s >= series.start_s) &
                             (start_s < series.end_s)).astype(float), where=duration_s > 0)
    return float(np.sum(energy_kwh * (1.0 - share_inside)))


def profile_cost(price: IntervalSeries, carbon: IntervalSeries | None, start_s: np.ndarray,
                 end_s: np.ndarray, energy_kwh: np.ndarray) -> ProfileCost:
    """Cost (price per MWh / 1000 per kWh) and carbon (g/kWh x kWh) of a profile."""
    cost = float(np.sum(weighted_sum(price, start_s, end_s, energy_kwh))) / KWH_PER_MWH
    carbon_g = None if carbon is None else float(np.sum(weighted_sum(carbon, start_s, end_s, energy_kwh)))
    return ProfileCost(float(np.sum(energy_kwh)), cost, carbon_g,
                       uncovered_energy(price, start_s, end_s, energy_kwh))


def _running_integral(series: IntervalSeries, times_s: np.ndarray) -> np.ndarray:
    """∫ series dt from series.start_s to each time, the edge values carried beyond the ends."""
    knots = np.concatenate([[0.0], np.cumsum(series.values) * series.interval_s])
    offset = np.clip(times_s, series.start_s, series.end_s) - series.start_s
    inside = np.interp(offset, series.interval_s * np.arange(len(knots)), knots)
    before = np.minimum(times_s - series.start_s, 0.0) * series.values[0]
    after = np.maximum(times_s - series.end_s, 0.0) * series.values[-1]
    return inside + before + after
