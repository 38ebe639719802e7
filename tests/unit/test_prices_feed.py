"""The price feed: the horizon rule, the forecast, history, exact costs, and stale feeds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.errors import PriceDataError, PriceError
from factory.price_config import HttpFeedConfig, PricesConfig
from factory.prices.feed import PriceFeed
from factory.prices.http import HttpPriceProvider
from factory.prices.models import ConsumptionInterval
from factory.prices.series import IntervalSeries, utc_label
from factory.prices.sources import build_provider
from factory.prices.tariff import TariffProvider, load_tariff
from factory.prices.trace import LoadedTrace, TraceProvider
from tests.price_server import FeedServer

T0 = datetime(2024, 7, 1, tzinfo=UTC).timestamp()  # a Monday
HOUR_S = 3600.0
DAY_S = 86400.0


def trace_feed(values: list[float], horizon_h: float = 24, start_s: float = T0,
               interval_s: float = HOUR_S, carbon: list[float] | None = None) -> PriceFeed:
    price = IntervalSeries(start_s, interval_s, np.array(values, dtype=float))
    carbon_series = None if carbon is None else IntervalSeries(start_s, interval_s, np.array(carbon, float))
    provider = TraceProvider(LoadedTrace(price, carbon_series, ["synthetic.csv"]), horizon_h)
    return PriceFeed(provider, PricesConfig(known_horizon_h=horizon_h))


def daily_pattern(days: int) -> list[float]:
    """Day d, hour h costs 100*d + h: every value tells which day and hour it came from."""
    return [100.0 * day + hour for day in range(days) for hour in range(24)]


def test_the_forecast_never_reveals_prices_beyond_the_known_horizon() -> None:
    values = daily_pattern(10)
    values[8 * 24 + 6] = 9999.0  # a spike on day 8 at 06:00
    feed = trace_feed(values)
    now_s = T0 + 6 * DAY_S + 10 * HOUR_S  # day 6, 10:00: known until day 7, 10:00
    forecast = feed.forecast(now_s, hours=72)
    assert forecast.known_until_s == now_s + 24 * HOUR_S
    assert all(p.price_per_mwh != 9999.0 and (p.high_per_mwh or 0) < 9999.0 for p in forecast.points)
    for point in forecast.points:
        assert point.known == (point.start_s <= now_s + 24 * HOUR_S)
    spike_time = T0 + 8 * DAY_S + 6 * HOUR_S
    estimate = next(p for p in forecast.points if p.start_s == spike_time)
    # Same hour (06:00) on the 7 most recent known days (days 1..7): median day 4, band 1..7.
    assert (estimate.price_per_mwh, estimate.low_per_mwh, estimate.high_per_mwh) == (406.0, 106.0, 706.0)
    history = feed.history(T0, T0 + 20 * DAY_S, now_s)
    assert history.end_s == now_s and history.points[-1].start_s == now_s - HOUR_S
    assert all(p.start_s <= now_s for p in history.points)


def test_a_real_time_market_knows_only_the_current_interval() -> None:
    feed = trace_feed(daily_pattern(10), horizon_h=0)
    now_s = T0 + 8 * DAY_S + 5.5 * HOUR_S
    forecast = feed.forecast(now_s, hours=3)
    assert [p.known for p in forecast.points] == [True, False, False, False]
    assert forecast.points[0].price_per_mwh == 805.0
    assert feed.price(now_s).price_per_mwh == 805.0


def test_price_now_states_currency_unit_interval_and_carbon() -> None:
    feed = trace_feed([10.0, -5.0, 30.0], carbon=[300.0, 250.0, 200.0])
    now = feed.price(T0 + 1.5 * HOUR_S)
    assert (now.price_per_mwh, now.currency, now.unit) == (-5.0, "USD", "USD/MWh")
    assert now.carbon_g_per_kwh == 250.0
    assert now.interval_start_s == T0 + HOUR_S and now.interval_s == HOUR_S
    assert not now.stale and now.age_s == 0


def test_a_trace_that_ran_out_answers_its_last_price_as_stale_with_its_age() -> None:
    feed = trace_feed([10.0, 20.0])
    later = feed.price(T0 + 5 * HOUR_S)
    assert later.price_per_mwh == 20.0 and later.stale
    assert later.age_s == 3 * HOUR_S and "series ends at 2024-07-01 02:00 UTC" in later.stale_reason
    with pytest.raises(PriceError, match="starts at 2024-07-01 00:00 UTC, after the factory time .*replay"):
        feed.price(T0 - 1)


def test_cost_is_exact_on_the_price_intervals() -> None:
    # 15-minute prices (per MWh): 100, -20, 40, 60; carbon 400, 100, 200, 300 g/kWh.
    feed = trace_feed([100.0, -20.0, 40.0, 60.0], interval_s=900, carbon=[400.0, 100.0, 200.0, 300.0])
    profile = [ConsumptionInterval(start_s=T0 + 450, end_s=T0 + 1350, energy_kwh=2.0),  # half in each
               ConsumptionInterval(start_s=T0 + 1800, end_s=T0 + 3600, energy_kwh=4.0)]
    cost = feed.cost(profile, now_s=T0 + 3599)
    expected = (1.0 * 100 + 1.0 * -20 + 2.0 * 40 + 2.0 * 60) / 1000
    assert cost.cost == pytest.approx(expected)
    assert cost.energy_kwh == 6.0 and cost.currency == "USD" and cost.uncovered_kwh == 0
    assert cost.carbon_kg == pytest.approx((1 * 400 + 1 * 100 + 2 * 200 + 2 * 300) / 1000)
    assert cost.average_price_per_mwh == pytest.approx(expected / 6 * 1000)
    beyond = feed.cost([ConsumptionInterval(start_s=T0 + 2700, end_s=T0 + 4500, energy_kwh=2.0)], T0 + 3599)
    assert beyond.uncovered_kwh == pytest.approx(1.0)  # half of it after the series: at the last price
    assert beyond.cost == pytest.approx(2.0 * 60 / 1000)


def test_costs_never_use_prices_beyond_the_horizon() -> None:
    feed = trace_feed([10.0] * 30 + [1000.0] * 30)  # the price jumps at hour 30
    cost = feed.cost([ConsumptionInterval(start_s=T0 + 40 * HOUR_S, end_s=T0 + 41 * HOUR_S, energy_kwh=1)],
                     now_s=T0)  # known until hour 24: the jump is not known yet
    assert cost.cost == pytest.approx(10.0 / 1000) and cost.uncovered_kwh == 1.0


def test_bad_queries_are_one_line_errors() -> None:
    feed = trace_feed([10.0, 20.0])
    with pytest.raises(PriceError, match="history window is empty"):
        feed.history(T0 + HOUR_S, T0, T0 + HOUR_S)
    with pytest.raises(PriceError, match="hours must be > 0"):
        feed.forecast(T0, hours=0)
    with pytest.raises(PriceError, match="end_s is before start_s"):
        feed.cost([ConsumptionInterval(start_s=T0 + 10, end_s=T0, energy_kwh=1)], T0)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def server() -> Iterator[FeedServer]:
    feed_server = FeedServer()
    yield feed_server
    feed_server.stop()


def test_a_stalled_then_dead_feed_keeps_its_last_series_marks_it_stale_and_backs_off(
        server: FeedServer) -> None:
    server.serve([{"timestamp": "2024-07-01T00:00:00Z", "price_per_mwh": 42.0},
                  {"timestamp": "2024-07-01T01:00:00Z", "price_per_mwh": -7.5}])
    config = HttpFeedConfig(url=server.url, poll_interval_s=60, timeout_s=0.3, max_backoff_s=40)
    clock = FakeMonotonic()
    feed = PriceFeed(HttpPriceProvider(config), PricesConfig(source="http", http=config), monotonic=clock)
    with pytest.raises(PriceError, match="no price yet from http feed"):
        feed.price(T0)
    assert feed.poll_if_due() is True
    assert feed.price(T0 + HOUR_S).price_per_mwh == -7.5 and not feed.price(T0).stale
    assert feed.poll_if_due() is None  # not due for another 60 s
    server.delay_s = 2.0  # the server accepts but does not answer within timeout_s
    delays = []
    for _ in range(5):
        clock.now_s += 1000
        assert feed.poll_if_due() is False  # never raises
        delays.append(feed.status(T0).next_poll_in_s)
    assert delays == [5.0, 10.0, 20.0, 40.0, 40.0]  # doubling up to max_backoff_s
    stale = feed.price(T0 + HOUR_S)
    assert stale.stale and stale.price_per_mwh == -7.5  # the last known series answers
    assert stale.age_s == pytest.approx(5000.0) and "no answer within" in stale.stale_reason
    status = feed.status(T0)
    assert status.consecutive_failures == 5 and status.stale
    server.stop()  # now nothing listens at all
    clock.now_s += 1000
    assert feed.poll_if_due() is False
    assert "refused" in feed.status(T0).last_error


def test_a_feed_that_answers_again_is_fresh_again(server: FeedServer) -> None:
    config = HttpFeedConfig(url=server.url, poll_interval_s=60, timeout_s=0.3)
    clock = FakeMonotonic()
    feed = PriceFeed(HttpPriceProvider(config), PricesConfig(source="http", http=config), monotonic=clock)
    server.serve({"error": "maintenance"}, status=503)
    assert feed.poll_if_due() is False
    server.serve([{"timestamp": "2024-07-01T00:00:00Z", "price_per_mwh": 42.0}])
    clock.now_s += 5
    assert feed.poll_if_due() is True
    now = feed.price(T0)
    assert not now.stale and now.age_s == 0 and feed.status(T0).consecutive_failures == 0


def test_the_builtin_tariff_covers_every_hour_and_is_known_in_advance() -> None:
    feed = PriceFeed(TariffProvider(load_tariff(None)), PricesConfig())
    forecast = feed.forecast(T0, hours=24 * 7)
    assert forecast.known_until_s is None and all(p.known for p in forecast.points)
    assert all(p.low_per_mwh == p.high_per_mwh == p.price_per_mwh for p in forecast.points)
    assert all(p.carbon_g_per_kwh is not None for p in forecast.points)
    prices = [p.price_per_mwh for p in forecast.points]
    assert min(prices) < 0 < max(prices)  # a solar weekend midday below zero, an evening peak


def tariff_file(tmp_path: Path, periods: str, timezone: str = "America/Chicago") -> Path:
    path = tmp_path / "tariff.yaml"
    path.write_text(f"name: test\ntimezone: {timezone}\ncurrency: USD\nperiods:\n{periods}")
    return path


def test_a_tariff_follows_local_time_across_dst_and_the_first_match_wins(tmp_path: Path) -> None:
    path = tariff_file(tmp_path, '  - {name: peak, days: [mon, tue, wed, thu, fri], hours: "16:00-20:00", '
                                 'price_per_mwh: 200}\n  - {name: peak-ish, hours: "16:00-20:00", '
                                 'price_per_mwh: 150}\n  - {name: rest, price_per_mwh: 50}\n')
    provider = TariffProvider(load_tariff(path), path)
    summer_monday_16_local = datetime(2024, 7, 1, 21, tzinfo=UTC).timestamp()  # CDT = UTC-5
    winter_monday_16_local = datetime(2024, 1, 8, 22, tzinfo=UTC).timestamp()  # CST = UTC-6
    assert provider.price(summer_monday_16_local, summer_monday_16_local + 1).values.tolist() == [200.0]
    assert provider.price(winter_monday_16_local, winter_monday_16_local + 1).values.tolist() == [200.0]
    assert provider.price(winter_monday_16_local - HOUR_S, winter_monday_16_local).values.tolist() == [50.0]
    saturday = datetime(2024, 7, 6, 21, tzinfo=UTC).timestamp()
    assert provider.price(saturday, saturday + 1).values.tolist() == [150.0]


@pytest.mark.parametrize(("periods", "message"), [
    ('  - {name: day, hours: "00:00-23:00", price_per_mwh: 50}\n',
     r"no period covers mon 23:00 in month 1; add a period"),
    ('  - {name: day, hours: "9-17", price_per_mwh: 50}\n',
     r"field 'periods.0.hours': '9-17' is not 'HH:MM-HH:MM'"),
    ('  - {name: day, hours: "00:00-24:00", price_per_mwh: cheap}\n', r"field 'periods.0.price_per_mwh'"),
    ('  - {name: day, days: [monday], price_per_mwh: 5}\n', r"field 'periods.0.days.0'"),
    ('  - {name: a, hours: "00:00-12:00", price_per_mwh: 5, carbon_g_per_kwh: 1}\n'
     '  - {name: b, price_per_mwh: 5}\n', "carbon_g_per_kwh in every period or in none"),
])
def test_a_bad_tariff_names_the_file_and_field(tmp_path: Path, periods: str, message: str) -> None:
    path = tariff_file(tmp_path, periods)
    with pytest.raises(PriceDataError, match=message) as caught:
        TariffProvider(load_tariff(path), path)
    assert str(path) in str(caught.value)


def test_a_tariff_in_another_currency_than_the_config_is_refused(tmp_path: Path) -> None:
    path = tariff_file(tmp_path, "  - {name: all, price_per_mwh: 50}\n")
    with pytest.raises(PriceDataError, match="in USD but prices.currency is EUR"):
        build_provider(PricesConfig(tariff_path=path, currency="EUR"))


def test_a_tariff_in_a_half_hour_zone_keeps_its_local_boundaries(tmp_path: Path) -> None:
    path = tariff_file(tmp_path, '  - {name: peak, hours: "16:00-20:00", price_per_mwh: 200}\n'
                                 '  - {name: rest, price_per_mwh: 50}\n', timezone="Asia/Kolkata")
    provider = TariffProvider(load_tariff(path), path)
    ist = 5.5 * HOUR_S
    at_16_10 = datetime(2024, 7, 1, 16, 10, tzinfo=UTC).timestamp() - ist
    at_20_10 = datetime(2024, 7, 1, 20, 10, tzinfo=UTC).timestamp() - ist
    at_15_50 = at_16_10 - 20 * 60
    assert [provider.price(t, t + 1).values[0] for t in (at_15_50, at_16_10, at_20_10)] == [50, 200, 50]


def test_a_polled_feed_estimates_beyond_what_it_fetched_and_ages_when_it_publishes_nothing_new(
        server: FeedServer) -> None:
    hours = 24 * 10
    server.serve([{"timestamp": datetime.fromtimestamp(T0 + h * HOUR_S, tz=UTC).isoformat(),
                   "price_per_mwh": float(h % 24)} for h in range(hours)])
    config = HttpFeedConfig(url=server.url, poll_interval_s=60, timeout_s=1)
    feed = PriceFeed(HttpPriceProvider(config), PricesConfig(source="http", http=config),
                     monotonic=FakeMonotonic())
    assert feed.poll_if_due() is True
    end_s = T0 + hours * HOUR_S
    forecast = feed.forecast(end_s - 2 * HOUR_S, hours=24)
    assert forecast.known_until_s == end_s - HOUR_S
    assert [p.known for p in forecast.points[:3]] == [True, True, False]
    assert all(p.price_per_mwh == (p.start_s - T0) // HOUR_S % 24 for p in forecast.points)  # daily shape
    later = feed.price(end_s + 3 * HOUR_S)  # the feed answered, but published nothing this recent
    assert later.stale and later.age_s == 3 * HOUR_S and "series ends" in later.stale_reason


def test_the_repository_config_points_at_the_illustrative_tariff_and_works_without_shared_data() -> None:
    from factory.config import load_config
    from factory.prices.sources import build_feed
    from tests.support import REPO_ROOT

    config = load_config(REPO_ROOT / "configs" / "factory.yaml", env={}, cwd=REPO_ROOT)
    feed = build_feed(config.prices)
    assert feed.provider.kind == "tariff" and "Illustrative" in feed.provider.description
    assert config.prices.tariff_path == REPO_ROOT / "factory" / "prices" / "tariffs" / "illustrative.yaml"
    assert feed.price(T0).unit == "USD/MWh"


def _strftime_label(time_s: float) -> str:
    """What `utc_label` must equal: `datetime`'s own text, its rounding to microseconds included."""
    try:
        moment = datetime.fromtimestamp(time_s, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return f"{time_s:.0f} (Unix seconds)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC")


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 4e9),
    # Whole seconds and a hair around them, where rounding to microseconds moves the second shown.
    st.builds(lambda whole, hair: whole + hair, st.integers(-10**6, 4 * 10**9).map(float),
              st.sampled_from([0.0, 5e-7, -5e-7, 4.999e-7, -4.999e-7, 5.0001e-7, 1e-6, -1e-6, 0.5, -0.5])),
))
def test_utc_label_is_datetimes_text(time_s: float) -> None:
    """A message's time reads as `datetime` writes it, however it is computed (the fast path caches per
    minute): whole minutes without seconds, other times with them, times out of range as Unix seconds."""
    assert utc_label(time_s) == _strftime_label(time_s)


def test_utc_label_examples() -> None:
    assert utc_label(T0) == "2024-07-01 00:00 UTC"
    assert utc_label(T0 + 3725.0) == "2024-07-01 01:02:05 UTC"
    assert utc_label(T0 - 0.4) == "2024-06-30 23:59:59 UTC"
    assert utc_label(T0 + 59.9999996) == "2024-07-01 00:01 UTC"  # rounds to the next whole minute
    assert utc_label(math.inf) == "inf (Unix seconds)"
