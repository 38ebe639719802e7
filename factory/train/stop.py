"""Cooperative stop: a running job pauses at its next checkpoint when the factory asks it to.

Protocol:
  1. The runner picks a path and sets `FACTORY_STOP_FILE=<path>` in the workers' environment: for a
     `TorchTrainer`, `RunConfig(worker_runtime_env={"env_vars": {"FACTORY_STOP_FILE": path}})`;
     for a Tune trial, the trial's runtime env. Without the variable a job never stops early.
  2. To pause the job, the runner creates the file. Its existence is the request; its content is
     ignored. The path must be visible on the node of the worker of rank 0, since only that
     worker's view counts (shared storage for a multi-node run).
  3. The training loop calls `should_stop()` right after every `save_checkpoint(...)`. When it
     returns True, the loop returns from its training function. Nothing is lost: the checkpoint
     just saved holds all the work done. Ray records the run as finished, not failed: the runner
     knows it paused because it asked (the example loop also returns `stopped: True`, which
     reaches the driver as `Result.return_value`).
  4. To resume, the runner deletes the file and starts a trainer with the same
     `RunConfig(name, storage_path)`; `load_checkpoint()` then returns the saved state.

Invariants:
  - All ranks get the same answer: rank 0 looks at the file and broadcasts what it saw. A rank that
    returned alone would leave the others blocked forever in their next collective.
  - Hence `should_stop()` is a collective in a multi-worker Ray Train run: every rank calls it the
    same number of times, like `ray.train.report`.
  - A pause waits at most one checkpoint interval, and costs no repeated work.
"""

from __future__ import annotations

import os
from pathlib import Path

from factory.train.session import Session, current_session, world_rank, world_size

STOP_FILE_ENV = "FACTORY_STOP_FILE"


def stop_file() -> Path | None:
    """The file whose existence asks this job to stop, or None when the runner named none."""
    value = os.environ.get(STOP_FILE_ENV, "").strip()
    return Path(value) if value else None


def stop_requested() -> bool:
    """Whether this process sees a stop request now. Not a collective; the loop calls `should_stop`."""
    path = stop_file()
    return path is not None and path.exists()


def should_stop() -> bool:
    """Whether the loop should return now, the same answer on every rank (see the module docstring)."""
    if current_session() is not Session.TRAIN or world_size() == 1:
        return stop_requested()
    from ray.train.collective import broadcast_from_rank_zero

    return bool(broadcast_from_rank_zero(stop_requested() if world_rank() == 0 else None))
