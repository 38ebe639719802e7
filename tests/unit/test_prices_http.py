"""The HTTP JSON price feed, polled from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from factory.errors import PriceError
from factory.price_config import HttpFeedConfig
from factory.prices.http import HttpPriceProvider
from tests.price_server import FeedServer

T0 = datetime(2024, 7, 1, tzinfo=UTC).timestamp()
HOUR_S = 3600.0
EVER = (0.0, 4e9)  # a window around every test interval
TOKEN = "Bearer tok-5ecret-9f27"


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.stop()


@pytest.fixture
def chicago_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone other than UTC, so that 'naive means UTC' is really tested."""
    monkeypatch.setenv("TZ", "America/Chicago")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def provider(feed: FeedServer, env: dict[str, str] | None = None, **fields: Any) -> HttpPriceProvider:
    return HttpPriceProvider(HttpFeedConfig(url=feed.url, timeout_s=2.0, **fields), env=env or {})


def iso(time_s: float) -> str:
    return datetime.fromtimestamp(time_s, tz=UTC).isoformat()


def hourly(*prices: float, start_s: float = T0) -> list[dict[str, Any]]:
    return [{"timestamp": iso(start_s + i * HOUR_S), "price_per_mwh": p} for i, p in enumerate(prices)]


def prices_of(source: HttpPriceProvider) -> list[float]:
    series = source.price(*EVER)
    assert series is not None
    return series.values.tolist()


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("chicago_local_time")
def test_nested_items_and_custom_paths_give_the_right_intervals(feed: FeedServer) -> None:
    feed.serve({"data": {"prices": [
        {"when": {"ts": "2024-07-01T00:00:00Z"}, "lmp": 31.5, "co2": 410},
        {"when": {"ts": "2024-07-01T03:00:00+02:00"}, "lmp": -12.25, "co2": 380.5},  # 01:00 UTC
        {"when": {"ts": "2024-07-01T02:00:00"}, "lmp": "17", "co2": 300},  # no offset: UTC
    ]}})
    source = provider(feed, items_path="data.prices", timestamp_path="when.ts", price_path="lmp",
                      carbon_path="co2")
    assert source.price(T0, T0 + 3 * HOUR_S) is None  # nothing fetched yet

    source.refresh()

    price = source.price(T0, T0 + 3 * HOUR_S)
    assert price is not None and (price.start_s, price.interval_s) == (T0, HOUR_S)
    assert price.values.tolist() == [31.5, -12.25, 17.0]
    carbon = source.carbon(T0 + HOUR_S, T0 + 2 * HOUR_S)
    assert carbon is not None and (carbon.start_s, carbon.values.tolist()) == (T0 + HOUR_S, [380.5])
    assert source.notes() == []
    assert source.known_until_s(T0) == T0 + 2 * HOUR_S  # the start of the last fetched interval
    assert source.description == f"http feed {feed.url}" and source.kind == "http"


def test_a_single_record_object_is_one_interval(feed: FeedServer) -> None:
    feed.serve({"latest": {"timestamp": "2024-07-01T05:00:00Z", "price_per_mwh": 44.0}})
    source = provider(feed, items_path="latest")
    source.refresh()
    price = source.price(*EVER)
    assert price is not None and (price.start_s, price.values.tolist()) == (T0 + 5 * HOUR_S, [44.0])


def test_unix_second_timestamps_on_a_15_minute_grid(feed: FeedServer) -> None:
    feed.serve([{"t": int(T0) + 900 * i, "p": 10.0 + i} for i in range(4)])
    source = provider(feed, timestamp_path="t", price_path="p", resolution_min=15)
    source.refresh()
    price = source.price(*EVER)
    assert price is not None and (price.start_s, price.interval_s) == (T0, 900.0)
    assert price.values.tolist() == [10.0, 11.0, 12.0, 13.0]


def test_timestamps_marking_the_interval_end_move_back_one_interval(feed: FeedServer) -> None:
    feed.serve(hourly(20.0, 21.0, start_s=T0 + HOUR_S))
    source = provider(feed, timestamp_marks="end")
    source.refresh()
    price = source.price(*EVER)
    assert price is not None and price.start_s == T0 and price.value_at(T0 + 10) == 20.0


# --- credentials -------------------------------------------------------------------------------


def test_the_credential_is_sent_verbatim_in_the_auth_header(feed: FeedServer) -> None:
    feed.serve(hourly(1.0))
    source = provider(feed, env={"PRICE_TOKEN": TOKEN}, auth_env="PRICE_TOKEN", auth_header="X-Api-Key")
    source.refresh()
    assert feed.requests[-1]["X-Api-Key"] == TOKEN
    assert feed.requests[-1]["Accept"] == "application/json"


def test_a_redirect_does_not_carry_the_credential(feed: FeedServer) -> None:
    feed.serve(hourly(1.0))
    source = HttpPriceProvider(HttpFeedConfig(url=feed.url.replace("/prices", "/moved"), auth_env="KEY"),
                               env={"KEY": TOKEN})
    source.refresh()
    assert [request["Authorization"] for request in feed.requests] == [TOKEN, None]
    assert prices_of(source) == [1.0]


@pytest.mark.parametrize("env", [{}, {"PRICE_TOKEN": ""}])
def test_a_missing_credential_variable_is_named_and_nothing_is_sent(feed: FeedServer,
                                                                     env: dict[str, str]) -> None:
    source = provider(feed, env=env, auth_env="PRICE_TOKEN")
    with pytest.raises(PriceError, match="environment variable PRICE_TOKEN .*not set"):
        source.refresh()
    assert feed.requests == []


@pytest.mark.parametrize("failure", ["401 with the token in the body", "500 echoing the headers",
                                     "200 echoing the headers", "token echoed as the price"])
def test_the_credential_never_appears_in_an_error(feed: FeedServer, failure: str) -> None:
    if failure.startswith("401"):
        feed.serve({"error": f"bad credential {TOKEN}"}, status=401)
    elif failure.startswith("500"):
        feed.echo, feed.status = True, 500
    elif failure.startswith("200"):
        feed.echo = True
    else:
        feed.serve([{"timestamp": iso(T0), "price_per_mwh": TOKEN}])
    source = provider(feed, env={"PRICE_TOKEN": TOKEN}, auth_env="PRICE_TOKEN")
    with pytest.raises(PriceError) as caught:
        source.refresh()
    assert feed.requests[-1]["Authorization"] == TOKEN  # it was sent, so it could have leaked
    shown = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in shown and "5ecret" not in shown
    assert str(caught.value).startswith(f"http feed {feed.url}: ")


# --- failures keep the last good data ----------------------------------------------------------


FAILURES = {
    "HTTP 503 Service Unavailable": (503, b'{"error": "down"}'),
    "not JSON (line 1 column 1)": (200, b"<html>oops</html>"),
    "record 1 has no 'price_per_mwh'": (200, [{"timestamp": iso(T0), "price_per_mwh": 999.0},
                                              {"timestamp": iso(T0 + HOUR_S)}]),
    "record 1: 'price_per_mwh' is not a number ('abc')": (200, hourly(999.0, "abc")),  # type: ignore[arg-type]
    "record 1: 'price_per_mwh' is 250000, beyond +-100,000 per MWh": (200, hourly(999.0, 250_000.0)),
    "record 1: interval start 2024-07-01 01:07 UTC is not on the 60-min grid": (
        200, [{"timestamp": iso(T0), "price_per_mwh": 999.0},
              {"timestamp": iso(T0 + HOUR_S + 420), "price_per_mwh": 1.0}]),
    "record 0: 'timestamp' 1719792000000 is out of range for Unix seconds (milliseconds?)": (
        200, [{"timestamp": int(T0) * 1000, "price_per_mwh": 999.0}]),
    "record 1: a second record for the interval at 2024-07-01 00:00 UTC": (200, hourly(999.0) * 2),
    "the answer has no 'data'": (200, {"prices": []}),
}


@pytest.mark.parametrize("expected", list(FAILURES))
def test_a_bad_answer_is_one_line_and_keeps_the_previous_data(feed: FeedServer, expected: str) -> None:
    items_path = "data" if "no 'data'" in expected else ""
    feed.serve({"data": hourly(30.0, 31.0)} if items_path else hourly(30.0, 31.0))
    source = provider(feed, items_path=items_path)
    source.refresh()
    before = source.cached_records()

    status, body = FAILURES[expected]
    if isinstance(body, bytes):
        feed.body, feed.status = body, status
    else:
        feed.serve(body, status)
    with pytest.raises(PriceError) as caught:
        source.refresh()

    assert str(caught.value).startswith(f"http feed {feed.url}: {expected}")
    assert "\n" not in str(caught.value)
    assert prices_of(source) == [30.0, 31.0]  # the valid 999.0 before the bad record was not merged
    assert source.cached_records() == before


def test_a_server_that_never_answers_times_out_on_time(feed: FeedServer) -> None:
    feed.serve(hourly(1.0))
    feed.delay_s = 5.0
    source = HttpPriceProvider(HttpFeedConfig(url=feed.url, timeout_s=0.5), env={})
    began = time.monotonic()
    with pytest.raises(PriceError, match=r": no answer within 0\.5 s$"):
        source.refresh()
    assert 0.4 < time.monotonic() - began < 1.5
    assert source.price(T0, T0 + HOUR_S) is None


def test_a_stopped_server_is_connection_refused(feed: FeedServer) -> None:
    feed.serve(hourly(7.0))
    source = provider(feed)
    source.refresh()
    feed.stop()
    with pytest.raises(PriceError, match=f"^http feed {feed.url}: connection refused$"):
        source.refresh()
    assert prices_of(source) == [7.0]


# --- merging -----------------------------------------------------------------------------------


def test_a_later_fetch_revises_intervals_and_extends_the_series(feed: FeedServer) -> None:
    source = provider(feed)
    feed.serve(hourly(10.0, 11.0, 12.0))
    source.refresh()
    feed.serve(hourly(21.0, 22.0, 23.0, start_s=T0 + HOUR_S))
    source.refresh()
    assert prices_of(source) == [10.0, 21.0, 22.0, 23.0]
    assert [start_s for start_s, _, _ in source.cached_records()] == [T0 + i * HOUR_S for i in range(4)]


def test_missing_intervals_are_forward_filled_and_reported(feed: FeedServer) -> None:
    records = hourly(1.0, 2.0) + hourly(5.0, start_s=T0 + 4 * HOUR_S)
    for record, carbon in zip(records, [400.0, None, 500.0], strict=True):
        if carbon is not None:
            record["co2"] = carbon
    feed.serve(records)
    source = provider(feed, carbon_path="co2")
    source.refresh()

    assert prices_of(source) == [1.0, 2.0, 2.0, 2.0, 5.0]
    carbon = source.carbon(*EVER)
    assert carbon is not None and carbon.values.tolist() == [400.0, 400.0, 400.0, 400.0, 500.0]
    assert source.notes() == [
        "http feed: 2 intervals without a record forward-filled, first 2024-07-01 02:00 UTC",
        "http feed: 3 carbon intervals forward-filled, first 2024-07-01 01:00 UTC",
    ]

    feed.serve([{**r, "co2": 1.0} for r in hourly(3.0, 4.0, start_s=T0 + 2 * HOUR_S)]
               + [{**records[1], "co2": 2.0}])
    source.refresh()
    assert prices_of(source) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert source.notes() == []  # the notes describe the latest build only


def test_no_carbon_series_when_the_first_interval_has_none(feed: FeedServer) -> None:
    feed.serve(hourly(1.0) + [{**hourly(2.0, start_s=T0 + HOUR_S)[0], "co2": 300.0}])
    source = provider(feed, carbon_path="co2")
    source.refresh()
    assert source.carbon(*EVER) is None
    assert prices_of(source) == [1.0, 2.0]
    assert source.notes() == ["http feed: no carbon series: the first interval (2024-07-01 00:00 UTC) "
                              "has no 'co2'"]


def test_intervals_older_than_history_days_are_dropped(feed: FeedServer) -> None:
    source = provider(feed, history_days=1)
    feed.serve(hourly(*range(24)))
    source.refresh()
    feed.serve(hourly(100.0, 101.0, start_s=T0 + 24 * HOUR_S))
    source.refresh()
    price = source.price(*EVER)
    assert price is not None and price.start_s == T0 + 2 * HOUR_S and len(price) == 24
    assert price.values.tolist()[-3:] == [23.0, 100.0, 101.0]
    assert source.cached_records()[0][0] == T0 + 2 * HOUR_S


def test_cached_records_restore_the_same_series_without_a_server(feed: FeedServer) -> None:
    records = hourly(-5.0, 6.0) + hourly(8.0, start_s=T0 + 3 * HOUR_S)
    feed.serve([{**r, "co2": 100.0 + i} for i, r in enumerate(records)])
    source = provider(feed, carbon_path="co2")
    source.refresh()
    saved = source.cached_records()
    assert saved == [(T0, -5.0, 100.0), (T0 + HOUR_S, 6.0, 101.0), (T0 + 3 * HOUR_S, 8.0, 102.0)]
    feed.stop()

    restarted = provider(feed, carbon_path="co2")
    restarted.restore(saved)
    assert prices_of(restarted) == prices_of(source) == [-5.0, 6.0, 6.0, 8.0]
    carbon = restarted.carbon(*EVER)
    assert carbon is not None and carbon.values.tolist() == [100.0, 101.0, 101.0, 102.0]
    assert restarted.notes() == source.notes() and restarted.cached_records() == saved

    with pytest.raises(PriceError, match="not on the 15-min grid"):
        provider(feed, resolution_min=15).restore([(T0 + 60.0, 1.0, None)])


def test_a_credential_that_is_no_valid_header_value_never_shows(feed: FeedServer) -> None:
    secret = "Bearer sk-with-newline-31337\n"
    config = HttpFeedConfig(url=feed.url, auth_env="PRICE_TOKEN", timeout_s=1)
    source = HttpPriceProvider(config, env={"PRICE_TOKEN": secret})
    with pytest.raises(PriceError) as caught:
        source.refresh()
    message = str(caught.value)
    assert "PRICE_TOKEN" in message and "sk-with-newline" not in message and "\n" not in message
    assert "sk-with-newline" not in "".join(traceback.format_exception(caught.value))


def test_a_record_far_from_the_others_is_refused_not_allowed_to_push_them_out(feed: FeedServer) -> None:
    source = HttpPriceProvider(HttpFeedConfig(url=feed.url, timeout_s=1))
    good = [{"timestamp": "2024-07-01T00:00:00Z", "price_per_mwh": 1},
            {"timestamp": "2024-07-01T01:00:00Z", "price_per_mwh": 2}]
    feed.serve(good)
    source.refresh()
    feed.serve([*good, {"timestamp": "2042-07-01T02:00:00Z", "price_per_mwh": 3}])
    with pytest.raises(PriceError, match=r"record 2: 2042-07-01 02:00 UTC is 6574 days after .*mistyped"):
        source.refresh()
    assert source.price(*EVER).values.tolist() == [1.0, 2.0]  # the good data stays
