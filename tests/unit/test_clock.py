"""The factory clock: wall and replay time, specs shared across processes, anchor reuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from factory.clock import ClockSpec, ReplayClock, WallClock, resolve_clock_spec

JULY_1_2024 = datetime(2024, 7, 1, tzinfo=UTC)
HOUR_S = 3600.0


class FakeWall:
    """A wall clock a test moves by hand."""

    def __init__(self, now_s: float = 1_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


# --- WallClock ---------------------------------------------------------------------------------


def test_wall_clock_reads_the_injected_wall() -> None:
    wall = FakeWall(1_700_000_000.0)
    clock = WallClock(wall)

    assert clock.now_s() == 1_700_000_000.0
    wall.advance(2.5)
    assert clock.now_s() == 1_700_000_002.5
    assert clock.now() == datetime.fromtimestamp(1_700_000_002.5, tz=UTC)


def test_wall_clock_runs_at_real_speed() -> None:
    clock = WallClock(FakeWall())

    assert clock.wall_seconds_for(HOUR_S) == HOUR_S
    assert clock.spec() == ClockSpec(mode="wall")


# --- ReplayClock -------------------------------------------------------------------------------


def test_replay_starts_at_replay_start_at_the_anchor() -> None:
    wall = FakeWall(5_000.0)
    clock = ReplayClock(JULY_1_2024.timestamp(), 1800.0, anchor_wall_s=5_000.0, wall=wall)

    assert clock.now() == JULY_1_2024


def test_replay_at_1800x_runs_an_hour_per_two_real_seconds() -> None:
    wall = FakeWall(5_000.0)
    clock = ReplayClock(JULY_1_2024.timestamp(), 1800.0, anchor_wall_s=5_000.0, wall=wall)

    wall.advance(2.0)

    assert clock.now() == JULY_1_2024 + timedelta(hours=1)
    assert clock.wall_seconds_for(HOUR_S) == pytest.approx(2.0)


def test_replay_time_follows_the_formula_from_an_earlier_anchor() -> None:
    start_s = JULY_1_2024.timestamp()
    wall = FakeWall(10_000.0)
    clock = ReplayClock(start_s, 60.0, anchor_wall_s=9_000.0, wall=wall)

    assert clock.now_s() == start_s + (10_000.0 - 9_000.0) * 60.0


def test_replay_wall_seconds_for_scales_with_speed() -> None:
    clock = ReplayClock(0.0, 3600.0, anchor_wall_s=0.0, wall=FakeWall())

    assert clock.wall_seconds_for(HOUR_S) == pytest.approx(1.0)
    assert clock.wall_seconds_for(24 * HOUR_S) == pytest.approx(24.0)


@pytest.mark.parametrize("speed", [0.0, -1.0])
def test_replay_rejects_non_positive_speed(speed: float) -> None:
    with pytest.raises(ValueError, match="speed_factor"):
        ReplayClock(0.0, speed, anchor_wall_s=0.0, wall=FakeWall())


def test_now_is_timezone_aware_utc() -> None:
    for clock in (WallClock(FakeWall()), ReplayClock(0.0, 2.0, 0.0, FakeWall())):
        now = clock.now()
        assert now.tzinfo is not None
        assert now.utcoffset() == timedelta(0)


# --- ClockSpec ---------------------------------------------------------------------------------


def test_replay_spec_survives_json_and_rebuilds_an_agreeing_clock() -> None:
    wall = FakeWall(1_700_000_123.456)
    original = ReplayClock(JULY_1_2024.timestamp(), 1800.0, anchor_wall_s=1_700_000_000.1, wall=wall)

    # What the driver hands to an actor in another process.
    wire = original.spec().model_dump_json()
    rebuilt = ClockSpec.model_validate_json(wire).build(wall)

    assert isinstance(rebuilt, ReplayClock)
    assert rebuilt.now_s() == original.now_s()
    wall.advance(7.25)
    assert rebuilt.now_s() == original.now_s()
    assert rebuilt.spec() == original.spec()


def test_wall_spec_survives_json() -> None:
    wall = FakeWall(42.0)

    rebuilt = ClockSpec.model_validate_json(WallClock(wall).spec().model_dump_json()).build(wall)

    assert isinstance(rebuilt, WallClock)
    assert rebuilt.now_s() == 42.0


def test_replay_spec_without_anchor_cannot_build() -> None:
    spec = ClockSpec(mode="replay", replay_start_s=JULY_1_2024.timestamp(), speed_factor=1800.0)

    with pytest.raises(ValueError, match="anchor_wall_s"):
        spec.build(FakeWall())


def test_spec_rejects_non_positive_speed_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ClockSpec(mode="replay", replay_start_s=0.0, speed_factor=0.0, anchor_wall_s=0.0)
    with pytest.raises(ValidationError):
        ClockSpec.model_validate_json('{"mode": "wall", "speed": 2}')


# --- resolve_clock_spec ------------------------------------------------------------------------


def test_resolve_wall_mode_gives_a_wall_spec() -> None:
    spec = resolve_clock_spec("wall", None, 1800.0, stored=None, now_wall_s=123.0)

    assert spec == ClockSpec(mode="wall")


def test_resolve_new_replay_is_anchored_now() -> None:
    spec = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)

    assert spec.anchor_wall_s == 5_000.0
    assert spec.build(FakeWall(5_000.0)).now() == JULY_1_2024


def test_resolve_reuses_stored_replay_so_time_continues() -> None:
    first = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)
    wall = FakeWall(5_010.0)
    before_restart = first.build(wall).now_s()

    wall.advance(3.0)  # the factory is brought up again a little later
    again = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=first, now_wall_s=wall())

    assert again == first
    after_restart = again.build(wall).now_s()
    assert after_restart == pytest.approx(before_restart + 3.0 * 1800.0)


def test_resolve_restarts_replay_when_speed_changes() -> None:
    stored = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)

    spec = resolve_clock_spec("replay", JULY_1_2024, 3600.0, stored=stored, now_wall_s=6_000.0)

    assert spec.speed_factor == 3600.0
    assert spec.anchor_wall_s == 6_000.0
    assert spec.build(FakeWall(6_000.0)).now() == JULY_1_2024


def test_resolve_restarts_replay_when_start_changes() -> None:
    stored = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)
    new_start = JULY_1_2024 + timedelta(days=30)

    spec = resolve_clock_spec("replay", new_start, 1800.0, stored=stored, now_wall_s=6_000.0)

    assert spec.anchor_wall_s == 6_000.0
    assert spec.build(FakeWall(6_000.0)).now() == new_start


def test_resolve_replay_after_stored_wall_spec_is_anchored_now() -> None:
    spec = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=ClockSpec(mode="wall"),
                              now_wall_s=7_000.0)

    assert spec.mode == "replay"
    assert spec.anchor_wall_s == 7_000.0


def test_resolve_replay_without_start_raises() -> None:
    with pytest.raises(ValueError, match="replay_start"):
        resolve_clock_spec("replay", None, 1800.0, stored=None, now_wall_s=0.0)


def test_resolve_resumes_a_paused_replay_where_down_left_it() -> None:
    first = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)
    # `factory down` 10 real s later: factory time stands at 5 factory hours after the start.
    paused_at_s = first.build(wall=lambda: 5_010.0).now_s()
    assert paused_at_s == JULY_1_2024.timestamp() + 10 * 1800

    # `factory up` a real day later resumes from the paused time, not 5 years on.
    resumed = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=first,
                                 now_wall_s=91_410.0, paused_at_s=paused_at_s)
    assert resumed.replay_start_s == first.replay_start_s
    assert resumed.build(wall=lambda: 91_410.0).now_s() == pytest.approx(paused_at_s)
    assert resumed.build(wall=lambda: 91_412.0).now_s() == pytest.approx(paused_at_s + 3600)


def test_resolve_ignores_a_pause_when_the_replay_changes() -> None:
    first = resolve_clock_spec("replay", JULY_1_2024, 1800.0, stored=None, now_wall_s=5_000.0)

    other = resolve_clock_spec("replay", JULY_1_2024, 60.0, stored=first, now_wall_s=9_000.0,
                               paused_at_s=JULY_1_2024.timestamp() + 99_999)

    assert other.build(wall=lambda: 9_000.0).now_s() == JULY_1_2024.timestamp()
