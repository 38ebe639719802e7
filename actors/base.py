"""Behaviour every factory actor shares: identity, clock, and an honest `health()` report.

Invariants:
  * An actor's constructor is its recovery path: Ray re-runs it with the same arguments after a
    crash, so everything the actor needs to continue is either in those arguments or in the store.
  * `last_error` holds the newest error an actor caught and survived, for operators to see.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import ray

from factory.clock import Clock, ClockSpec
from factory.config import FactoryConfig
from factory.health import ActorHealth
from factory.version import __version__


class FactoryActor:
    """Base of all factory actors. `kind` names the actor class in health reports."""

    kind: ClassVar[str] = "actor"

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        self.name = name
        self.config = FactoryConfig.model_validate(config)
        self._started_monotonic_s = time.monotonic()
        context = ray.get_runtime_context()
        self._node_id = context.get_node_id()
        self._restarted = bool(context.was_current_actor_reconstructed)
        self._last_error: str | None = None
        self.clock: Clock | None = None
        if clock_spec is not None:
            self.clock = ClockSpec.model_validate(clock_spec).build()

    def health(self) -> ActorHealth:
        """Version, node, uptime, incarnation and last error of this actor."""
        return ActorHealth(
            name=self.name,
            kind=self.kind,
            version=__version__,
            node_id=self._node_id,
            node_ip=ray.util.get_node_ip_address(),
            pid=os.getpid(),
            uptime_s=time.monotonic() - self._started_monotonic_s,
            incarnation=self._incarnation(),
            restarted=self._restarted,
            last_error=self._last_error,
            clock=self.clock.spec() if self.clock is not None else None,
        )

    def ping(self) -> str:
        """Cheap liveness probe."""
        return self.name

    def _incarnation(self) -> int | None:
        """This incarnation's number, where the actor persists it (control-plane actors do)."""
        return None

    def _run_every(self, interval_s: float, step: Callable[[], object], name: str) -> threading.Event:
        """Run `step` every `interval_s` real seconds on a daemon thread; set the event to stop.

        A step that raises is recorded as `last_error` and the loop goes on: one bad round (a
        slow GCS, a device error) never stops the actor's background work.
        """
        stopping = threading.Event()

        def loop() -> None:
            while not stopping.wait(interval_s):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - see the docstring
                    self._record_error(exc)

        self._loop_thread = threading.Thread(target=loop, name=name, daemon=True)
        self._loop_thread.start()
        return stopping

    def _record_error(self, error: BaseException | str) -> None:
        self._last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
