"""GridPriceActor: the factory's clock today; the electricity price and carbon feed from issue 4.

It owns the clock because prices are what the clock replays: in replay mode the factory's time is
the time of the price trace being replayed.

Invariants:
  * The clock spec is resolved once per (replay start, speed) and stored (meta key `clock_spec`)
    before it is used, so restarts and later `factory up`s continue the same replay.
"""

from __future__ import annotations

import time
from typing import Any

from actors.control_plane import ControlPlaneActor
from factory.clock import ClockSpec, resolve_clock_spec

CLOCK_SPEC_META_KEY = "clock_spec"
CLOCK_PAUSED_META_KEY = "clock_paused_at_s"


class GridPriceActor(ControlPlaneActor):
    """Owns the factory clock (and, later, price/carbon feeds and forecasts)."""

    kind = "grid_price"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config, clock_spec=None)

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
