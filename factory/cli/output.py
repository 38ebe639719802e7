"""JSON as the CLI prints it: standard JSON only, so a number that is not finite is printed as null.

Python's `json` writes NaN and Infinity, which no strict JSON reader accepts (and `jq` rejects), and
pydantic's `model_dump(mode="json")` leaves an infinite float as it is. Every `--json` output goes
through `json_text`, which writes what a reader can parse: a non-finite number has no value to give.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every float that is not finite (NaN, +-inf), at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """`json.dumps(value, indent=indent)` with non-finite numbers as null (never NaN or Infinity)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)
