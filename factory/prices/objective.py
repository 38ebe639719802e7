"""What the scheduler minimises: energy cost, carbon, or cost with carbon priced in.

The policies plan on one series per MWh ("the price" as they see it). An objective turns the price
and carbon series into that series, so one policy serves every objective and keeps the same deadline
guarantees:

  cost         -- the price, per MWh.
  carbon       -- the carbon intensity: g/kWh is numerically kg/MWh, so the policy minimises kgCO2.
  cost+carbon  -- the price plus the carbon priced at `carbon_price_per_tonne`:
                  price + carbon_price_per_tonne * (g/kWh) / 1000 per MWh.

Invariants:
  * The signal lies on the price series' grid: the carbon sampled at each price interval's midpoint
    (its edge values beyond its ends), as the offline optimum samples it. Carbon finer than the prices
    is thereby planned on (and bounded by the LP) at the price intervals' resolution.
  * A carbon objective without a carbon series is an error naming what to set, never a silent cost.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from factory.config import SchedulingObjective as Objective
from factory.errors import ConfigError
from factory.prices.series import IntervalSeries

OBJECTIVES: tuple[str, ...] = get_args(Objective)
KG_PER_TONNE = 1000.0


class ObjectiveError(ConfigError):
    """An objective that cannot be planned on with the series at hand (a setting to fix: exit code 2)."""


def weigh(objective: Objective, cost: float | None, carbon: float | None,
          carbon_price_per_tonne: float | None = None) -> float | None:
    """What `objective` counts of a cost and a carbon; None where what it needs is missing.

    The same weighing serves totals (a run's cost and kgCO2) and rates (an interval's price per MWh and
    g/kWh, which is kg/MWh): cost; carbon; or cost + carbon_price_per_tonne x carbon / 1000.
    """
    if objective == "cost":
        return cost
    if carbon is None:
        return None
    if objective == "carbon":
        return carbon
    if cost is None:
        return None
    return cost + _carbon_price(objective, carbon_price_per_tonne) * carbon / KG_PER_TONNE


def signal_series(objective: Objective, price: IntervalSeries, carbon: IntervalSeries | None,
                  carbon_price_per_tonne: float | None = None) -> IntervalSeries:
    """The series the policy plans on for `objective` (see the module docstring)."""
    if objective == "cost":
        return price
    if carbon is None:
        raise ObjectiveError(f"objective '{objective}' needs a carbon series: give the price trace a carbon "
                             "column (--carbon-column) or a carbon trace of its own (--carbon FILE, or "
                             "prices.carbon in the config)")
    midpoints = price.starts() + price.interval_s / 2
    intensity = carbon.sample(midpoints)
    # Beyond the carbon series, its edge values (as charging carries them): a gap never looks clean.
    before, after = midpoints < carbon.start_s, midpoints >= carbon.end_s
    intensity[before], intensity[after] = carbon.values[0], carbon.values[-1]
    if objective == "carbon":
        return IntervalSeries(price.start_s, price.interval_s, intensity)
    rate = _carbon_price(objective, carbon_price_per_tonne) / KG_PER_TONNE
    return IntervalSeries(price.start_s, price.interval_s, price.values + rate * intensity)


def _carbon_price(objective: Objective, carbon_price_per_tonne: float | None) -> float:
    price = carbon_price_per_tonne
    if price is None or not np.isfinite(price) or price < 0:
        raise ObjectiveError(f"objective '{objective}' needs carbon_price_per_tonne: a finite price per "
                             "tonne of CO2, 0 or more (e.g. 100)")
    return float(price)
