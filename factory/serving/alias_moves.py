"""Alias moves a rollback owes the registry: noted ahead with the endpoint, made later as compare-and-sets.

A rollback of an endpoint that follows an alias (`NAME@ALIAS`) moves the alias back too, so the next
watch round does not follow the alias forward again. The move is noted in the transaction that stores
the rolled-back endpoint (actor state `serving.alias_moves`, kept across restarts) and made after it,
through the registry actor. Until it is made the endpoint leads its alias rather than follows it.

Invariants:
  * A note says: move the alias from `from_version` to `to_version`, but only if nobody moved it since
    the alias change `after_change` (its id in the alias's history; 0: never moved). The registry checks
    that in the transaction that moves it (`StateStore.set_model_alias(..., if_last_change=)`), so a
    user's promote made meanwhile has the last word, even one away and back to `from_version`.
  * A note is dropped once its move is made, found made already, or found overtaken by a user's move;
    a registry that does not answer leaves it for the next round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from factory.errors import AliasMovedError
from factory.serving.endpoints import Endpoint
from factory.serving.notes import StoredNotes
from factory.store import StateStore

ALIAS_MOVES_STATE = "serving.alias_moves"
MOVE_UNKNOWN = -1  # an alias change whose answer was lost: it may have been made

# move(model, alias, version, by, if_last_change) -> the id of the alias change made
MoveAlias = Callable[[str, str, int, str, int | None], int]


class FollowedAliasMoves:
    """The noted alias moves, one per endpoint; `move_alias` is the registry's compare-and-set move."""

    def __init__(self, store: StateStore, move_alias: MoveAlias) -> None:
        self.store = store
        self.move_alias = move_alias
        self._notes = StoredNotes(store, ALIAS_MOVES_STATE)

    def __contains__(self, name: object) -> bool:
        return name in self._notes

    def __iter__(self) -> Iterator[str]:
        return iter(self._notes)

    def from_version(self, name: str) -> int | None:
        """Where the alias pointed when the move noted for endpoint `name` was noted."""
        note: dict[str, Any] = self._notes.get(name) or {}
        return note.get("from_version")

    def version(self, endpoint: Endpoint) -> int | None:
        """The version the alias `endpoint` follows points at now (None: no such alias)."""
        assert endpoint.follows is not None
        return self.store.model_aliases(endpoint.model).get(endpoint.model, {}).get(endpoint.follows)

    def note(self, endpoint: Endpoint, by: str | None, from_version: int | None, to_version: int,
             after_change: int | None = None) -> None:
        """Note the move of `endpoint`'s alias from `from_version` to `to_version`, if nobody moves it
        after the change `after_change` (default: its latest now); in the caller's transaction."""
        assert endpoint.follows is not None
        if after_change is None:
            after_change = self.store.last_alias_change(endpoint.model, endpoint.follows)
        self._notes.put(endpoint.name, {"by": by or "serving", "from_version": from_version,
                                        "to_version": to_version, "after_change": after_change})

    def make(self, endpoint: Endpoint) -> int | None:
        """Make the move noted for `endpoint`, then drop the note; the id of the alias change made (None:
        none was: it was made already, or a user moved the alias since). A registry that does not answer
        raises, and the note stays."""
        note = self._notes.get(endpoint.name)
        made = None
        if note is not None and endpoint.follows is not None and \
                self.version(endpoint) == note["from_version"] != note["to_version"]:
            try:
                made = self.move_alias(endpoint.model, endpoint.follows, note["to_version"], note["by"],
                                       note.get("after_change"))
            except AliasMovedError:
                pass  # a user's move since the note has the last word
        self._notes.drop(endpoint.name)
        return made

    def drop(self, name: str) -> None:
        self._notes.drop(name)

    def copy(self) -> dict[str, dict[str, Any]]:
        """The notes as they are now (`StoredNotes.copy`), to `restore` if a transaction rolls back."""
        return self._notes.copy()

    def restore(self, notes: dict[str, dict[str, Any]]) -> None:
        self._notes.restore(notes)
