"""JobRunner: one Ray actor per running factory job; the scheduler's hands.

It runs one attempt of its job on a thread, so that the scheduler's calls (`report`,
`request_pause`, `cancel`, `logs`) are answered while the job trains:
  * `train`   -- Ray Train's `TorchTrainer` on `num_workers` workers (gloo on CPU, nccl where the
                 runner sees CUDA), under the run name = the job id and the factory's runs directory,
                 so a resumed attempt continues from the run's latest checkpoint (Ray Train v2 reloads
                 its checkpoint manager from that storage path). Worker failures are retried by Ray
                 Train itself (`FailureConfig(max_failures=max_retries)`), from the latest checkpoint.
  * `tune`    -- a Ray Tune sweep (`Tuner.fit()`), one trial per worker slot; not pausable.
  * `command` -- a Ray Job (`JobSubmissionClient`), so it shows in the dashboard's Jobs tab and in
                 `ray job logs`; not pausable.

Pausing is cooperative: `request_pause` creates the job's stop file (`FACTORY_STOP_FILE` in the
workers' environment, see `factory.train.stop`); the loop checkpoints, sees it and returns, and the
runner reports PAUSED. A run that was asked to pause always reports PAUSED, even if it had just
finished: resuming such a run finds the last checkpoint complete and ends at once (SUCCEEDED), so
no work is lost or repeated.

Invariants:
  * A runner is created before it is needed, as a warm spare (`runner:<8 hex>`, namespace
    `factory`, detached; torch and Ray Train already imported), and is then assigned one attempt of
    one job (`assign`, idempotent). It reports its job and attempt, so a restarted scheduler finds
    the runners of its jobs by asking them. It is never restarted by Ray (a lost runner is a job to
    resume as a new attempt, from its checkpoint), and never reused for another job.
  * Everything the runner learns (its start, each reported metric, the end, an error with its
    traceback) is appended to `<state_dir>/logs/<job id>.log`, which outlives the runner.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

import ray

from factory.control_plane import SCHEDULER, get_actor
from factory.jobs.runners import RunnerStatus
from factory.jobs.stored import stored_spec
from factory.store import JobRow

LOG_TAIL_LINES = 200
CHECKPOINTS_KEPT = 2  # the latest to resume from, and the one before it in case the latest is torn


def stop_file(runs_dir: Path, job_id: str) -> Path:
    """The file whose existence asks `job_id`'s training loop to stop at its next checkpoint."""
    return runs_dir / job_id / "STOP"


class JobRunner:
    """Runs one attempt of one job; see the module docstring."""

    def __init__(self, runs_dir: str, logs_dir: str) -> None:
        self.runs_dir, self.logs_dir = Path(runs_dir), Path(logs_dir)
        self.job: JobRow | None = None
        self.attempt = 0
        self._status = RunnerStatus.STARTING
        self._progress: dict[str, Any] = {}
        self._error = ""
        self._pause_requested = False
        self._cancelled = False
        self._submission_id: str | None = None
        self._lock = threading.Lock()
        _warm_up()

    def assign(self, job: dict[str, Any], attempt: int) -> None:
        """Run attempt `attempt` of `job` (once: a second call for the same attempt does nothing)."""
        row = JobRow.model_validate(job)
        with self._lock:
            if self.job is not None:
                if (self.job.job_id, self.attempt) == (row.job_id, attempt):
                    return
                raise RuntimeError(f"runner already runs job {self.job.job_id} (attempt {self.attempt})")
            self.job, self.attempt = row, attempt
        self._stop_file = stop_file(self.runs_dir, row.job_id)
        self._stop_file.parent.mkdir(parents=True, exist_ok=True)
        self._stop_file.unlink(missing_ok=True)  # a new attempt must not stop at once
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.logs_dir / f"{row.job_id}.log"
        self._log(f"attempt {attempt}: starting {row.kind} job '{row.name}'")
        self._thread = threading.Thread(target=self._work, name=f"job-{row.job_id}", daemon=True)
        self._thread.start()

    # -- the scheduler's calls ------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """{job_id, attempt, status, progress, error}: the `RunnerReport` fields (job_id None: idle)."""
        with self._lock:
            return {"job_id": None if self.job is None else self.job.job_id, "attempt": self.attempt,
                    "status": str(self._status), "progress": dict(self._progress), "error": self._error}

    def request_pause(self) -> None:
        """Ask the training loop to stop at its next checkpoint."""
        with self._lock:
            self._pause_requested = True
        self._stop_file.touch()
        self._log("pause requested: stopping at the next checkpoint")

    def cancel(self) -> None:
        """Stop a `command` job's Ray Job; the scheduler then kills this actor (and its trainer)."""
        with self._lock:
            self._cancelled = True
        self._log("cancelled")
        if self._submission_id is not None:
            try:
                self._job_client().stop_job(self._submission_id)
            except Exception as exc:  # noqa: BLE001 - the actor is killed next anyway
                self._log(f"stopping Ray job {self._submission_id} failed: {exc}")

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        """A metrics report from the training (Ray Train's controller calls this, see `_Progress`)."""
        with self._lock:
            self._progress = {key: value for key, value in metrics.items()
                              if isinstance(value, int | float | str | bool)}
        self._log("report " + " ".join(f"{key}={value}" for key, value in self._progress.items()))

    def logs(self, tail_lines: int = LOG_TAIL_LINES) -> str:
        """The job's log (this attempt and the earlier ones), its last `tail_lines` lines."""
        return read_log(self._log_path, tail_lines)

    # -- the work ----------------------------------------------------------------------------------

    @property
    def _current(self) -> JobRow:
        assert self.job is not None, "the runner has been assigned its job"
        return self.job

    def _work(self) -> None:
        try:
            kind = self._current.kind
            if kind == "train":
                self._train()
            elif kind == "tune":
                self._tune()
            elif kind == "command":
                self._command()
            else:
                raise ValueError(f"unknown job kind '{kind}'")
        except BaseException as exc:  # noqa: BLE001 - reported to the scheduler as the job's error
            self._log("failed:\n" + "".join(traceback.format_exception(exc)).rstrip())
            self._finish(RunnerStatus.FAILED, error=_one_line(exc))
            return
        with self._lock:
            paused = self._pause_requested
        self._finish(RunnerStatus.PAUSED if paused else RunnerStatus.SUCCEEDED)

    def _finish(self, status: RunnerStatus, error: str = "") -> None:
        with self._lock:
            if self._cancelled:
                status = RunnerStatus.CANCELLED
            self._status, self._error = status, error
        self._log(f"attempt {self.attempt}: {status}" + (f": {error}" if error else ""))
        try:  # decide now rather than at the next tick
            get_actor(SCHEDULER).wake.remote()
        except Exception:  # noqa: BLE001 - the scheduler's next tick sees the end anyway
            pass

    def _running(self) -> None:
        with self._lock:
            if self._status is RunnerStatus.STARTING:
                self._status = RunnerStatus.RUNNING

    def _env_vars(self) -> dict[str, str]:
        return {"FACTORY_JOB_ID": self._current.job_id, "FACTORY_STOP_FILE": str(self._stop_file)}

    def _train(self) -> None:
        import torch
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from factory.jobs.spec import TrainJobSpec, load_callable

        spec = stored_spec(self._current)
        assert isinstance(spec, TrainJobSpec)
        gpus = spec.gpus_per_worker
        resources: dict[str, float] = {"CPU": float(spec.cpus_per_worker)}
        if gpus:
            resources["GPU"] = float(gpus)
        backend = "nccl" if gpus and torch.cuda.is_available() else "gloo"
        trainer = TorchTrainer(
            load_callable(spec.train_loop),
            train_loop_config=dict(spec.config),
            scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=bool(gpus),
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend=backend),
            run_config=RunConfig(
                name=self._current.job_id, storage_path=str(self.runs_dir.resolve()),
                failure_config=FailureConfig(max_failures=spec.max_retries),
                checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                worker_runtime_env={"env_vars": self._env_vars()},
                callbacks=[_progress_callback(ray.get_runtime_context().current_actor)],
            ),
        )
        self._running()
        result = trainer.fit()
        summary = getattr(result, "return_value", None)  # rank 0's return value, if it returned a dict
        if result.metrics or isinstance(summary, dict) or result.checkpoint is not None:
            self.on_metrics({**(result.metrics or {}), **(summary if isinstance(summary, dict) else {}),
                             **_checkpoint_path(result)})
        if result.error is not None:
            raise result.error

    def _tune(self) -> None:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        from factory.jobs.search_space import to_tune_space
        from factory.jobs.spec import TuneJobSpec, load_callable

        spec = stored_spec(self._current)
        assert isinstance(spec, TuneJobSpec)
        settings = spec.tune
        resources = {"cpu": float(spec.cpus_per_worker), "gpu": float(spec.gpus_per_worker)}
        concurrent = settings.max_concurrent_trials or spec.num_workers
        space = {**dict(spec.config), **to_tune_space(settings.search_space)}
        scheduler = ASHAScheduler() if settings.scheduler == "asha" else FIFOScheduler()
        tuner = tune.Tuner(
            tune.with_resources(load_callable(spec.train_loop), resources),
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=settings.num_samples, metric=settings.metric, mode=settings.mode,
                scheduler=scheduler,
                max_concurrent_trials=concurrent,
            ),
            run_config=tune.RunConfig(name=self._current.job_id, storage_path=str(self.runs_dir.resolve())),
        )
        self._running()
        results = tuner.fit()
        best = results.get_best_result()
        if best.error is not None:
            raise best.error
        self.on_metrics({**(best.metrics or {}), "trials": len(results), **_checkpoint_path(best),
                         **{f"best_{key}": value for key, value in (best.config or {}).items()
                            if isinstance(value, int | float | str | bool)}})

    def _command(self) -> None:
        from ray.job_submission import JobStatus

        from factory.jobs.spec import CommandJobSpec

        spec = stored_spec(self._current)
        assert isinstance(spec, CommandJobSpec)
        client = self._job_client()
        submission_id = f"factory-{self._current.job_id}-{self.attempt}"
        runtime_env = dict(spec.runtime_env or {})
        runtime_env["env_vars"] = {**dict(runtime_env.get("env_vars") or {}), **self._env_vars()}
        self._submission_id = client.submit_job(
            entrypoint=spec.entrypoint, submission_id=submission_id, runtime_env=runtime_env,
            entrypoint_num_cpus=float(spec.total_cpus), entrypoint_num_gpus=float(spec.total_gpus),
        )
        self._log(f"submitted as Ray job {submission_id} (`ray job logs {submission_id}`)")
        self._running()
        while True:
            status = client.get_job_status(submission_id)
            if status.is_terminal():
                break
            time.sleep(0.5)
        output = client.get_job_logs(submission_id)
        if output:
            self._log("output:\n" + output.rstrip())
        if status != JobStatus.SUCCEEDED:
            info = client.get_job_info(submission_id)
            raise RuntimeError(f"Ray job {submission_id} {status}: {info.message or ''}".strip())

    def _job_client(self) -> Any:
        from ray.dashboard.utils import ray_address_to_api_server_url
        from ray.job_submission import JobSubmissionClient

        try:  # where this cluster's dashboard (Ray's job API) listens, as `ray job submit` finds it
            address = ray_address_to_api_server_url(ray.get_runtime_context().gcs_address)
        except Exception as exc:  # noqa: BLE001 - one line for the job's error
            raise RuntimeError(f"command jobs need the Ray dashboard (Ray's job API): {exc}") from None
        return JobSubmissionClient(address)

    def _log(self, line: str) -> None:
        if self.job is None:
            return  # an idle spare has no job log
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"
        with self._lock, self._log_path.open("a") as log:
            log.write(f"{stamp} {line}\n")


def _warm_up() -> None:
    """Import what a run needs now, while the runner waits as a spare, not when a job is due."""
    import torch  # noqa: F401
    from ray.train.torch import TorchTrainer  # noqa: F401

    import factory.jobs.spec  # noqa: F401


def read_log(path: Path, tail_lines: int = LOG_TAIL_LINES) -> str:
    """The last `tail_lines` lines of a job's log ('' if it has none yet)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-tail_lines:])


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def _checkpoint_path(result: Any) -> dict[str, str]:
    """{"checkpoint_path": the run's latest checkpoint directory} if it left one on local storage."""
    checkpoint = getattr(result, "checkpoint", None)
    return {} if checkpoint is None else {"checkpoint_path": str(checkpoint.path)}


def _progress_callback(runner: Any) -> Any:
    """A Ray Train callback (run by Train's controller actor) that forwards rank 0's metrics."""
    from ray.train import UserCallback

    class _Progress(UserCallback):
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics:
                self.handle.on_metrics.remote(metrics[0])

    return _Progress(runner)
