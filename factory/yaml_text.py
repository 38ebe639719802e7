"""Reading YAML that users write: config files, environment overrides, job specs, tariffs.

Invariants:
  * `parse_yaml` raises `YamlTextError` (one line, with the line number where YAML knows it) for every
    text it cannot read, never a traceback: a syntax error, a value YAML's resolver turns into an
    impossible date ("2025-13-01": PyYAML raises ValueError), or nesting too deep to parse
    (PyYAML recurses once per level).
  * The caller names the file or variable; this module knows only the text.
"""

from __future__ import annotations

from typing import Any

import yaml

from factory.errors import FactoryError

MAX_DEPTH = 100  # levels of nested lists and mappings a file may have (real configs use 3-4)


class YamlTextError(FactoryError):
    """Text that is not YAML we can read; `line` is 1-based, None where unknown."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem if line is None else f"{problem} at line {line}")
        self.problem = problem
        self.line = line

    @property
    def where(self) -> str:
        """' at line N', or '' where the line is unknown."""
        return "" if self.line is None else f" at line {self.line}"


def parse_yaml(text: str) -> Any:
    """The YAML document in `text` (None for an empty one); `YamlTextError` if it cannot be read."""
    depth = _nesting_depth(text)
    if depth > MAX_DEPTH:
        raise YamlTextError(f"nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlTextError(problem, None if mark is None else mark.line + 1) from None
    except RecursionError:
        raise YamlTextError(f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # A scalar YAML resolves to a type it cannot build: "2025-13-01" looks like a date.
        raise YamlTextError(f"a value YAML cannot read ({exc}); quote it to keep it as text") from None


def _nesting_depth(text: str) -> int:
    """An upper bound on flow nesting ('[' and '{' open at once), found without parsing.

    Brackets inside quoted strings are counted too, so this overstates a deeply quoted text; only
    a depth above `MAX_DEPTH` is refused, far beyond what a real file holds.
    """
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}" and depth:
            depth -= 1
    return deepest
