"""GridPriceActor: the factory's clock, and its electricity price and carbon feed.

It owns the clock because prices are what the clock replays: in replay mode the factory's time is
the time of the price trace being replayed. The feed logic lives in `factory.prices` (no Ray);
this actor runs it on the factory clock, polls live feeds on a background thread and exports the
price, carbon and feed age as Ray metrics.

Invariants:
  * The clock spec is resolved once per (replay start, speed) and stored (meta key `clock_spec`)
    before it is used, so restarts and later `factory up`s continue the same replay.
  * A price source that cannot be read, fails or stalls never fails the actor: the clock keeps
    serving, the error is `last_error`, and price queries say why there is no (fresh) price.
  * A polled feed's last good records are stored (meta key `price_feed_records`) after each
    successful poll, so a restarted actor answers with them (marked stale) until it polls again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from actors.control_plane import ControlPlaneActor
from factory.clock import ClockSpec, resolve_clock_spec
from factory.errors import FactoryError, PriceError
from factory.prices.feed import PriceFeed
from factory.prices.metrics import PriceMetrics
from factory.prices.models import (
    ConsumptionInterval,
    EnergyCost,
    FeedStatus,
    Forecast,
    PriceHistory,
    PriceNow,
)
from factory.prices.sources import build_feed

CLOCK_SPEC_META_KEY = "clock_spec"
CLOCK_PAUSED_META_KEY = "clock_paused_at_s"
FEED_RECORDS_META_KEY = "price_feed_records"


class GridPriceActor(ControlPlaneActor):
    """Owns the factory clock and the price and carbon feed."""

    kind = "grid_price"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config, clock_spec=None)
        self._feed: PriceFeed | None = None
        self._feed_error: str | None = None
        try:
            self._feed = build_feed(self.config.prices)
        except FactoryError as exc:  # a bad file must not take the clock down with it
            self._feed_error = str(exc)
            self._record_error(exc)
        self._restore_feed_records()
        if self._feed is not None:
            notes = self._feed.status(self.clock.now_s()).notes
            self.audit("prices.source", self._feed.provider.kind, source=self._feed.provider.description,
                       **({"repairs": notes} if notes else {}))
        self._metrics = PriceMetrics()
        try:
            self._tick()
        except Exception as exc:  # noqa: BLE001 - as in the loop: a bad round never fails the actor
            self._record_error(exc)
        self._run_every(self.config.prices.tick_s, self._tick, "price-feed")

    def _on_store_opened(self) -> None:
        stored_json = self.store.get_meta(CLOCK_SPEC_META_KEY)
        stored = ClockSpec.model_validate_json(stored_json) if stored_json else None
        # A pause is for the next `up`; a Ray restart (say, while `down` is under way) must keep
        # the clock the other actors already have.
        paused = None if self._restarted else self.store.get_meta(CLOCK_PAUSED_META_KEY)
        clock = self.config.clock
        spec = resolve_clock_spec(
            clock.mode, clock.replay_start, clock.speed_factor, stored, now_wall_s=time.time(),
            paused_at_s=float(paused) if paused is not None else None,
        )
        with self.store.transaction():  # the new anchor and the end of the pause land together
            if spec != stored:
                self.store.set_meta(CLOCK_SPEC_META_KEY, spec.model_dump_json())
            if paused is not None:
                self.store.delete_meta(CLOCK_PAUSED_META_KEY)
        self.clock = spec.build()

    def clock_spec(self) -> ClockSpec:
        """Return the spec every other actor and client builds its clock from."""
        assert self.clock is not None
        return self.clock.spec()

    def pause_clock(self) -> float:
        """Record the factory time now, from which the next `up` resumes; return it.

        Called by `factory down` just before the actors are removed. A restart without `down`
        (a crash) is not a pause: the replay keeps running meanwhile, as the wall clock does.
        """
        assert self.clock is not None
        now_s = self.clock.now_s()
        if self.clock.mode == "replay":
            self.store.set_meta(CLOCK_PAUSED_META_KEY, repr(now_s))
        return now_s

    # -- prices ----------------------------------------------------------------------------------

    def price(self) -> PriceNow:
        """The price and carbon intensity now (factory time), with currency, unit and freshness."""
        return self._live_feed().price(self._now_s())

    def forecast(self, hours: float = 24.0) -> Forecast:
        """Known prices up to the market's horizon, then estimates with a band, for `hours`."""
        return self._live_feed().forecast(self._now_s(), hours)

    def price_history(self, start_s: float, end_s: float) -> PriceHistory:
        """Past price intervals overlapping [start_s, min(end_s, now))."""
        return self._live_feed().history(start_s, end_s, self._now_s())

    def energy_cost(self, profile: list[dict[str, float]]) -> EnergyCost:
        """The energy-weighted cost and carbon of a consumption profile (kWh per interval)."""
        intervals = [ConsumptionInterval.model_validate(item) for item in profile]
        return self._live_feed().cost(intervals, self._now_s())

    def feed_status(self) -> FeedStatus:
        """The feed's source, staleness, failures and data span."""
        return self._live_feed().status(self._now_s())

    def _now_s(self) -> float:
        assert self.clock is not None
        return self.clock.now_s()

    def _live_feed(self) -> PriceFeed:
        if self._feed is None:
            raise PriceError(f"no price source: {self._feed_error}")
        return self._feed

    def _tick(self) -> None:
        """One round: poll a live feed if due, then export the metrics."""
        feed = self._feed
        if feed is None:
            return
        self._after_poll(feed, feed.poll_if_due())
        now_s = self._now_s()
        try:
            price = feed.price(now_s)
        except PriceError:
            price = None
        self._metrics.export(feed.status(now_s), price)

    def _after_poll(self, feed: PriceFeed, outcome: bool | None) -> None:
        if outcome is True:
            records = feed.provider.cached_records()
            self.store.set_meta(FEED_RECORDS_META_KEY, json.dumps(records))
        elif outcome is False:
            self._record_error(feed.last_error or "price feed poll failed")

    def _restore_feed_records(self) -> None:
        if self._feed is None or not self._feed.polled:
            return
        stored = self.store.get_meta(FEED_RECORDS_META_KEY)
        if not stored:
            return
        try:
            self._feed.provider.restore([tuple(record) for record in json.loads(stored)])
        except PriceError as exc:  # e.g. records on another grid after a config change: poll afresh
            self._record_error(exc)
            return
        self._feed.mark_restored()
