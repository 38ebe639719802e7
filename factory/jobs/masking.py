"""What users are shown of a job spec: secrets in `runtime_env.env_vars` keep their names, not their values.

A `command` job's `runtime_env.env_vars` is where API keys and tokens go. The scheduler needs them as
written; everything that shows a spec to people (`factory job --json`, `factory jobs --json`, a model's
lineage and card) shows `masked_spec` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MASK = "***"


def masked_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with each `runtime_env.env_vars` value replaced by `MASK` (the names kept)."""
    runtime_env = spec.get("runtime_env")
    if not isinstance(runtime_env, Mapping) or not isinstance(runtime_env.get("env_vars"), Mapping):
        return dict(spec)
    env_vars = dict.fromkeys(runtime_env["env_vars"], MASK)
    return {**spec, "runtime_env": {**runtime_env, "env_vars": env_vars}}
