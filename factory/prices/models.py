"""What the grid price feed answers: typed, JSON-ready, with units and currency in every answer.

All times are factory time (Unix seconds, UTC); prices are in `currency` per MWh, carbon in
gCO2/kWh.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PriceNow(BaseModel):
    """The price and carbon intensity at one instant, and how fresh they are."""

    time_s: float
    interval_start_s: float = Field(description="Start of the price interval containing time_s.")
    interval_s: float
    price_per_mwh: float
    currency: str
    unit: str = Field(description="e.g. 'USD/MWh'.")
    carbon_g_per_kwh: float | None
    source: str = Field(description="The feed, for people: tariff, trace files or URL.")
    stale: bool = Field(description="True when the value is the last known one, not a current one.")
    age_s: float | None = Field(
        description="Seconds since the last successful poll (polled feeds), else factory seconds "
        "past the end of the series (0 while it covers now).")
    stale_reason: str | None = None


class ForecastPoint(BaseModel):
    """One interval of a forecast."""

    start_s: float
    price_per_mwh: float | None = Field(description="Known price, else the estimate (None: none).")
    low_per_mwh: float | None
    high_per_mwh: float | None
    known: bool = Field(description="Published by the market (or a tariff), not estimated.")
    carbon_g_per_kwh: float | None = None


class Forecast(BaseModel):
    """Prices for the next hours: known up to `known_until_s`, estimated beyond."""

    time_s: float
    known_until_s: float | None = Field(description="Horizon of published prices (None: all known).")
    interval_s: float
    currency: str
    unit: str
    method: str
    points: list[ForecastPoint]


class HistoryPoint(BaseModel):
    """One past interval."""

    start_s: float
    price_per_mwh: float
    carbon_g_per_kwh: float | None = None


class PriceHistory(BaseModel):
    """Past intervals over a window (never beyond now)."""

    start_s: float
    end_s: float
    interval_s: float
    currency: str
    unit: str
    points: list[HistoryPoint]


class ConsumptionInterval(BaseModel):
    """Energy used over [start_s, end_s), spread evenly over it."""

    start_s: float
    end_s: float
    energy_kwh: float = Field(ge=0)


class EnergyCost(BaseModel):
    """The energy-weighted cost and carbon of a consumption profile."""

    energy_kwh: float
    cost: float
    currency: str
    average_price_per_mwh: float | None
    carbon_kg: float | None
    average_carbon_g_per_kwh: float | None
    uncovered_kwh: float = Field(
        description="Energy outside the known series, priced at the nearest known interval.")


class FeedStatus(BaseModel):
    """The feed's health, for operators."""

    kind: str
    source: str
    stale: bool
    age_s: float | None
    stale_reason: str | None
    last_error: str | None
    consecutive_failures: int
    next_poll_in_s: float | None
    series_start_s: float | None
    series_end_s: float | None
    interval_s: float | None
    currency: str
    carbon_source: str | None
    notes: list[str]
