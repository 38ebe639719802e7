"""Time-of-use tariffs: a weekday/hour price schedule in YAML, for sites on a fixed tariff.

A tariff is known in advance for every hour, so its forecast is exact (no band). The format is
documented in the built-in example, `factory/prices/tariffs/illustrative.yaml`.

Invariants:
  * A tariff covers every 15-minute slot of every weekday of every month, or it does not load: the
    error names the first uncovered slot. The first matching period wins.
  * Periods either all state `carbon_g_per_kwh` or none does.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from factory.errors import PriceDataError
from factory.prices.provider import PriceProvider
from factory.prices.series import IntervalSeries
from factory.yaml_text import YamlTextError, parse_yaml

BUILTIN_TARIFF = Path(__file__).parent / "tariffs" / "illustrative.yaml"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLOT_MIN = 15
SLOTS_PER_DAY = 24 * 60 // SLOT_MIN


class TariffPeriod(BaseModel):
    """One line of a tariff: a price (and carbon) for some months, days and hours."""

    model_config = ConfigDict(extra="forbid")

    name: str
    months: list[int] = Field(default_factory=lambda: list(range(1, 13)))
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(DAYS))
    hours: str = Field("00:00-24:00", description="'HH:MM-HH:MM', local, end exclusive.")
    price_per_mwh: float
    carbon_g_per_kwh: float | None = None

    @field_validator("months")
    @classmethod
    def _real_months(cls, value: list[int]) -> list[int]:
        if not value or any(month < 1 or month > 12 for month in value):
            raise ValueError("months are 1..12")
        return value

    @field_validator("hours")
    @classmethod
    def _hour_range(cls, value: str) -> str:
        _slots(value)
        return value

    def slots(self) -> range:
        """The 15-minute slots of a day this period covers."""
        return _slots(self.hours)


class Tariff(BaseModel):
    """A whole tariff file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    timezone: str = "UTC"
    currency: str = "USD"
    periods: list[TariffPeriod] = Field(min_length=1)


def _slots(hours: str) -> range:
    try:
        start, end = (part.strip() for part in hours.split("-"))
        first, stop = (_minute_of_day(start), _minute_of_day(end))
    except ValueError:
        raise ValueError(f"'{hours}' is not 'HH:MM-HH:MM'") from None
    if first % SLOT_MIN or stop % SLOT_MIN:
        raise ValueError(f"'{hours}': minutes must be on a {SLOT_MIN}-minute grid")
    if not 0 <= first < stop <= 24 * 60:
        raise ValueError(f"'{hours}': the start must be before the end, within 00:00-24:00")
    return range(first // SLOT_MIN, stop // SLOT_MIN)


def _whole_hour_offsets(timezone: str) -> bool:
    """Whether the zone's UTC offsets (over recent years, both seasons) are whole hours."""
    days = pd.date_range("2000-01-01", "2040-01-01", freq="7D", tz="UTC").tz_convert(timezone)
    offsets_s = {int(stamp.utcoffset().total_seconds()) for stamp in days}
    return all(offset % 3600 == 0 for offset in offsets_s)


def _minute_of_day(text: str) -> int:
    hour, minute = text.split(":")
    return int(hour) * 60 + int(minute)


def load_tariff(path: Path | None) -> Tariff:
    """Read and validate a tariff YAML file (None: the built-in illustrative tariff)."""
    path = path or BUILTIN_TARIFF
    try:
        raw = parse_yaml(Path(path).read_text())
    except OSError as exc:
        raise PriceDataError(f"cannot read tariff {path}: {exc.strerror or exc}; "
                             "set prices.tariff_path") from None
    except YamlTextError as exc:
        raise PriceDataError(f"tariff {path}: invalid YAML{exc.where}: {exc.problem}") from None
    try:
        tariff = Tariff.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise PriceDataError(
            f"tariff {path}: field '{where}': {error['msg'].removeprefix('Value error, ')}"
        ) from None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tariff.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PriceDataError(f"tariff {path}: unknown timezone '{tariff.timezone}'") from None
    with_carbon = {period.carbon_g_per_kwh is not None for period in tariff.periods}
    if len(with_carbon) > 1:
        raise PriceDataError(f"tariff {path}: give carbon_g_per_kwh in every period or in none")
    return tariff


class TariffProvider(PriceProvider):
    """Prices (and carbon) from a tariff, for any window, on its own grid (15 or 60 minutes)."""

    kind = "tariff"

    def __init__(self, tariff: Tariff, path: Path | None = None) -> None:
        self.tariff = tariff
        self._path = path or BUILTIN_TARIFF
        price = np.full((12, 7, SLOTS_PER_DAY), np.nan)
        carbon = np.full_like(price, np.nan)
        for period in reversed(tariff.periods):  # the first match wins, so it is written last
            months = [month - 1 for month in period.months]
            days = [DAYS.index(day) for day in period.days]
            cells = np.ix_(months, days, list(period.slots()))
            price[cells] = period.price_per_mwh
            if period.carbon_g_per_kwh is not None:
                carbon[cells] = period.carbon_g_per_kwh
        uncovered = np.argwhere(np.isnan(price))
        if uncovered.size:
            month, day, slot = (int(v) for v in uncovered[0])
            raise PriceDataError(
                f"tariff {self._path}: no period covers {DAYS[day]} {slot * SLOT_MIN // 60:02d}:"
                f"{slot * SLOT_MIN % 60:02d} in month {month + 1}; add a period (or a catch-all last)"
            )
        self._price = price
        self._carbon = None if np.isnan(carbon).all() else carbon
        boundaries = {minute for period in tariff.periods for minute in
                      (period.slots().start * SLOT_MIN, period.slots().stop * SLOT_MIN)}
        # Hourly intervals start on UTC hours; they fit the tariff only where its boundaries are on
        # local whole hours and local hours are UTC hours (no half-hour zone, e.g. Asia/Kolkata).
        whole_hours = all(minute % 60 == 0 for minute in boundaries) and _whole_hour_offsets(tariff.timezone)
        self.interval_s = 3600.0 if whole_hours else SLOT_MIN * 60.0

    @property
    def description(self) -> str:  # noqa: D102
        return f"tariff '{self.tariff.name}' ({self._path.name}, {self.tariff.timezone})"

    def price(self, start_s: float, end_s: float) -> IntervalSeries | None:  # noqa: D102
        return self._series(self._price, start_s, end_s)

    def carbon(self, start_s: float, end_s: float) -> IntervalSeries | None:  # noqa: D102
        return None if self._carbon is None else self._series(self._carbon, start_s, end_s)

    def known_until_s(self, now_s: float) -> float:  # noqa: D102
        return math.inf

    def span(self) -> tuple[float, float] | None:  # noqa: D102
        return (-math.inf, math.inf)

    def _series(self, table: np.ndarray, start_s: float, end_s: float) -> IntervalSeries:
        first_s = math.floor(start_s / self.interval_s) * self.interval_s
        count = max(1, math.ceil((end_s - first_s) / self.interval_s))
        return IntervalSeries(float(first_s), self.interval_s, table[self._cells(first_s, count)])

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one provider per actor; price and carbon share it
    def _cells(self, first_s: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(month, weekday, slot) indices of the local time of each interval start."""
        starts = first_s + self.interval_s * np.arange(count)
        local = pd.DatetimeIndex(pd.to_datetime(starts, unit="s", utc=True)).tz_convert(self.tariff.timezone)
        slot = (local.hour.to_numpy() * 60 + local.minute.to_numpy()) // SLOT_MIN
        return local.month.to_numpy() - 1, local.day_of_week.to_numpy(), slot
