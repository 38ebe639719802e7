"""A small, real training job: an MLP learns y = sin(x1) + x2² + noise from data made in code.

Runs under Ray Train (`TorchTrainer(train_loop_per_worker, ...)`: DDP over gloo on CPUs) and under
Ray Tune (`Tuner(tune_trainable, ...)`: one process, no DDP). Every epoch it reports, with a
checkpoint:
  loss          -- validation mean squared error, exact over the whole validation set;
  baseline_loss -- the validation MSE of always predicting the training mean (≈0.93 here): a loss
                   well below it shows the network learned the function;
  epoch, step   -- epochs and optimizer steps completed since the run first started.
It resumes from the latest checkpoint of its run and pauses when the factory asks
(`factory.train.stop`). Config keys and defaults are `RegressionConfig`'s; the defaults finish in
seconds on a CPU.

The pieces (`make_data`, `build_model`, `train_epoch`, `squared_error`, `baseline_loss`) need no
Ray. `RegressionPredictor` serves a registered version (`factory deploy`): {"x1": .., "x2": ..} in,
{"y": ..} out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from factory.errors import ConfigError
from factory.suggest import did_you_mean
from factory.train import (
    Session,
    choose_device,
    current_session,
    load_checkpoint,
    save_checkpoint,
    shard,
    should_stop,
    world_rank,
    world_size,
)
from factory.train.checkpoint import read_state

NOISE_STD = 0.1
VALIDATION_FRACTION = 0.2
X1_RANGE = math.pi
X2_RANGE = 1.5


@dataclass(frozen=True)
class RegressionConfig:
    """The job's config (`train_loop_config` / Tune's `param_space`)."""

    epochs: int = 8
    lr: float = 1e-2
    batch_size: int = 64
    num_samples: int = 4096
    hidden: int = 64
    seed: int = 0

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> RegressionConfig:
        """Defaults overridden by `config`; an unknown key is an error naming the nearest known one."""
        config = dict(config or {})
        known = [field.name for field in dataclasses.fields(cls)]
        for key in config:
            if key not in known:
                hint = did_you_mean(key, known, otherwise=f"; known keys: {', '.join(known)}")
                raise ConfigError(f"unknown key '{key}' in the regression job's config{hint}")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in config:
                values[field.name] = _as_type_of(field.default, field.name, config[field.name])
        resolved = cls(**values)
        for key in ("epochs", "batch_size", "num_samples", "hidden"):
            if getattr(resolved, key) < 1:
                raise ConfigError(f"'{key}' in the regression job's config must be at least 1, "
                                  f"got {getattr(resolved, key)}")
        if resolved.lr <= 0:
            raise ConfigError(f"'lr' in the regression job's config must be positive, got {resolved.lr}")
        return resolved


def _as_type_of(default: int | float, key: str, value: Any) -> int | float:
    """`value` as the type of `default`; Tune search spaces hand over numpy scalars and floats."""
    kind = type(default)
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        converted = None
    if converted is None or converted != value:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"'{key}' in the regression job's config must be {expected}, got {value!r}")
    return converted


@dataclass(frozen=True)
class Split:
    """Training and validation tensors; `x` is (n, 2), `y` is (n, 1)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def make_data(num_samples: int, seed: int) -> Split:
    """`num_samples` points of y = sin(x1) + x2² + noise, the same for a given seed on every rank."""
    generator = torch.Generator().manual_seed(seed)
    x1 = (torch.rand(num_samples, generator=generator) * 2 - 1) * X1_RANGE
    x2 = (torch.rand(num_samples, generator=generator) * 2 - 1) * X2_RANGE
    noise = NOISE_STD * torch.randn(num_samples, generator=generator)
    x = torch.stack([x1, x2], dim=1)
    y = (torch.sin(x1) + x2**2 + noise).unsqueeze(1)
    num_val = max(1, int(num_samples * VALIDATION_FRACTION))
    return Split(x_train=x[num_val:], y_train=y[num_val:], x_val=x[:num_val], y_val=y[:num_val])


def build_model(hidden: int) -> nn.Module:
    """A two-hidden-layer MLP from (x1, x2) to y."""
    return nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, 1))


def baseline_loss(split: Split) -> float:
    """The validation MSE of always predicting the training mean: what "learned nothing" scores."""
    return float(((split.y_val - split.y_train.mean()) ** 2).mean())


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                device: torch.device) -> int:
    """One pass over `loader`; returns the number of optimizer steps taken."""
    model.train()
    steps = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
    return steps


def squared_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> tuple[float, int]:
    """The sum of squared errors of `model` on (x, y), and how many points that sums over."""
    model.eval()
    with torch.no_grad():
        errors = (model(x.to(device)) - y.to(device)) ** 2
    return float(errors.sum()), int(errors.numel())


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The training function for `TorchTrainer` (or Tune); returns a summary of this run.

    `config` must stay a required parameter: Ray Train passes `train_loop_config` only to a function
    whose parameter has no default.

    The summary (rank 0's reaches the driver as `Result.return_value`): `start_epoch`/`start_step`
    where this run began (0 when fresh, the checkpoint's counters when resumed), `epoch`/`step`
    where it ended, the last `loss`, `baseline_loss`, and `stopped` (True when it paused on request).
    """
    cfg = RegressionConfig.from_dict(config)
    distributed = current_session() is Session.TRAIN
    device = choose_device()
    split = make_data(cfg.num_samples, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.hidden)
    state = load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
    shuffle = torch.Generator()
    loader = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=cfg.batch_size,
                        shuffle=True, generator=shuffle)
    if distributed:
        import ray.train.torch

        # The device is passed, not left to Ray: on simulated GPUs Ray would pick a CUDA device
        # that does not exist. Batches are moved in `train_epoch`, for the same reason.
        model = ray.train.torch.prepare_model(model, move_to_device=device)
        loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    else:
        model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])

    start_epoch = epoch = state["epoch"] if state else 0
    start_step = step = state["step"] if state else 0
    val_indices = torch.as_tensor(shard(len(split.x_val), world_rank(), world_size()))
    x_val, y_val = split.x_val[val_indices], split.y_val[val_indices]
    baseline = baseline_loss(split)
    loss = _validation_loss(_unwrap(model), x_val, y_val, device, distributed)
    stopped = False
    while epoch < cfg.epochs and not stopped:
        _reshuffle(loader, shuffle, cfg.seed, epoch)
        step += train_epoch(model, loader, optimizer, device)
        epoch += 1
        loss = _validation_loss(_unwrap(model), x_val, y_val, device, distributed)
        save_checkpoint(
            {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "step": step, "epoch": epoch},
            {"loss": loss, "baseline_loss": baseline},
        )
        stopped = should_stop()
    return {"start_epoch": start_epoch, "start_step": start_step, "epoch": epoch, "step": step,
            "loss": loss, "baseline_loss": baseline, "stopped": stopped}


def tune_trainable(config: dict[str, Any]) -> None:
    """`train_loop_per_worker` as a Ray Tune function trainable: one process, no DDP.

    In Ray 2.60 (Train v2) the `ray.train` reporting APIs raise inside a Tune trial; the helpers in
    `factory.train` report through `ray.tune` there instead, so the loop itself runs unchanged.
    This wrapper only drops the summary: Tune would record a returned dict as one more result.
    """
    train_loop_per_worker(config)


def _reshuffle(loader: DataLoader, shuffle: torch.Generator, seed: int, epoch: int) -> None:
    """Fix this epoch's batch order by (seed, epoch), so a resumed run sees what an unbroken one would."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    else:
        shuffle.manual_seed(seed + epoch)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP's wrapper.

    Its `state_dict` has no `module.` prefix, and evaluating it runs no collective.
    """
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _validation_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                     distributed: bool) -> float:
    """The MSE over the whole validation set: each rank's exact shard, sums all-reduced."""
    total, count = squared_error(model, x, y, device)
    if distributed and torch.distributed.is_initialized():
        # On the training device: NCCL reduces only GPU tensors, gloo CPU ones.
        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / count


class RegressionInput(BaseModel):
    """One request to a served regression model: the point (x1, x2) to predict y at."""

    model_config = ConfigDict(extra="forbid")

    x1: float = Field(description="First feature; trained on [-pi, pi].")
    x2: float = Field(description="Second feature; trained on [-1.5, 1.5].")


class RegressionPredictor:
    """Serves a version of the regression MLP: a job's checkpoint, or a bare state_dict of the model.

    The hidden width is read from the weights, so any `hidden` the job trained with is served.
    """

    input_schema = RegressionInput

    def __init__(self, artifact: Any, device: str = "cpu") -> None:
        state = _model_state(artifact)
        self.device = torch.device(device)
        self.model = build_model(int(state["0.weight"].shape[0]))
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def predict(self, inputs: list[RegressionInput]) -> list[dict[str, float]]:
        """Y at each point, in order."""
        x = torch.tensor([[item.x1, item.x2] for item in inputs], dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            y = self.model(x)[:, 0].tolist()
        return [{"y": value} for value in y]


def _model_state(artifact: Any) -> dict[str, torch.Tensor]:
    """The MLP's weights in a loaded version: a checkpoint (its "model" entry) or a state_dict."""
    if isinstance(artifact, dict):
        return artifact.get("model", artifact)
    if isinstance(artifact, Path):
        return read_state(artifact)["model"]
    with artifact.as_directory() as directory:  # a ray.train.Checkpoint
        return read_state(Path(directory))["model"]
