"""Save and restore a training loop's state through Ray's checkpoints.

Nomenclature:
  state -- a dict a loop needs to continue exactly where it stopped: typically the model's and the
           optimizer's `state_dict()`, plus two counters that are required:
             `step`  -- optimizer steps completed since the run first started (global, not per
                        epoch, and the same on every rank under DDP);
             `epoch` -- epochs completed.
           Values must be loadable with `torch.load(weights_only=True)`: tensors, numbers,
           strings, and lists/tuples/dicts of them.

Invariants:
  - A checkpoint is written only after the work it covers: restoring it and continuing from
    `epoch`/`step` repeats nothing and skips nothing.
  - The `step` and `epoch` reported with a checkpoint are the ones stored in it.
  - `save_checkpoint` is a collective in a multi-worker Ray Train run, like `ray.train.report`
    which it calls: every rank calls it once per checkpoint. Only rank 0 writes and attaches the
    files (under DDP every rank holds the same weights); the others report the metrics alone, as
    Ray 2.60 requires of every rank (`report` is a barrier, and a checkpoint is registered when at
    least one rank attaches one). Ray keeps rank 0's metrics.
  - Resuming: a trainer started with the same `RunConfig(name, storage_path)` finds Ray's snapshot
    of the run in storage, and `load_checkpoint()` on every rank returns the latest state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from factory.train.session import Session, current_session, world_rank

STATE_FILENAME = "state.pt"
REQUIRED_KEYS = ("step", "epoch")


def write_state(state: dict[str, Any], directory: Path) -> Path:
    """Write `state` into `directory`; returns the file written. Needs no Ray."""
    _require_counters(state)
    path = Path(directory) / STATE_FILENAME
    torch.save(state, path)
    return path


def _require_counters(state: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_KEYS if not isinstance(state.get(key), int)]
    if missing:
        raise ValueError(f"checkpoint state needs integer {' and '.join(missing)} counter(s); "
                         f"got keys {sorted(state)}")


def read_state(directory: Path) -> dict[str, Any]:
    """The state `write_state` wrote into `directory`, with its tensors on the CPU. Needs no Ray."""
    return torch.load(Path(directory) / STATE_FILENAME, map_location="cpu", weights_only=True)


def save_checkpoint(state: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Report `metrics` (plus `state`'s `step` and `epoch`) with a checkpoint of `state`.

    Call on every rank (see the module docstring). Metrics must be plain numbers, not tensors.
    """
    _require_counters(state)
    session = current_session()
    if session is Session.NONE:
        raise RuntimeError("save_checkpoint() runs inside a Ray Train v2 worker or a Ray Tune trial, "
                           "not in the driver or a plain process")
    metrics = {**metrics, "step": state["step"], "epoch": state["epoch"]}
    if session is Session.TRAIN and world_rank() != 0:
        import ray.train

        ray.train.report(metrics, checkpoint=None)
        return
    # The report persists the files to the run's storage before it returns (synchronous upload),
    # so the temporary directory can go as soon as it does.
    with tempfile.TemporaryDirectory(prefix="factory-checkpoint-") as directory:
        write_state(state, Path(directory))
        if session is Session.TRAIN:
            import ray.train

            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            import ray.tune

            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(directory))


def load_checkpoint() -> dict[str, Any] | None:
    """The state of the latest checkpoint of this run, or None when the run starts fresh."""
    session = current_session()
    if session is Session.TRAIN:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
    elif session is Session.TUNE:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
    else:
        raise RuntimeError("load_checkpoint() runs inside a Ray Train v2 worker or a Ray Tune trial, "
                           "not in the driver or a plain process")
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return read_state(Path(directory))
