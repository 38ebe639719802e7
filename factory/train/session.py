"""Which Ray API the calling process reports through, and its rank among its peers.

Nomenclature:
  train worker -- a process running a training loop under a Ray Train v2 trainer (`TorchTrainer`);
                  it reports through `ray.train` and is rank `world_rank` of `world_size`.
  tune trial   -- a process running a Ray Tune function trainable; it reports through `ray.tune`
                  and is alone (rank 0 of 1). In Ray 2.60 the `ray.train` reporting APIs raise
                  inside a Tune trial, so the two must be told apart.
  none         -- anything else: the driver, a unit test. There is nothing to report to.

Ray 2.60 runs Train v2 unless `RAY_TRAIN_V2_ENABLED=0`; that v1 fallback is not supported here (a
v1 worker reads as `none`). Ray has no public "am I inside a worker" probe: `factory.ray_compat`
asks its private helpers.
"""

from __future__ import annotations

from enum import Enum

from factory import ray_compat


class Session(Enum):
    """The kind of process the caller runs in (see the module docstring)."""

    TRAIN = "train"
    TUNE = "tune"
    NONE = "none"


def current_session() -> Session:
    """The kind of process the caller runs in."""
    if ray_compat.in_train_worker():
        return Session.TRAIN
    if ray_compat.in_tune_session():
        return Session.TUNE
    return Session.NONE


def world_rank() -> int:
    """This process's rank in its worker group: 0 outside a multi-worker Train run."""
    if current_session() is Session.TRAIN:
        import ray.train

        return ray.train.get_context().get_world_rank()
    return 0


def world_size() -> int:
    """How many workers train together: 1 outside a Train run."""
    if current_session() is Session.TRAIN:
        import ray.train

        return ray.train.get_context().get_world_size()
    return 1
