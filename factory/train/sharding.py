"""Which part of an in-memory data set each worker of a data-parallel run owns.

Two idioms, on purpose:
  training   -- `ray.train.torch.prepare_data_loader(loader)` (Ray 2.60's idiom for a torch
                `DataLoader`) swaps in a `DistributedSampler`. That sampler pads the shards by
                repeating up to `world_size - 1` samples so that every rank takes the same number
                of optimizer steps, which DDP needs: a rank with one batch fewer would leave the
                others waiting in the gradient all-reduce forever. Call `sampler.set_epoch(epoch)`
                each epoch so that the order changes and a resumed run sees what an unbroken run
                would have seen.
  evaluation -- `shard()` below: every index exactly once across ranks, so per-rank sums
                all-reduced give the exact mean over the data set (the sampler's padding would count
                some samples twice).

Data that lives in a Ray Dataset (large, streamed, preprocessed in Ray Data) is sharded by the
trainer instead (`TorchTrainer(datasets=...)` and `ray.train.get_dataset_shard`); for a few MB of
tensors generated in the loop, that is overhead without benefit.
"""

from __future__ import annotations


def shard(num_items: int, world_rank: int, world_size: int) -> range:
    """The indices of `num_items` items that rank `world_rank` of `world_size` owns.

    Strided (rank r owns r, r + world_size, ...), the order `DistributedSampler(shuffle=False)`
    uses; shard sizes differ by at most one. Index a tensor with `x[torch.as_tensor(indices)]`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= world_rank < world_size:
        raise ValueError(f"world_rank must be in [0, {world_size}), got {world_rank}")
    if num_items < 0:
        raise ValueError(f"num_items must not be negative, got {num_items}")
    return range(world_rank, num_items, world_size)
