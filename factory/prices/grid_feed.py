"""`GridEventFeed`: demand-response events polled from an HTTP endpoint (`prices.grid_events_http`).

The SchedulerActor polls it every control round when due and adds each event once to its
`GridEventBook` (as `http-<id>`), like the rows of `prices.grid_events_path`.

Invariants (the price feed's rules, `factory.prices.feed`):
  * A failing feed never raises out of `poll_if_due`: it counts the failure, keeps `last_error` (one
    line, never the credential) and retries after a delay that doubles from `FIRST_RETRY_S` up to
    `max_backoff_s` (`factory.prices.poll.PollSchedule`, as the price feed). The events it gave before stay
    in the book.
  * An answer is checked whole before any event of it is used: one bad event refuses the answer.
  * The feed is stale, and says why, before its first answer and while its last poll failed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from factory.errors import PriceError
from factory.price_config import GridEventFeedConfig
from factory.prices.grid_events import EventRow, GridEventError, event_rows
from factory.prices.http import MISSING, credential, get_json, scrubbed, url_description, walk
from factory.prices.poll import Polled, PollSchedule


class GridEventFeed(Polled):
    """Polls `config.url` for events (see the module docstring)."""

    def __init__(self, config: GridEventFeedConfig, env: Mapping[str, str] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.description = f"grid event feed {url_description(config.url)}"
        self._env = os.environ if env is None else env
        self.schedule = PollSchedule(config.max_backoff_s, monotonic)

    def poll_if_due(self) -> list[EventRow] | None:
        """The events of a poll made now if one was due and answered; None otherwise (see `last_error`)."""
        if not self.schedule.due():
            return None
        try:
            rows = self._events()
        except Exception as error:  # noqa: BLE001 - a failing feed must never stop the scheduler's thread
            # Only the feed's own errors are known to be free of credentials.
            why = str(error) if isinstance(error, PriceError) else \
                f"unexpected {type(error).__name__} while polling"
            self.schedule.failed(f"{self.description}: {why}", self.config.poll_interval_s)
            return None
        self.schedule.succeeded(self.config.poll_interval_s)
        return rows

    def status(self) -> dict[str, Any]:
        """Where the events come from, whether the feed is stale and why, and the age of its last answer."""
        reason = self.schedule.stale_reason()
        return {"source": self.description, "stale": reason is not None, "stale_reason": reason,
                "age_s": self.schedule.age_s(), "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error}

    def _events(self) -> list[EventRow]:
        secret = credential(self._env, self.config.auth_env, "prices.grid_events_http.auth_env")
        try:
            document = get_json(self.config.url, self.config.timeout_s, self.config.auth_header, secret)
            items = walk(document, self.config.items_path)
            if items is MISSING or not isinstance(items, list):
                raise PriceError(f"the answer has no list at '{self.config.items_path}' "
                                 "(prices.grid_events_http.items_path)")
            if not all(isinstance(item, dict) for item in items):
                raise PriceError("every event must be a JSON object (start, end, target_kw or reduce_pct)")
            return event_rows(((f"event {index}", item) for index, item in enumerate(items, start=1)),
                              GridEventError)
        except (PriceError, GridEventError) as error:
            raise PriceError(scrubbed(" ".join(str(error).split()), secret)) from None  # one line
