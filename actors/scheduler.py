"""SchedulerActor: the control plane's entry point. Scheduling arrives with issues 5 and 6.

Today it answers what a client needs to know about the factory (`factory_info`) and owns the
audit log's read and write API, so every component writes audit events through one place.
"""

from __future__ import annotations

from typing import Any

from actors.control_plane import ControlPlaneActor
from factory.store import AuditEvent
from factory.version import __version__


class SchedulerActor(ControlPlaneActor):
    """Control-plane entry point; later the live scheduler."""

    kind = "scheduler"

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
