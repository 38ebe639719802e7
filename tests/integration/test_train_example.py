"""The regression example on a real local Ray cluster, as the factory's job runner will drive it.

Under a `TorchTrainer` (2 CPU workers, DDP over gloo) it pauses at its first checkpoint when its
stop file exists, and a second trainer with the same run name and storage path resumes it from that
checkpoint to the end: no epoch repeated, the step counter continued, the function learned. The
same loop also runs as a Ray Tune trainable.

One cluster for the module (2 CPUs, as CI has; Ray Train's controller takes none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from factory.examples.regression import train_loop_per_worker, tune_trainable
from factory.train import STOP_FILE_ENV

pytestmark = pytest.mark.integration
EPOCHS = 4


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[None]:
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def make_trainer(storage: Path, stop_file: Path) -> TorchTrainer:
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"epochs": EPOCHS},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        run_config=RunConfig(name="regression", storage_path=str(storage),
                             worker_runtime_env={"env_vars": {STOP_FILE_ENV: str(stop_file)}}),
    )


def test_a_paused_run_resumes_from_its_checkpoint_and_learns(cluster: None, tmp_path: Path) -> None:
    stop_file = tmp_path / "stop"
    stop_file.write_text("")  # the runner asks for a pause before the first checkpoint

    first = make_trainer(tmp_path / "storage", stop_file).fit()

    assert first.error is None
    assert first.return_value["stopped"] is True
    assert first.metrics["epoch"] == 1
    assert first.metrics["loss"] < first.metrics["baseline_loss"]
    paused_at_step = first.metrics["step"]

    stop_file.unlink()
    second = make_trainer(tmp_path / "storage", stop_file).fit()

    assert second.error is None
    summary = second.return_value
    assert (summary["start_epoch"], summary["start_step"]) == (1, paused_at_step)
    assert summary["stopped"] is False
    history = second.metrics_dataframe
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))  # both runs: none repeated, none skipped
    assert history["step"].is_monotonic_increasing and history["step"].is_unique
    assert history["step"].iloc[1] > paused_at_step
    assert second.metrics["epoch"] == EPOCHS
    assert second.metrics["loss"] < 0.2 * second.metrics["baseline_loss"]


def test_the_same_loop_runs_as_a_tune_trainable(cluster: None, tmp_path: Path) -> None:
    from ray import tune

    tuner = tune.Tuner(tune_trainable, param_space={"epochs": 2},
                       run_config=tune.RunConfig(name="regression-tune", storage_path=str(tmp_path)))
    result = tuner.fit().get_best_result(metric="loss", mode="min")

    assert result.error is None
    assert (result.metrics["epoch"], result.metrics["training_iteration"]) == (2, 2)
    assert result.metrics["loss"] < 0.2 * result.metrics["baseline_loss"]
    assert result.checkpoint is not None
