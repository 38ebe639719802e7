"""The grid price feed as Ray metrics (exported by the GridPriceActor on the head node).

Ray prefixes every name with `ray_` on export: `factory_grid_price_per_mwh` is scraped as
`ray_factory_grid_price_per_mwh`. `PRICE_METRICS` is the documented contract (the table in docs/prices.md is
checked against it). Tag `source` is the provider kind: tariff | trace | http.
"""

from __future__ import annotations

from factory.prices.models import FeedStatus, PriceNow
from factory.telemetry.metrics import MetricSpec

PRICE_METRICS = (
    MetricSpec("factory_grid_price_per_mwh", "currency/MWh", ("source", "currency"),
               "electricity price now (the last known one while the feed is stale)"),
    MetricSpec("factory_grid_carbon_g_per_kwh", "gCO2/kWh", ("source",), "grid carbon intensity now"),
    MetricSpec("factory_price_feed_age_s", "s", ("source",),
               "seconds since the last successful poll (a trace: factory seconds past its end)"),
    MetricSpec("factory_price_feed_stale", "1/0", ("source",), "1 while the price is a last known value"),
)


class PriceMetrics:
    """The Ray gauges of the grid price actor. Create inside a Ray worker (the actor)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self._gauges = {spec.name: Gauge(spec.name, description=f"{spec.description} ({spec.unit})",
                                         tag_keys=spec.tags) for spec in PRICE_METRICS}

    def export(self, status: FeedStatus, price: PriceNow | None) -> None:
        """Set the gauges from the feed's status and the price now (None: no price yet)."""
        tags = {"source": status.kind}
        self._gauges["factory_price_feed_stale"].set(1.0 if status.stale or price is None else 0.0, tags)
        if status.age_s is not None:
            self._gauges["factory_price_feed_age_s"].set(status.age_s, tags)
        if price is not None:
            self._gauges["factory_grid_price_per_mwh"].set(
                price.price_per_mwh, tags | {"currency": price.currency})
            if price.carbon_g_per_kwh is not None:
                self._gauges["factory_grid_carbon_g_per_kwh"].set(price.carbon_g_per_kwh, tags)
