"""The one clock of a factory.

Nomenclature:
  wall time       -- real Unix time (`time.time()`), seconds.
  factory time    -- what every component treats as "now", seconds since the Unix epoch. Equal to
                     wall time in `wall` mode; in `replay` mode an accelerated replay of the past:
                     factory_s = replay_start_s + (wall_s - anchor_wall_s) * speed_factor.
  anchor          -- the wall instant at which the replay stood (or would have stood) at
                     `replay_start_s`. It is chosen once, stored durably, and handed to every actor
                     in a `ClockSpec`, so all actors of one factory (and their restarted
                     incarnations) agree on the time.
  paused          -- `factory down` records the factory time it stopped at; the next `up`
                     re-anchors the replay so that it resumes from there: replayed time stands
                     still while the factory is down, and never goes back.

No scheduling code calls `time.time()` directly: it asks a `Clock`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WallFn = Callable[[], float]


class ClockSpec(BaseModel):
    """Everything needed to rebuild the same clock in any process. Immutable and serialisable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["wall", "replay"] = "wall"
    replay_start_s: float | None = None
    speed_factor: float = Field(1.0, gt=0)
    anchor_wall_s: float | None = None

    def build(self, wall: WallFn = time.time) -> Clock:
        """The clock this spec describes, reading real time from `wall`."""
        if self.mode == "wall":
            return WallClock(wall)
        if self.replay_start_s is None or self.anchor_wall_s is None:
            raise ValueError("a replay ClockSpec needs replay_start_s and anchor_wall_s")
        return ReplayClock(self.replay_start_s, self.speed_factor, self.anchor_wall_s, wall)


class Clock(ABC):
    """Factory time. Subclasses differ only in how wall time maps to factory time."""

    mode: str
    speed_factor: float

    def __init__(self, wall: WallFn) -> None:
        self._wall = wall

    @abstractmethod
    def now_s(self) -> float:
        """Factory time now, seconds since the Unix epoch."""

    @abstractmethod
    def spec(self) -> ClockSpec:
        """The spec that rebuilds this clock elsewhere."""

    def now(self) -> datetime:
        """Factory time now as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_s(), tz=UTC)

    def wall_seconds_for(self, factory_seconds: float) -> float:
        """Real seconds that pass while `factory_seconds` of factory time pass."""
        return factory_seconds / self.speed_factor

    def sleep(self, factory_seconds: float) -> None:
        """Block for `factory_seconds` of factory time."""
        time.sleep(max(0.0, self.wall_seconds_for(factory_seconds)))


class WallClock(Clock):
    """Factory time is wall time."""

    mode = "wall"
    speed_factor = 1.0

    def __init__(self, wall: WallFn = time.time) -> None:
        super().__init__(wall)

    def now_s(self) -> float:  # noqa: D102
        return self._wall()

    def spec(self) -> ClockSpec:  # noqa: D102
        return ClockSpec(mode="wall")


class ReplayClock(Clock):
    """An accelerated replay: `speed_factor` factory seconds pass per wall second from the anchor."""

    mode = "replay"

    def __init__(
        self,
        replay_start_s: float,
        speed_factor: float,
        anchor_wall_s: float,
        wall: WallFn = time.time,
    ) -> None:
        if speed_factor <= 0:
            raise ValueError(f"speed_factor must be > 0, got {speed_factor}")
        super().__init__(wall)
        self.replay_start_s = replay_start_s
        self.speed_factor = speed_factor
        self.anchor_wall_s = anchor_wall_s

    def now_s(self) -> float:  # noqa: D102
        return self.replay_start_s + (self._wall() - self.anchor_wall_s) * self.speed_factor

    def spec(self) -> ClockSpec:  # noqa: D102
        return ClockSpec(
            mode="replay",
            replay_start_s=self.replay_start_s,
            speed_factor=self.speed_factor,
            anchor_wall_s=self.anchor_wall_s,
        )


def resolve_clock_spec(
    mode: Literal["wall", "replay"],
    replay_start: datetime | None,
    speed_factor: float,
    stored: ClockSpec | None,
    now_wall_s: float,
    paused_at_s: float | None = None,
) -> ClockSpec:
    """Resolve the spec a factory runs with: the stored replay continues while unchanged.

    Actors that restart keep the stored anchor, so factory time never jumps back. A replay paused
    by `factory down` at `paused_at_s` resumes from that factory time. Changing the replay's start
    or speed starts a new replay anchored at `now_wall_s`.
    """
    if mode == "wall":
        return ClockSpec(mode="wall")
    if replay_start is None:
        raise ValueError("replay mode needs replay_start")
    wanted_start_s = replay_start.timestamp()
    if (
        stored is not None
        and stored.mode == "replay"
        and stored.replay_start_s == wanted_start_s
        and stored.speed_factor == speed_factor
    ):
        if paused_at_s is None:
            return stored
        return stored.model_copy(
            update={"anchor_wall_s": now_wall_s - (paused_at_s - wanted_start_s) / speed_factor}
        )
    return ClockSpec(
        mode="replay",
        replay_start_s=wanted_start_s,
        speed_factor=speed_factor,
        anchor_wall_s=now_wall_s,
    )


def aware_time_s(text: str) -> float:
    """Unix seconds of an ISO 8601 time that carries its UTC offset (a `Z` counts).

    Raises:
        ValueError: not ISO 8601, or no offset (a naive time would silently mean the machine's zone);
            the message says what to write.
    """
    stripped = text.strip()
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2025-07-01T18:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add one such as +00:00 (or Z), e.g. "
                         f"{stripped}Z") from None
    return moment.timestamp()
