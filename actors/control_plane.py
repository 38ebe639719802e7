"""Base of the head-node actors that own durable state (scheduler, grid price, registry).

Invariants:
  * Write ahead, then act: the incarnation record is persisted before the actor serves calls.
  * On (re)start the actor reloads its record from the store under its name; a start that Ray made
    after a crash is counted, written to the audit log and shown as `last_error` until cleared.
"""

from __future__ import annotations

import time
from typing import Any

from actors.base import FactoryActor
from factory.store import AuditEvent, StateStore, open_store


class ControlPlaneActor(FactoryActor):
    """A factory actor with a durable store and a persisted incarnation record."""

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        self.store: StateStore = open_store(self.config.store_path)
        self._on_store_opened()
        self._state = self.store.get_actor_state(self.name) or {}
        self._state["incarnation"] = int(self._state.get("incarnation", 0)) + 1
        self._state.setdefault("first_started_wall_s", time.time())
        if self._restarted:
            self._record_error(
                f"restarted by Ray after its process died (incarnation {self._state['incarnation']})"
            )
        with self.store.transaction():
            self.store.put_actor_state(self.name, self._state)
            if self._restarted:
                self.audit("actor.restarted", self.name, incarnation=self._state["incarnation"])

    def _on_store_opened(self) -> None:
        """Hook for subclasses that must read the store before anything else (e.g. the clock)."""

    def _incarnation(self) -> int | None:
        return int(self._state["incarnation"])

    def audit(self, action: str, subject: str = "", actor: str | None = None, **detail: Any) -> int:
        """Append an audit event stamped with factory time; return its id."""
        assert self.clock is not None, "the clock is set before any audit event is written"
        return self.store.append_audit(
            AuditEvent(
                time_s=self.clock.now_s(),
                actor=actor or self.name,
                action=action,
                subject=subject,
                detail=detail,
            )
        )
