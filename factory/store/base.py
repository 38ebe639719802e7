"""The durable state store's interface: what the control plane needs, not how it is stored.

Invariants every implementation keeps:
  * A write returns only after it is durable; a crash loses nothing already committed.
  * Writes inside one `transaction()` commit together or not at all. Transactions nest: an inner
    `transaction()` joins the outer one.
  * Opening a store migrates its schema to `schema_version()` of this code, one versioned step at
    a time, each step atomic; a store written by a newer schema is refused, never downgraded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from pydantic import BaseModel, Field


class AuditEvent(BaseModel):
    """One entry of the audit log: who did what to which subject, at what factory time."""

    id: int | None = None
    time_s: float = Field(description="Factory time of the event, seconds since the Unix epoch.")
    actor: str = Field(description="Who acted: a user ('cli:alice') or a component ('scheduler').")
    action: str = Field(description="Dotted verb, e.g. 'factory.up', 'actor.restarted'.")
    subject: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class StateStore(ABC):
    """Durable control-plane state: metadata, per-actor state, the audit log (jobs etc. later)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives (a file path or a server URI), for status output."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store is at (always this code's latest once opened)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes atomically; re-entrant."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A factory-wide metadata value, or None."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Set a factory-wide metadata value."""

    @abstractmethod
    def delete_meta(self, key: str) -> None:
        """Remove a factory-wide metadata value (no error if absent)."""

    @abstractmethod
    def get_actor_state(self, name: str) -> dict[str, Any] | None:
        """The state an actor last persisted under its name, or None."""

    @abstractmethod
    def put_actor_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace an actor's persisted state (JSON-serialisable)."""

    @abstractmethod
    def append_audit(self, event: AuditEvent) -> int:
        """Append to the audit log; return the event's id (ids increase)."""

    @abstractmethod
    def list_audit(
        self, limit: int = 100, action_prefix: str | None = None
    ) -> list[AuditEvent]:
        """The newest `limit` audit events (optionally only actions under a prefix), oldest first."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""
