"""Work the endpoint manager wrote ahead and has not yet seen done, kept in the store across restarts.

Each note names an endpoint. It is written in the transaction that stores the change needing the work
(`put` joins the caller's transaction) and dropped once the work is done, so a restart between the two
finds the note and the next watch round finishes the work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from factory.store import StateStore


class StoredNotes:
    """{endpoint name: detail (JSON)} under actor-state key `key`; every change is written through."""

    def __init__(self, store: StateStore, key: str) -> None:
        self._store, self._key = store, key
        self._notes: dict[str, dict[str, Any]] = dict((store.get_actor_state(key) or {}).get("notes", {}))

    def copy(self) -> dict[str, dict[str, Any]]:
        """The notes as they are now, for `restore`."""
        return dict(self._notes)

    def restore(self, notes: dict[str, dict[str, Any]]) -> None:
        """Go back to `notes` (a `copy`) in memory only: after a transaction that wrote some rolled back."""
        self._notes = dict(notes)

    def __contains__(self, name: object) -> bool:
        return name in self._notes

    def __iter__(self) -> Iterator[str]:
        """The noted names, sorted, as they are now (safe to change the notes while iterating)."""
        return iter(sorted(self._notes))

    def __len__(self) -> int:
        return len(self._notes)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._notes.get(name)

    def put(self, name: str, detail: dict[str, Any] | None = None) -> None:
        self._notes[name] = dict(detail or {})
        self._write()

    def drop(self, name: str) -> None:
        if self._notes.pop(name, None) is not None:
            self._write()

    def _write(self) -> None:
        self._store.put_actor_state(self._key, {"notes": dict(sorted(self._notes.items()))})
