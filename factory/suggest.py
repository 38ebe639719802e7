"""Did-you-mean hints for error messages: the one place that guesses what a user meant to type.

Invariants: pure (no I/O); a hint is empty when nothing known is close enough, so a message reads the
same with or without one; cutoffs are difflib ratios (0.6 is difflib's own default).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known word most like `word`, or None if none is at least `cutoff` alike."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, known: Iterable[str], *, cutoff: float = 0.6, otherwise: str = "",
                 lead: str = ", ") -> str:
    """`", did you mean 'x'?"` for the closest known word, else `otherwise` (e.g. a list of them)."""
    guess = closest(word, known, cutoff)
    return f"{lead}did you mean '{guess}'?" if guess is not None else otherwise


def unknown_field(key: str, known: Iterable[str], where: str = "") -> str:
    """The message for a key that is no field: the closest field, or else every field there is."""
    known = list(known)
    listed = f"; known fields: {', '.join(known)}"
    return f"unknown field '{key}'{where}" + did_you_mean(key, known, otherwise=listed)
