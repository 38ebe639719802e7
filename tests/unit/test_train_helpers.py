"""`factory.train` helpers and the regression example's loop, without Ray.

The loop runs in-process here: the checkpoint helpers are swapped for a store that round-trips the
state through `write_state`/`read_state` (the files Ray would persist), so pausing and resuming
are exercised exactly as the loop does them under Ray.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from factory.errors import ConfigError
from factory.examples import regression
from factory.examples.regression import (
    RegressionConfig,
    baseline_loss,
    build_model,
    make_data,
    squared_error,
    train_epoch,
)
from factory.train import (
    STOP_FILE_ENV,
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
from factory.train.checkpoint import read_state, write_state

SMALL = {"num_samples": 4096, "batch_size": 64, "hidden": 64, "lr": 1e-2}  # the defaults, pinned


# --- device and session ----------------------------------------------------------------------------

def test_outside_ray_the_process_is_no_session_of_rank_0_of_1() -> None:
    assert current_session() is Session.NONE
    assert (world_rank(), world_size()) == (0, 1)


def test_choose_device_is_the_cpu_without_cuda() -> None:
    with mock.patch("torch.cuda.is_available", return_value=False):
        assert choose_device() == torch.device("cpu")


def test_choose_device_is_the_cpu_on_simulated_gpus() -> None:
    # A worker Ray gave a (simulated) GPU, on a machine without CUDA: Ray's own pick would be cuda:0.
    get_device = mock.Mock(return_value=torch.device("cuda", 0))
    with mock.patch("torch.cuda.is_available", return_value=False), \
            mock.patch("factory.train.device.current_session", return_value=Session.TRAIN), \
            mock.patch("ray.train.torch.get_device", get_device):
        assert choose_device() == torch.device("cpu")
    get_device.assert_not_called()


def test_choose_device_is_the_assigned_gpu_in_a_train_worker_with_cuda() -> None:
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("factory.train.device.current_session", return_value=Session.TRAIN), \
            mock.patch("ray.train.torch.get_device", return_value=torch.device("cuda", 3)):
        assert choose_device() == torch.device("cuda", 3)


def test_choose_device_is_cuda_outside_ray_when_available() -> None:
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.current_device", return_value=0):
        assert choose_device() == torch.device("cuda", 0)


# --- sharding ---------------------------------------------------------------------------------------

@given(num_items=st.integers(0, 500), world_size=st.integers(1, 9))
def test_shards_cover_every_index_exactly_once(num_items: int, world_size: int) -> None:
    shards = [shard(num_items, rank, world_size) for rank in range(world_size)]
    indices = sorted(index for one in shards for index in one)
    assert indices == list(range(num_items))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize(("num_items", "rank", "size"), [(10, 2, 2), (10, -1, 2), (10, 0, 0), (-1, 0, 1)])
def test_shard_refuses_impossible_arguments(num_items: int, rank: int, size: int) -> None:
    with pytest.raises(ValueError):
        shard(num_items, rank, size)


# --- the stop-file protocol -------------------------------------------------------------------------

def test_no_stop_file_named_means_never_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    assert should_stop() is False
    monkeypatch.setenv(STOP_FILE_ENV, "  ")
    assert should_stop() is False


def test_stop_is_requested_exactly_while_the_named_file_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stop_file = tmp_path / "pause-job-7"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    assert should_stop() is False
    stop_file.write_text("")
    assert should_stop() is True
    stop_file.unlink()
    assert should_stop() is False


# --- checkpoint state -------------------------------------------------------------------------------

def test_state_round_trips_through_the_checkpoint_files(tmp_path: Path) -> None:
    model = build_model(hidden=8)
    optimizer = torch.optim.Adam(model.parameters())
    write_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 12, "epoch": 3},
                tmp_path)
    restored = read_state(tmp_path)
    assert (restored["step"], restored["epoch"]) == (12, 3)
    assert all(torch.equal(restored["model"][key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("state", [{"epoch": 1}, {"step": 5}, {"step": 1.5, "epoch": 1}])
def test_state_without_integer_step_and_epoch_counters_is_refused(tmp_path: Path, state: dict) -> None:
    with pytest.raises(ValueError, match="counter"):
        write_state(state, tmp_path)


def test_checkpoint_helpers_refuse_to_run_outside_ray() -> None:
    with pytest.raises(RuntimeError, match="Ray Train"):
        save_checkpoint({"step": 0, "epoch": 0}, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="Ray Train"):
        load_checkpoint()


# --- the regression example: its pieces -------------------------------------------------------------

def test_config_defaults_and_overrides() -> None:
    assert RegressionConfig.from_dict(None) == RegressionConfig()
    assert RegressionConfig.from_dict({"epochs": 3.0, "lr": 1}).epochs == 3


@pytest.mark.parametrize(("config", "message"), [
    ({"learning_rate": 0.1}, "unknown key 'learning_rate'"),
    ({"epoch": 3}, "did you mean 'epochs'"),
    ({"batch_size": 0}, "at least 1"),
    ({"hidden": 2.5}, "must be an integer"),
    ({"lr": -0.1}, "must be positive"),
])
def test_config_mistakes_are_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegressionConfig.from_dict(config)


def test_the_loop_takes_its_config_as_ray_train_hands_it_over() -> None:
    # Ray Train passes `train_loop_config` only to a function whose parameter has no default.
    parameters = list(inspect.signature(regression.train_loop_per_worker).parameters.values())
    assert len(parameters) == 1 and parameters[0].default is inspect.Parameter.empty


def test_data_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    first, again, other = make_data(256, seed=1), make_data(256, seed=1), make_data(256, seed=2)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_val, again.y_val)
    assert not torch.equal(first.x_train, other.x_train)
    assert len(first.x_val) + len(first.x_train) == 256


def test_two_epochs_bring_validation_loss_well_below_predicting_the_mean() -> None:
    split = make_data(4096, seed=0)
    torch.manual_seed(0)
    model = build_model(hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(split.x_train, split.y_train),
                                         batch_size=64, shuffle=True)
    cpu = torch.device("cpu")
    baseline = baseline_loss(split)
    assert baseline > 0.5  # the function varies: predicting the mean is poor

    steps = sum(train_epoch(model, loader, optimizer, cpu) for _ in range(2))

    total, count = squared_error(model, split.x_val, split.y_val, cpu)
    assert steps == 2 * len(loader)
    assert count == len(split.x_val)
    assert total / count < 0.1 * baseline


# --- the regression example: its loop, pausing and resuming -----------------------------------------

class CheckpointStore:
    """Stands in for Ray's run storage: keeps every reported checkpoint as files, as Ray would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reports: list[dict[str, Any]] = []

    def save(self, state: dict[str, Any], metrics: dict[str, Any]) -> None:
        directory = self.root / f"checkpoint_{len(self.reports):06d}"
        directory.mkdir(parents=True)
        write_state(state, directory)
        self.reports.append({**metrics, "step": state["step"], "epoch": state["epoch"]})

    def load(self) -> dict[str, Any] | None:
        return read_state(self.root / f"checkpoint_{len(self.reports) - 1:06d}") if self.reports else None

    def final_weights(self) -> dict[str, torch.Tensor]:
        state = self.load()
        assert state is not None
        return state["model"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "run")
    monkeypatch.setattr(regression, "save_checkpoint", store.save)
    monkeypatch.setattr(regression, "load_checkpoint", store.load)
    monkeypatch.delenv(STOP_FILE_ENV, raising=False)
    return store


def test_the_loop_reports_every_epoch_and_learns(store: CheckpointStore) -> None:
    summary = regression.train_loop_per_worker({**SMALL, "epochs": 3})

    assert [report["epoch"] for report in store.reports] == [1, 2, 3]
    steps = [report["step"] for report in store.reports]
    assert steps == sorted(set(steps)) and steps[0] > 0
    assert summary["stopped"] is False and (summary["start_epoch"], summary["start_step"]) == (0, 0)
    assert store.reports[-1]["loss"] < 0.1 * store.reports[-1]["baseline_loss"]


def test_a_paused_run_resumes_where_it_stopped_and_ends_as_an_unbroken_run_would(
    store: CheckpointStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**SMALL, "epochs": 4}
    stop_file = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    stop_file.write_text("")

    paused = regression.train_loop_per_worker(config)

    assert paused["stopped"] is True and paused["epoch"] == 1
    assert [report["epoch"] for report in store.reports] == [1]

    stop_file.unlink()
    resumed = regression.train_loop_per_worker(config)

    assert (resumed["start_epoch"], resumed["start_step"]) == (1, paused["step"])
    assert [report["epoch"] for report in store.reports] == [1, 2, 3, 4]  # none repeated, none skipped
    assert store.reports[1]["step"] > paused["step"]
    assert resumed["stopped"] is False

    unbroken = CheckpointStore(tmp_path / "unbroken")
    monkeypatch.setattr(regression, "save_checkpoint", unbroken.save)
    monkeypatch.setattr(regression, "load_checkpoint", unbroken.load)
    regression.train_loop_per_worker(config)

    assert [report["step"] for report in unbroken.reports] == [report["step"] for report in store.reports]
    resumed_weights, unbroken_weights = store.final_weights(), unbroken.final_weights()
    assert all(torch.equal(resumed_weights[key], unbroken_weights[key]) for key in unbroken_weights)


def test_a_finished_run_started_again_does_no_more_work(store: CheckpointStore) -> None:
    first = regression.train_loop_per_worker({**SMALL, "epochs": 2})
    again = regression.train_loop_per_worker({**SMALL, "epochs": 2})

    assert len(store.reports) == 2
    assert (again["start_step"], again["step"]) == (first["step"], first["step"])


def test_the_tune_trainable_returns_nothing_for_tune_to_record(store: CheckpointStore) -> None:
    assert regression.tune_trainable({**SMALL, "epochs": 1}) is None
    assert [report["epoch"] for report in store.reports] == [1]
