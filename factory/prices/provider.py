"""`PriceProvider`: one source of price (and carbon) intervals. One module per kind of source.

Nomenclature:
  known until -- the latest instant whose price an operator standing at `now_s` could know: a
                 trace replay of a day-ahead market knows `known_horizon_h` ahead; a polled feed
                 knows what it has fetched; a tariff knows every hour in advance.

Invariants:
  * `series` never returns values the provider does not have; the feed (`factory.prices.feed`)
    cuts them at `known_until_s` before anyone sees them, so no caller peeks past the horizon.
  * `refresh` is the only method that does I/O after construction; it raises `PriceError` with one
    line (never a credential) and leaves the last good data in place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from factory.prices.series import IntervalSeries


class PriceProvider(ABC):
    """A price source. `poll_interval_s` is None for sources with nothing to fetch."""

    kind: ClassVar[str]
    poll_interval_s: float | None = None

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for people: what the source is (files, URL, tariff name)."""

    def refresh(self) -> None:  # noqa: B027 - only polled sources fetch anything
        """Fetch new data; raise `PriceError` on failure, keeping the last good data."""

    @abstractmethod
    def price(self, start_s: float, end_s: float) -> IntervalSeries | None:
        """The price intervals (per MWh) overlapping [start_s, end_s) that the source has."""

    def carbon(self, start_s: float, end_s: float) -> IntervalSeries | None:
        """The carbon-intensity intervals (gCO2/kWh) overlapping the window; None if it has none."""
        return None

    @abstractmethod
    def known_until_s(self, now_s: float) -> float:
        """The latest instant an operator at `now_s` knows the price of (may be `inf`)."""

    @abstractmethod
    def span(self) -> tuple[float, float] | None:
        """[first start, last end) of the price data (infinite for a tariff); None before any data."""

    def cached_records(self) -> list[tuple[float, float, float | None]]:
        """What a polled source fetched, (start_s, price, carbon) each, stored for a restart."""
        return []

    def restore(self, records: list[tuple[float, float, float | None]]) -> None:  # noqa: B027
        """Take back `cached_records` saved before a restart (no I/O); sources that fetch: override."""

    def notes(self) -> list[str]:
        """Repairs made to the data (gaps filled, rows dropped), for operators."""
        return []
