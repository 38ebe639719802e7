"""When a polled feed asks again, and how its failures are counted: the rule the price feed and the grid
event feed share (`factory.prices.feed.PriceFeed`, `factory.prices.grid_feed.GridEventFeed`).

Invariants:
  * A success schedules the next poll `interval_s` later; a failure retries after a delay that doubles
    from `FIRST_RETRY_S` (or the interval, if shorter) up to `max_backoff_s`.
  * A feed is stale, and says why, before its first answer and while its last poll failed.
  * Times are the injected monotonic clock's (real seconds), never factory time.
"""

from __future__ import annotations

from collections.abc import Callable

FIRST_RETRY_S = 5.0


class PollSchedule:
    """The next poll's time, the last success and the failures since it, of one polled feed."""

    def __init__(self, max_backoff_s: float, monotonic: Callable[[], float]) -> None:
        self.max_backoff_s = max_backoff_s
        self._monotonic = monotonic
        self.next_poll_s = monotonic()
        self.last_success_s: float | None = None
        self.consecutive_failures = 0
        self.last_error: str | None = None

    def due(self) -> bool:
        """Whether a poll is due now."""
        return self._monotonic() >= self.next_poll_s

    def failed(self, error: str, interval_s: float) -> None:
        """Count a failed poll (`error`: one line, free of credentials) and put the next one off."""
        self.consecutive_failures += 1
        self.last_error = error
        first_retry_s = min(interval_s, FIRST_RETRY_S)
        delay_s = min(self.max_backoff_s, first_retry_s * 2 ** (self.consecutive_failures - 1))
        self.next_poll_s = self._monotonic() + delay_s

    def succeeded(self, interval_s: float) -> None:
        """Record an answer now; the next poll is `interval_s` later."""
        self.consecutive_failures, self.last_error = 0, None
        self.last_success_s = self._monotonic()
        self.next_poll_s = self.last_success_s + interval_s

    def age_s(self) -> float | None:
        """Real seconds since the last answer (None: none yet)."""
        return None if self.last_success_s is None else self._monotonic() - self.last_success_s

    def next_poll_in_s(self) -> float:
        """Real seconds until the next poll is due (0: due now)."""
        return max(0.0, self.next_poll_s - self._monotonic())

    def stale_reason(self) -> str | None:
        """Why the feed is stale ("feed not answering: ...", "not polled yet"), or None."""
        if self.last_error is not None:
            return f"feed not answering: {self.last_error}"
        return "not polled yet" if self.last_success_s is None else None


class Polled:
    """A feed that polls on a `PollSchedule`: its failures and last error, read from the schedule."""

    schedule: PollSchedule

    @property
    def consecutive_failures(self) -> int:
        """Failed polls since the last answer."""
        return self.schedule.consecutive_failures

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed (one line, never a credential); None after an answer."""
        return self.schedule.last_error
