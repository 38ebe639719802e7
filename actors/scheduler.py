"""SchedulerActor: the control plane's entry point. Scheduling arrives with issues 5 and 6.

Today it answers what a client needs to know about the factory (`factory_info`), owns the audit
log's read and write API (so every component writes audit events through one place), and runs the
control loop: every `scheduler.interval_s` wall seconds it reconciles the cluster with the factory
(a node that joined, e.g. by autoscaling, gets its telemetry actor). A failed step is recorded as
`last_error` and the loop goes on.
"""

from __future__ import annotations

import threading
from typing import Any

from actors.control_plane import ControlPlaneActor
from factory.store import AuditEvent
from factory.version import __version__


class SchedulerActor(ControlPlaneActor):
    """Control-plane entry point; later the live scheduler."""

    kind = "scheduler"

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._control_loop, name="control-loop", daemon=True)
        self._loop.start()

    def reconcile(self) -> list[str]:
        """Run one control step: create the telemetry actors of nodes that lack one; return them."""
        # Imported here: factory.control_plane imports this module to create the actor.
        from factory.control_plane import ensure_telemetry_actors, factory_actor_names

        assert self.clock is not None
        before = set(factory_actor_names())
        handles = ensure_telemetry_actors(
            self.config.model_dump(mode="json"), self.clock.spec().model_dump()
        )
        created = sorted(set(handles) - before)
        for name in created:
            self.audit("actor.created", name, reason="node joined")
        return created

    def stop_control_loop(self, timeout_s: float = 30.0) -> bool:
        """Stop the control loop and wait for a step in progress; return whether it stopped.

        `factory down` calls this first, so that no step re-creates an actor being removed.
        """
        self._stopping.set()
        self._loop.join(timeout_s)
        return not self._loop.is_alive()

    def _control_loop(self) -> None:
        while not self._stopping.wait(self.config.scheduler.interval_s):
            try:
                self.reconcile()
            except Exception as exc:  # noqa: BLE001 - one failed step must not stop the loop
                self._record_error(exc)

    def factory_info(self) -> dict[str, Any]:
        """Version, effective config, state store and clock of this factory."""
        assert self.clock is not None
        return {
            "version": __version__,
            "config": self.config.model_dump(mode="json"),
            "config_fingerprint": self.config.fingerprint(),
            "state_store": {
                "path": self.store.location,
                "schema_version": self.store.schema_version(),
            },
            "clock": self.clock.spec().model_dump(),
        }

    def record_audit(
        self, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None
    ) -> int:
        """Append an audit event on behalf of `actor` (a user or component); return its id."""
        return self.audit(action, subject, actor=actor, **(detail or {}))

    def audit_log(self, limit: int = 100, action_prefix: str | None = None) -> list[AuditEvent]:
        """The newest `limit` audit events, oldest first."""
        return self.store.list_audit(limit=limit, action_prefix=action_prefix)
