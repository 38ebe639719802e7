"""`Runners` on a Ray cluster: JobRunner actors (`actors.job_runner`), one per running job.

Invariants (see `factory.jobs.runners` for the port's):
  * Runners are named, detached actors `runner:<8 hex>` in namespace `factory`, on the head node
    (where the state directory, its logs and the jobs' stop files are), taking no CPU slot: the
    training they drive (Ray Train's controller and workers) asks for the job's resources.
  * While jobs wait or run (`keep_warm`), `WARM_RUNNERS` idle runners are kept ready (torch and Ray
    Train imported): a job that is due starts without waiting for a process to start and import
    (about 2 s on a CI machine). A runner serves one attempt of one job and is killed when
    released; a new spare replaces it. An idle factory keeps none.
  * Which runner runs which job is what the runners say (`report()`), never a local table only:
    a restarted scheduler finds its jobs' runners by asking every runner on the cluster.
  * A runner is never restarted by Ray; a dead one has no report, and the scheduler resumes its
    job as a new attempt from the latest checkpoint. A runner that does not answer within
    `report_timeout_s` keeps its last report: a busy actor is not mistaken for a lost job.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.job_runner import JobRunner, read_log
from factory.control_plane import RUNNER_PREFIX, named_actors
from factory.jobs.runners import RunnerReport, RunnerStatus
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE
from factory.store import JobRow

WARM_RUNNERS = 1


class RayRunners:
    """Starts, pauses, cancels and watches JobRunner actors."""

    def __init__(self, runs_dir: Path, logs_dir: Path, report_timeout_s: float = 10.0) -> None:
        self.runs_dir, self.logs_dir = runs_dir.resolve(), logs_dir.resolve()
        self.report_timeout_s = report_timeout_s
        self._last: dict[str, RunnerReport] = {}
        self._handles: dict[str, Any] = {}   # job id -> its runner, as the runners last said
        self._spares: dict[str, Any] = {}    # name -> an idle runner (created here or found idle)
        # Whether jobs are waiting or running: spares are kept only then (an idle factory keeps none).
        self.keep_warm = False
        # Whether the last `reports()` heard from every runner that may run a job (see the port).
        self.all_answered = True

    # -- the port ----------------------------------------------------------------------------------

    def start(self, job: JobRow, attempt: int, placement: tuple[tuple[str, int], ...]) -> None:  # noqa: D102
        handle = self._runner_of(job.job_id)
        if handle is not None:
            try:
                report = ray.get(handle.report.remote(), timeout=self.report_timeout_s)
            except (RayActorError, GetTimeoutError):
                report = None
            if report is not None and int(report["attempt"]) == attempt:
                return  # already started (a scheduler that restarted re-issues its write-ahead)
            self._kill(job.job_id, handle)
        for _ in range(2):  # a spare that died meanwhile is replaced once
            runner = self._take_spare()
            try:
                ray.get(runner.assign.remote(job.model_dump(mode="json"), attempt), timeout=60.0)
            except RayActorError:
                continue
            except GetTimeoutError:
                # Its assign may still run once the runner is up: killed, it cannot run this attempt beside
                # the runner the next step hands it to (the run is written ahead, not confirmed).
                ray.kill(runner, no_restart=True)
                raise
            self._handles[job.job_id] = runner
            break
        else:
            raise RuntimeError(f"no JobRunner could be started for job {job.job_id}")
        self.keep_spares()

    def pause(self, job_id: str) -> None:  # noqa: D102
        handle = self._runner_of(job_id)
        if handle is not None:
            ray.get(handle.request_pause.remote(), timeout=self.report_timeout_s)

    def cancel(self, job_id: str) -> None:  # noqa: D102
        handle = self._runner_of(job_id)
        if handle is None:
            return
        try:
            ray.get(handle.cancel.remote(), timeout=self.report_timeout_s)
        except (RayActorError, GetTimeoutError):
            pass
        self._kill(job_id, handle)

    def reports(self) -> dict[str, RunnerReport]:  # noqa: D102
        reports: dict[str, RunnerReport] = {}
        handles: dict[str, Any] = {}
        all_answered = True
        for name, handle, answer in self._ask_all():
            if answer is None:  # dead
                self._spares.pop(name, None)
            elif answer == "timeout":  # busy (or still importing, if a spare): keep what it said last
                stale = next((job_id for job_id, known in self._handles.items() if known == handle), None)
                if stale is not None and stale in self._last:
                    reports[stale], handles[stale] = self._last[stale], handle
                elif name not in self._spares:  # not known idle: it may run a job nobody here knows of
                    all_answered = False
            elif answer["job_id"] is None:
                self._spares[name] = handle
            else:
                self._spares.pop(name, None)
                job_id = answer["job_id"]
                handles[job_id] = handle
                reports[job_id] = RunnerReport(job_id, int(answer["attempt"]), RunnerStatus(answer["status"]),
                                               dict(answer["progress"]), str(answer["error"]))
        self._last, self._handles, self.all_answered = reports, handles, all_answered
        self.keep_spares()
        return dict(reports)

    def release(self, job_id: str) -> None:  # noqa: D102
        handle = self._runner_of(job_id)
        if handle is not None:
            self._kill(job_id, handle)

    # -- the rest ----------------------------------------------------------------------------------

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """The job's log, from the file its runners wrote (kept after the job ended)."""
        return read_log(self.logs_dir / f"{job_id}.log", tail_lines)

    def keep_spares(self) -> None:
        """While `keep_warm`, create idle runners until `WARM_RUNNERS` are ready (without waiting)."""
        while self.keep_warm and len(self._spares) < WARM_RUNNERS:
            self._new_spare()

    def _new_spare(self) -> None:
        name = f"{RUNNER_PREFIX}{uuid.uuid4().hex[:8]}"
        self._spares[name] = ray.remote(JobRunner).options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=0, num_cpus=0,
            resources={HEAD_NODE_RESOURCE: 0.001},
        ).remote(str(self.runs_dir), str(self.logs_dir))

    def _take_spare(self) -> Any:
        if not self._spares:
            self._new_spare()
        name = next(iter(self._spares))
        return self._spares.pop(name)

    def _runner_of(self, job_id: str) -> Any | None:
        if job_id not in self._handles:
            self.reports()  # a restarted scheduler: ask every runner which job it runs
        return self._handles.get(job_id)

    def _ask_all(self) -> list[tuple[str, Any, Any]]:
        """(name, handle, its report | None if dead | "timeout") for every runner on the cluster."""
        found = named_actors(RUNNER_PREFIX)
        handles: list[tuple[str, Any]] = []
        for name in sorted(found - set(self._spares)):
            try:
                handles.append((name, ray.get_actor(name, namespace=NAMESPACE)))
            except ValueError:
                continue  # gone since the listing
        # Our own spares are asked too (one may have died), without waiting for one still importing.
        asked = [(name, handle, handle.report.remote()) for name, handle in [*handles, *self._spares.items()]]
        answers: list[tuple[str, Any, Any]] = []
        deadline = time.monotonic() + self.report_timeout_s
        for name, handle, ref in asked:
            spare = name in self._spares
            try:
                timeout = 0.0 if spare else max(0.0, deadline - time.monotonic())
                answers.append((name, handle, ray.get(ref, timeout=timeout)))
            except GetTimeoutError:
                answers.append((name, handle, "timeout"))
            except RayActorError:
                answers.append((name, handle, None))
        return answers

    def _kill(self, job_id: str, handle: Any) -> None:
        """Kill a runner; its Ray Train run (owned by it) dies with it."""
        ray.kill(handle, no_restart=True)
        self._handles.pop(job_id, None)
        self._last.pop(job_id, None)
