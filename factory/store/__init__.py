"""Durable control-plane state behind a small interface; SQLite by default."""

from __future__ import annotations

from pathlib import Path

from factory.store.base import (
    AliasChange,
    AuditEvent,
    JobEvent,
    JobRow,
    ModelVersionRow,
    RequestRecord,
    RequestReusedError,
    StateConflictError,
    StateStore,
)
from factory.store.sqlite import SQLiteStore


def open_store(location: str | Path) -> StateStore:
    """Open (creating and migrating if needed) the state store at `location`, a file path."""
    return SQLiteStore(location)


__all__ = ["AliasChange", "AuditEvent", "JobEvent", "JobRow", "ModelVersionRow", "RequestRecord",
           "RequestReusedError", "SQLiteStore", "StateConflictError", "StateStore", "open_store"]
