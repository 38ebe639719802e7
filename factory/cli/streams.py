"""Keep the CLI's stdout for the command's own output, whatever Ray prints in the background.

A Ray driver runs a thread (`ray_listen_error_messages`) that prints cluster-wide notices to
`sys.stdout`, even with `log_to_driver=False`. In the middle of `factory submit --wait --json` that
breaks the JSON a script reads. `RayNoticesToStderr` stands in for `sys.stdout` and sends what Ray's
threads write to stderr; everything else passes through unchanged.

One notice is dropped instead: the raylet's "N PYTHON worker processes have been started on node ...,
which is Nx the maximum expected startup concurrency". The factory runs its actors with no CPU on
purpose, so on a small machine (the demo on a laptop) every command would carry it, and the user can
do nothing about it. The raylet still writes it to its own log (`raylet.out`).
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any, TextIO

RAY_THREAD_PREFIX = "ray_"
DROPPED_RAY_NOTICES = re.compile(r"worker processes have been started on node")


class RayNoticesToStderr:
    """A `sys.stdout` that writes from threads named `ray_*` to stderr instead.

    Text matching `DROPPED_RAY_NOTICES` is not written at all, from any thread: Ray prints what it
    held back to deduplicate from the main thread, as the driver shuts down.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out, self._err = out, err
        self._dropped: set[int | None] = set()  # threads whose dropped line's newline comes next

    def write(self, text: str) -> int:
        """Write `text` to stderr if a Ray thread wrote it, else to stdout; drop the worker-count notice."""
        thread = threading.current_thread()
        if DROPPED_RAY_NOTICES.search(text):
            self._dropped.add(thread.ident)  # `print` writes the line, then its newline
            return len(text)
        if thread.ident in self._dropped:
            self._dropped.discard(thread.ident)
            if text == "\n":
                return len(text)
        return (self._err if thread.name.startswith(RAY_THREAD_PREFIX) else self._out).write(text)

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
