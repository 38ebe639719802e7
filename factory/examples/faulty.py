"""Fault injection for tests and demos: a training loop and predictors that fail on purpose.

`config["fail"]`:
  * "once"   -- report a checkpoint, then raise, on the first run only: Ray Train restarts the
                workers (the job's `max_retries`) and the retry resumes from that checkpoint and
                succeeds. What a preempted spot node or a transient NCCL error looks like.
  * "always" -- raise at once on every run: the job ends FAILED with this error once its retries
                are spent.
  * "no_checkpoint" -- succeed without saving a checkpoint: a job with `register_as` then has nothing
                to register, and ends REGISTRATION_FAILED.
"""

from __future__ import annotations

import time
from typing import Any

from factory.examples.regression import RegressionInput, RegressionPredictor
from factory.train import load_checkpoint, save_checkpoint

INJECTED = "injected failure (factory.examples.faulty)"
SLOW_S = 8.0


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Fail as `config["fail"]` says (see the module docstring); return {"resumed_from_step": ...}."""
    mode = config.get("fail", "always")
    if mode == "always":
        raise RuntimeError(INJECTED)
    if mode == "no_checkpoint":
        return {"resumed_from_step": 0}
    state = load_checkpoint()
    if state is None:
        save_checkpoint({"step": 1, "epoch": 1}, {"loss": 1.0})
        raise RuntimeError(INJECTED)
    save_checkpoint({"step": state["step"] + 1, "epoch": state["epoch"] + 1}, {"loss": 0.5})
    return {"resumed_from_step": state["step"]}


class FailingPredictor:
    """A predictor whose model fails on every request: what a broken version looks like when served.

    It loads like the regression example's (same weights, same request schema), then raises in
    `predict`; a canary of it is rolled back automatically.
    """

    input_schema = RegressionInput

    def __init__(self, artifact: Any, device: str = "cpu") -> None:
        self.loaded = RegressionPredictor(artifact, device)

    def predict(self, inputs: list[Any]) -> list[Any]:
        """Fail, as a broken model would."""
        raise RuntimeError(INJECTED)


class NanPredictor(FailingPredictor):
    """A diverged model: it answers NaN, which is not JSON (the server answers 500, counted as an error)."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        """NaN for every input."""
        return [{"y": float("nan")} for _ in inputs]


class SlowPredictor(FailingPredictor):
    """A model that hangs: it answers after `SLOW_S` seconds (past a short `request_timeout_s`)."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        """Sleep, then answer like the regression model."""
        time.sleep(SLOW_S)
        return self.loaded.predict(inputs)


class UnloadablePredictor(FailingPredictor):
    """A version whose model cannot be built (say, weights of another shape): it fails as it loads."""

    def __init__(self, artifact: Any, device: str = "cpu") -> None:
        raise RuntimeError(INJECTED)
