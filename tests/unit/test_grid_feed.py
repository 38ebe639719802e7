"""Demand-response events from an HTTP feed (`prices.grid_events_http`), against a real server on
127.0.0.1: parsed whole, added once, a failing feed retried with backoff and never leaking its key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.price_config import GridEventFeedConfig
from factory.prices.grid_events import GridEventBook
from factory.prices.grid_feed import GridEventFeed
from factory.store import AuditEvent, SQLiteStore
from tests.price_server import FeedServer
from tests.unit.test_prices_feed import FakeMonotonic

T0 = 1_719_792_000.0  # 2024-07-01 00:00 UTC


@pytest.fixture
def server() -> Iterator[FeedServer]:
    made = FeedServer()
    yield made
    made.stop()


EVENTS = [
    {"id": "dr-1", "start": "2024-07-01T02:00:00Z", "end": "2024-07-01T03:00:00Z", "target_kw": 500},
    {"id": "dr-2", "start": "2024-07-01T05:00:00+00:00", "end": "2024-07-01T06:00:00+00:00",
     "reduce_pct": 25, "source": "utility"},
]


@pytest.fixture
def book(tmp_path: Path) -> Iterator[GridEventBook]:
    store = SQLiteStore(tmp_path / "factory.db")

    def audit(action: str, subject: str = "", actor: str | None = None, **detail: Any) -> int:
        return store.append_audit(AuditEvent(time_s=T0, actor=actor or "scheduler", action=action,
                                             subject=subject, detail=detail))

    yield GridEventBook(store, lambda: T0, audit)
    store.close()


def feed_of(server: FeedServer, clock: FakeMonotonic, **settings: Any) -> GridEventFeed:
    config = GridEventFeedConfig(url=server.url, poll_interval_s=60.0, timeout_s=2.0, **settings)
    return GridEventFeed(config, env={"DR_KEY": "s3cr3t-key"}, monotonic=clock)


def test_the_feeds_events_are_added_once_each_with_their_source(server: FeedServer,
                                                                 book: GridEventBook) -> None:
    clock = FakeMonotonic()
    feed = feed_of(server, clock)
    assert feed.status()["stale"] and feed.status()["stale_reason"] == "not polled yet"
    server.serve({"events": EVENTS})
    feed.config.items_path = "events"

    rows = feed.poll_if_due()
    assert rows is not None and [row.event_id for row in rows] == ["dr-1", "dr-2"]
    added = book.add_rows(rows, "http", feed.description, "grid-events-http")
    assert [(e.event_id, e.target_kw, e.reduce_pct, e.source) for e in added] == [
        ("http-dr-1", 500.0, None, feed.description), ("http-dr-2", None, 25.0, "utility")]
    assert feed.poll_if_due() is None  # not due again for a minute
    clock.now_s += 60.0
    again = feed.poll_if_due()
    assert again is not None and book.add_rows(again, "http", feed.description, "grid-events-http") == []
    assert not feed.status()["stale"] and feed.status()["age_s"] == 0.0


@pytest.mark.parametrize(("bad", "message"), [
    ({"start": "2024-07-01T05:00:00Z", "end": "2024-07-01T06:00:00Z", "reduce_pct": 150},
     "event 2: reduce_pct 150 is out of range"),
    ({"start": "2024-07-01T05:00:00Z", "reduce_pct": 10}, "event 2: end "),
    ({"start": "2024-07-01T05:00:00Z", "end": "2024-07-01T06:00:00Z"},
     "event 2: give target_kw or reduce_pct"),
    ("not an object", "every event must be a JSON object"),
])
def test_one_bad_event_refuses_the_whole_answer_naming_the_event_and_field(
        server: FeedServer, book: GridEventBook, bad: Any, message: str) -> None:
    feed = feed_of(server, FakeMonotonic())
    server.serve([EVENTS[0], bad])

    assert feed.poll_if_due() is None
    assert feed.last_error is not None and message in feed.last_error, feed.last_error
    assert feed.last_error.startswith(f"grid event feed {server.url}: ")
    assert "\n" not in feed.last_error and feed.status()["stale"]


def test_a_failing_feed_is_retried_after_a_doubling_delay_and_recovers(server: FeedServer) -> None:
    clock = FakeMonotonic()
    feed = feed_of(server, clock, max_backoff_s=15.0)
    server.serve({"error": "down"}, status=503)
    assert feed.poll_if_due() is None and "HTTP 503" in (feed.last_error or "")
    for delay_s, failures in ((5.0, 2), (10.0, 3), (15.0, 4), (15.0, 5)):  # doubling, up to the cap
        clock.now_s += delay_s - 0.5
        assert feed.poll_if_due() is None and feed.consecutive_failures == failures - 1  # not due yet
        clock.now_s += 0.5
        assert feed.poll_if_due() is None and feed.consecutive_failures == failures

    server.serve(EVENTS)
    clock.now_s += 15.0
    assert feed.poll_if_due() is not None and feed.last_error is None and not feed.status()["stale"]


def test_the_key_goes_in_its_header_and_never_into_an_error(server: FeedServer) -> None:
    feed = feed_of(server, FakeMonotonic(), auth_env="DR_KEY", auth_header="X-Api-Key")
    server.echo = True  # an error page that quotes the request's headers back

    assert feed.poll_if_due() is None
    assert server.requests[-1]["X-Api-Key"] == "s3cr3t-key"
    assert "s3cr3t-key" not in (feed.last_error or "") and "s3cr3t-key" not in str(feed.status())

    # A server that quotes the token back in an event (a field this feed names in its error): masked, also
    # when the variable holds 'Bearer <token>' and only the token comes back.
    bearer = GridEventFeed(GridEventFeedConfig(url=server.url, auth_env="DR_KEY"),
                           env={"DR_KEY": "Bearer tok-0123456789"})
    server.echo = False
    server.serve([{"start": "tok-0123456789", "end": "2024-07-01T06:00:00Z", "target_kw": 1}])
    assert bearer.poll_if_due() is None
    assert "event 1: start" in (bearer.last_error or "") and "tok-0123456789" not in (bearer.last_error or "")
    assert server.requests[-1]["Authorization"] == "Bearer tok-0123456789"

    unset = GridEventFeed(GridEventFeedConfig(url=server.url, auth_env="NOT_SET"), env={})
    assert unset.poll_if_due() is None
    assert "variable NOT_SET (prices.grid_events_http.auth_env) is not set" in (unset.last_error or "")
