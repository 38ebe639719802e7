"""Keep the CLI's stdout for the command's own output, whatever Ray prints in the background.

A Ray driver runs a thread (`ray_listen_error_messages`) that prints cluster-wide notices, such as the
raylet's "N PYTHON worker processes have been started", to `sys.stdout`, even with
`log_to_driver=False`. In the middle of `factory submit --wait --json` that breaks the JSON a script
reads. `RayNoticesToStderr` stands in for `sys.stdout` and sends what Ray's threads write to stderr;
everything else passes through unchanged.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

RAY_THREAD_PREFIX = "ray_"


class RayNoticesToStderr:
    """A `sys.stdout` that writes from threads named `ray_*` to stderr instead."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out, self._err = out, err

    def write(self, text: str) -> int:
        """Write `text` to stderr if a Ray thread wrote it, else to stdout."""
        on_ray_thread = threading.current_thread().name.startswith(RAY_THREAD_PREFIX)
        return (self._err if on_ray_thread else self._out).write(text)

    def flush(self) -> None:
        """Flush both streams."""
        self._out.flush()
        self._err.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, buffer, fileno...: the real stdout's
        return getattr(self._out, name)


def route_ray_notices_to_stderr() -> None:
    """Install `RayNoticesToStderr` as `sys.stdout` (once)."""
    if not isinstance(sys.stdout, RayNoticesToStderr):
        sys.stdout = RayNoticesToStderr(sys.stdout, sys.stderr)  # type: ignore[assignment]
