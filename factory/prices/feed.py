"""`PriceFeed`: what the GridPriceActor answers, computed from a provider without Ray.

Nomenclature:
  visible series -- the provider's intervals cut at `known_until_s(now)`: all anyone outside this
                    module ever sees, so the scheduler cannot use prices a real operator would
                    not have yet.
  stale          -- the answer is the last known value, not a current one: a polled feed whose last
                    poll failed (or that never succeeded), or a series that ended before now.

Invariants:
  * A failing or stalled provider never raises out of `poll_if_due`: the feed keeps the last good
    series, counts the failure, and retries after a delay that doubles up to `max_backoff_s`.
  * Every answer states its currency and unit; prices are per MWh, carbon is gCO2/kWh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from factory.errors import PriceError
from factory.price_config import PricesConfig
from factory.prices.cost import KWH_PER_MWH, profile_cost
from factory.prices.forecast import DAY_S, ForecastArrays, forecast
from factory.prices.models import (
    ConsumptionInterval,
    EnergyCost,
    FeedStatus,
    Forecast,
    ForecastPoint,
    HistoryPoint,
    PriceHistory,
    PriceNow,
)
from factory.prices.poll import Polled, PollSchedule
from factory.prices.provider import PriceProvider
from factory.prices.series import IntervalSeries, utc_label

FORECAST_METHOD = ("known prices up to the market's horizon; beyond it the median of the same time "
                   "of day on the {days} most recent known days, band = their min..max")


class PriceFeed(Polled):
    """A price provider (and optional carbon provider) with staleness, retries and the horizon rule."""

    def __init__(self, provider: PriceProvider, config: PricesConfig,
                 carbon_provider: PriceProvider | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.carbon_provider = carbon_provider
        self.currency = config.currency
        self.unit = f"{config.currency}/MWh"
        self.forecast_days = config.forecast_days
        self.schedule = PollSchedule(config.http.max_backoff_s, monotonic)

    # -- polling -------------------------------------------------------------------------------

    @property
    def polled(self) -> bool:
        """Whether the provider fetches data (an HTTP feed) rather than holding it."""
        return self.provider.poll_interval_s is not None

    def poll_if_due(self) -> bool | None:
        """Poll the provider if its time has come: True on success, False on failure, None if not due."""
        interval_s = self.provider.poll_interval_s
        if interval_s is None or not self.schedule.due():
            return None
        try:
            self.provider.refresh()
        except Exception as exc:  # noqa: BLE001 - a failing feed must never stop the actor
            # Only the provider's own errors are known to be free of credentials.
            why = str(exc) if isinstance(exc, PriceError) else \
                f"{self.provider.description}: unexpected {type(exc).__name__} while polling"
            self.schedule.failed(why, interval_s)
            return False
        self.schedule.succeeded(interval_s)
        return True

    def mark_restored(self) -> None:
        """Data came from the store after a restart: stale until the first successful poll."""
        restored = "restored from the store after a restart; not polled yet"
        self.schedule.last_error = self.last_error or restored

    # -- answers -------------------------------------------------------------------------------

    def price(self, now_s: float) -> PriceNow:
        """The price and carbon now; the last known price (stale) if the series ended."""
        span = self._span_or_raise(now_s)
        at_s = min(now_s, span[1] - 1e-6)
        series = self._visible_price(now_s, at_s, at_s + 1e-6)
        index = series.index_at(at_s)
        if index is None:  # a poll replaced the series between the two reads
            raise PriceError(f"{self.provider.description} changed while answering; ask again")
        stale, age_s, reason = self._staleness(now_s, span)
        return PriceNow(
            time_s=now_s, interval_start_s=series.start_s + index * series.interval_s,
            interval_s=series.interval_s, price_per_mwh=float(series.values[index]),
            currency=self.currency, unit=self.unit, carbon_g_per_kwh=self._carbon_at(now_s, at_s),
            source=self.provider.description, stale=stale, age_s=age_s, stale_reason=reason,
        )

    def forecast_arrays(
        self, now_s: float, hours: float
    ) -> tuple[ForecastArrays, ForecastArrays | None, float]:
        """Price (and carbon) forecast arrays from the interval containing now; and the horizon."""
        if hours <= 0:
            raise PriceError(f"hours must be > 0, got {hours:g}")
        self._span_or_raise(now_s)
        known_until_s = self.provider.known_until_s(now_s)
        # Estimates beyond the horizon read the past days; a source that knows everything needs none.
        lookback_s = 0.0 if math.isinf(known_until_s) else \
            (self.forecast_days + math.ceil(hours / 24) + 2) * DAY_S
        known = self._visible_price(now_s, now_s - lookback_s, now_s + hours * 3600.0)
        first_s = known.start_s + math.floor((now_s - known.start_s) / known.interval_s) * known.interval_s
        count = max(1, math.ceil((now_s + hours * 3600.0 - first_s) / known.interval_s))
        starts_s = first_s + known.interval_s * np.arange(count)
        prices = forecast(known, starts_s, self.forecast_days)
        carbon = self._carbon_series(now_s, now_s - lookback_s, now_s + hours * 3600.0)
        carbon_arrays = None if carbon is None else forecast(carbon, starts_s, self.forecast_days)
        return prices, carbon_arrays, known_until_s

    def forecast(self, now_s: float, hours: float = 24.0) -> Forecast:
        """Known prices up to the horizon, estimates with a band beyond it, for the next `hours`."""
        prices, carbon, known_until_s = self.forecast_arrays(now_s, hours)
        carbon_values = carbon.value if carbon is not None else None
        points = [
            ForecastPoint(
                start_s=float(prices.starts_s[i]), price_per_mwh=_finite(prices.value[i]),
                low_per_mwh=_finite(prices.low[i]), high_per_mwh=_finite(prices.high[i]),
                known=bool(prices.known[i]),
                carbon_g_per_kwh=None if carbon_values is None else _finite(carbon_values[i]),
            )
            for i in range(len(prices.starts_s))
        ]
        interval_s = float(prices.starts_s[1] - prices.starts_s[0]) if len(points) > 1 else \
            self._visible_price(now_s, now_s, now_s + 1).interval_s
        return Forecast(
            time_s=now_s, known_until_s=None if math.isinf(known_until_s) else known_until_s,
            interval_s=interval_s, currency=self.currency, unit=self.unit,
            method=FORECAST_METHOD.format(days=self.forecast_days), points=points,
        )

    def history(self, start_s: float, end_s: float, now_s: float) -> PriceHistory:
        """Past intervals overlapping [start_s, min(end_s, now)), with carbon where known."""
        end_s = min(end_s, now_s)
        if start_s >= end_s:
            raise PriceError(f"the history window is empty: start {utc_label(start_s)} is not before "
                             f"end {utc_label(end_s)} (the end is at most now)")
        self._span_or_raise(now_s)
        series = self._visible_price(now_s, start_s, end_s)
        starts_s = series.starts()
        carbon = self._carbon_series(now_s, start_s, end_s)
        carbon_values = carbon.sample(starts_s) if carbon is not None else np.full(len(starts_s), np.nan)
        points = [HistoryPoint(start_s=float(t), price_per_mwh=float(p), carbon_g_per_kwh=_finite(c))
                  for t, p, c in zip(starts_s, series.values, carbon_values, strict=True)]
        return PriceHistory(start_s=start_s, end_s=end_s, interval_s=series.interval_s,
                            currency=self.currency, unit=self.unit, points=points)

    def cost(self, profile: Sequence[ConsumptionInterval], now_s: float) -> EnergyCost:
        """The energy-weighted cost and carbon of `profile`, exact on the price intervals."""
        if not profile:
            raise PriceError("the consumption profile is empty")
        start_s = np.array([item.start_s for item in profile], dtype=float)
        end_s = np.array([item.end_s for item in profile], dtype=float)
        energy_kwh = np.array([item.energy_kwh for item in profile], dtype=float)
        if (end_s < start_s).any():
            i = int(np.flatnonzero(end_s < start_s)[0])
            raise PriceError(f"consumption interval {i}: end_s is before start_s")
        self._span_or_raise(now_s)
        window = (float(start_s.min()), float(end_s.max()) + 1e-6)
        # From now at the latest, so that energy beyond the horizon meets the last known price.
        price = self._visible_price(now_s, min(window[0], now_s), window[1])
        if not len(price):
            raise PriceError(f"no known price between {utc_label(window[0])} and {utc_label(window[1])}")
        carbon = self._carbon_series(now_s, min(window[0], now_s), window[1])
        totals = profile_cost(price, carbon if carbon is not None and len(carbon) else None,
                              start_s, end_s, energy_kwh)
        energy = totals.energy_kwh
        return EnergyCost(
            energy_kwh=energy, cost=totals.cost, currency=self.currency,
            average_price_per_mwh=totals.cost / energy * KWH_PER_MWH if energy else None,
            carbon_kg=None if totals.carbon_g is None else totals.carbon_g / 1000.0,
            average_carbon_g_per_kwh=(None if totals.carbon_g is None or not energy
                                      else totals.carbon_g / energy),
            uncovered_kwh=totals.uncovered_kwh,
        )

    def status(self, now_s: float) -> FeedStatus:
        """Staleness, failures and the span of the data, for operators."""
        span = self.provider.span()
        stale, age_s, reason = self._staleness(now_s, span)
        interval_s = None
        if span is not None:
            probe_s = min(max(now_s, span[0]), span[1] - 1e-6)
            interval_s = self.provider.price(probe_s, probe_s + 1e-6).interval_s
        next_poll_in_s = None if not self.polled else self.schedule.next_poll_in_s()
        notes = self.provider.notes() + (self.carbon_provider.notes() if self.carbon_provider else [])
        return FeedStatus(
            kind=self.provider.kind, source=self.provider.description, stale=stale, age_s=age_s,
            stale_reason=reason, last_error=self.last_error,
            consecutive_failures=self.consecutive_failures, next_poll_in_s=next_poll_in_s,
            series_start_s=_finite(span[0]) if span else None,
            series_end_s=_finite(span[1]) if span else None, interval_s=interval_s,
            currency=self.currency,
            carbon_source=(self.carbon_provider.description if self.carbon_provider else None),
            notes=notes,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _span_or_raise(self, now_s: float) -> tuple[float, float]:
        span = self.provider.span()
        if span is None:
            why = f": {self.last_error}" if self.last_error else " (not polled yet)"
            raise PriceError(f"no price yet from {self.provider.description}{why}")
        if now_s < span[0]:
            raise PriceError(
                f"{self.provider.description} starts at {utc_label(span[0])}, after the factory time "
                f"{utc_label(now_s)}; replay a period it covers (clock.mode: replay, clock.replay_start)"
            )
        return span

    def _visible_price(self, now_s: float, start_s: float, end_s: float) -> IntervalSeries:
        series = self.provider.price(start_s, end_s)
        if series is None:
            raise PriceError(f"no price yet from {self.provider.description}")
        return series.through(self.provider.known_until_s(now_s))

    def _carbon_series(self, now_s: float, start_s: float, end_s: float) -> IntervalSeries | None:
        source = self.carbon_provider or self.provider
        series = source.carbon(start_s, end_s)
        return None if series is None else series.through(source.known_until_s(now_s))

    def _carbon_at(self, now_s: float, at_s: float) -> float | None:
        series = self._carbon_series(now_s, at_s, at_s + 1e-6)
        return None if series is None else series.value_at(at_s)

    def _staleness(
        self, now_s: float, span: tuple[float, float] | None
    ) -> tuple[bool, float | None, str | None]:
        reasons = []
        age_s: float | None = 0.0
        if self.polled:
            age_s = self.schedule.age_s()
            reason = self.schedule.stale_reason()
            if reason is not None:
                reasons.append(reason)
        if span is not None and now_s >= span[1]:
            reasons.append(f"the series ends at {utc_label(span[1])}")
            # A feed that answers but publishes nothing new is as old as its newest interval.
            age_s = max(age_s or 0.0, now_s - span[1])
        return bool(reasons), age_s, "; ".join(reasons) or None


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None

