"""Model references as users write them: `NAME`, `NAME:VERSION`, `NAME@ALIAS`.

Names and aliases follow the job-name rule (letters, digits, '_', '.', '-'), so they are safe as
storage path segments. `latest` is not an alias that can be set: a reference without a version or an
alias means the newest version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from factory.errors import FactoryError

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
RESERVED_ALIASES = frozenset({"latest"})


class ModelRefError(FactoryError):
    """A model reference, name or alias that cannot be parsed. Exit code 2: a usage error."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model name and at most one of a version or an alias (neither: the newest version)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def version_ref(name: str, version: int) -> str:
    """`NAME:VERSION`: the one way a version is written (`parse_ref` reads it back)."""
    return str(ModelRef(name, version=version))


def alias_ref(name: str, alias: str) -> str:
    """`NAME@ALIAS`: the one way an alias is written (`parse_ref` reads it back)."""
    return str(ModelRef(name, alias=alias))


def check_name(value: str, what: str = "model name") -> str:
    """`value` if it is a valid name or alias, else a one-line `ModelRefError`."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ModelRefError(f"{what} {value!r} is invalid: use 1-128 letters, digits, '_', '.' or '-', "
                            "starting with a letter, digit or '_'")
    return value


def check_alias(alias: str) -> str:
    """A settable alias: a valid name that is not reserved."""
    check_name(alias, "alias")
    if alias in RESERVED_ALIASES:
        raise ModelRefError(f"alias {alias!r} is reserved (it always means the newest version); "
                            "choose another name")
    return alias


def parse_ref(text: str) -> ModelRef:
    """Parse `NAME`, `NAME:VERSION` or `NAME@ALIAS`."""
    if ":" in text and "@" in text:
        raise ModelRefError(f"model reference {text!r} has both a version and an alias; "
                            "write NAME:VERSION or NAME@ALIAS")
    if ":" in text:
        name, _, version = text.partition(":")
        if not (version.isascii() and version.isdigit()) or int(version) < 1:
            raise ModelRefError(f"model reference {text!r}: the version must be a number from 1, "
                                "as in NAME:3 (or use NAME@ALIAS)")
        return ModelRef(check_name(name), version=int(version))
    if "@" in text:
        name, _, alias = text.partition("@")
        alias = check_name(alias, "alias")
        return ModelRef(check_name(name)) if alias == "latest" else ModelRef(check_name(name), alias=alias)
    return ModelRef(check_name(text))


def make_ref(name: str, version: int | str | None = None, alias: str | None = None) -> ModelRef:
    """A reference from separate arguments (the SDK's), refusing a version and an alias together."""
    if version is not None and alias is not None:
        raise ModelRefError(f"model {name!r}: give a version or an alias, not both")
    if isinstance(version, str):
        if not (version.isascii() and version.isdigit()):
            raise ModelRefError(f"model {name!r}: version {version!r} is not a number")
        version = int(version)
    if version is not None and version < 1:
        raise ModelRefError(f"model {name!r}: versions start at 1, not {version}")
    if alias == "latest":
        alias = None
    return ModelRef(check_name(name), version, None if alias is None else check_name(alias, "alias"))
