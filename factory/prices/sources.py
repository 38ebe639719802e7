"""Build the price feed a config describes: one provider for prices, optionally one for carbon."""

from __future__ import annotations

from collections.abc import Mapping

from factory.errors import PriceDataError
from factory.price_config import PricesConfig
from factory.prices.feed import PriceFeed
from factory.prices.provider import PriceProvider
from factory.prices.tariff import TariffProvider, load_tariff
from factory.prices.trace import TraceProvider, load_trace


def build_provider(config: PricesConfig, env: Mapping[str, str] | None = None) -> PriceProvider:
    """The price provider of `config.source`; file errors name the file and row."""
    if config.source == "tariff":
        tariff = load_tariff(config.tariff_path)
        if tariff.currency != config.currency:
            raise PriceDataError(
                f"tariff {config.tariff_path or 'built-in'} is in {tariff.currency} but "
                f"prices.currency is {config.currency}; make them agree"
            )
        return TariffProvider(tariff, config.tariff_path)
    if config.source == "trace":
        return TraceProvider(load_trace(config.trace, "prices.trace"), config.known_horizon_h)
    from factory.prices.http import HttpPriceProvider

    return HttpPriceProvider(config.http, env=env)


def build_feed(config: PricesConfig, env: Mapping[str, str] | None = None) -> PriceFeed:
    """The feed for `config`: its price provider and, if configured, its own carbon series."""
    carbon = None
    if config.carbon is not None:
        carbon = TraceProvider(load_trace(config.carbon, "prices.carbon"), config.known_horizon_h)
    return PriceFeed(build_provider(config, env), config, carbon_provider=carbon)
