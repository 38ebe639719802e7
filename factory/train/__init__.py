"""Helpers for the training loops that factory jobs run under Ray Train (v2) or Ray Tune.

- `choose_device()`: the torch device to train on (`factory.train.device`).
- `save_checkpoint(state, metrics)` / `load_checkpoint()`: report with a checkpoint, resume from
  the latest one (`factory.train.checkpoint`).
- `shard(num_items, world_rank, world_size)`: each rank's exact share of a data set
  (`factory.train.sharding`, which also says why training batches go through
  `ray.train.torch.prepare_data_loader` instead).
- `should_stop()`: the factory's cooperative pause, checked after each checkpoint
  (`factory.train.stop`, which documents the protocol).

A loop built on them is in `factory.examples.regression`.
"""

from factory.train.checkpoint import load_checkpoint, save_checkpoint
from factory.train.device import choose_device
from factory.train.session import Session, current_session, world_rank, world_size
from factory.train.sharding import shard
from factory.train.stop import STOP_FILE_ENV, should_stop, stop_requested

__all__ = [
    "STOP_FILE_ENV",
    "Session",
    "choose_device",
    "current_session",
    "load_checkpoint",
    "save_checkpoint",
    "shard",
    "should_stop",
    "stop_requested",
    "world_rank",
    "world_size",
]
