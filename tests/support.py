"""What unit and integration tests share: where the installed commands are, a clean environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
FACTORY_BIN = str(BIN_DIR / "factory")
RAY_BIN = str(BIN_DIR / "ray")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without Ray/factory settings that would steer the CLI."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("FACTORY_") or k.startswith("RAY_ADDRESS"))}
    env.update(extra)
    return env
