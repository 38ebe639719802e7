"""`Runners` on a Ray cluster: one `actors.job_runner.JobRunner` actor per running job.

Invariants (see `factory.jobs.runners` for the port's):
  * A runner is a named, detached actor `runner:<job id>` in namespace `factory`, on the head node
    (where the state directory, its logs and the jobs' stop files are), taking no CPU slot: the
    training it drives (Ray Train's controller and workers) asks for the job's resources.
  * A runner is never restarted by Ray; a dead one has no report, and the scheduler resumes its job
    as a new attempt from the latest checkpoint.
  * A runner that does not answer within `report_timeout_s` keeps its last report: a busy actor is
    not mistaken for a lost job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from actors.job_runner import RUNNER_PREFIX, JobRunner, read_log, runner_name
from factory.jobs.runners import RunnerReport, RunnerStatus
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE
from factory.store import JobRow

NAME_RELEASE_TIMEOUT_S = 30.0


class RayRunners:
    """Starts, pauses, cancels and watches JobRunner actors."""

    def __init__(self, runs_dir: Path, logs_dir: Path, dashboard_url: str | None = None,
                 report_timeout_s: float = 10.0) -> None:
        self.runs_dir, self.logs_dir = runs_dir.resolve(), logs_dir.resolve()
        self.dashboard_url = dashboard_url
        self.report_timeout_s = report_timeout_s
        self._last: dict[str, RunnerReport] = {}

    def start(self, job: JobRow, attempt: int, placement: tuple[tuple[str, int], ...]) -> None:  # noqa: D102
        handle = _find(job.job_id)
        if handle is not None:
            try:
                report = ray.get(handle.report.remote(), timeout=self.report_timeout_s)
            except (RayActorError, GetTimeoutError):
                report = None
            if report is not None and int(report["attempt"]) == attempt:
                return  # already started (a scheduler that restarted re-issues its write-ahead)
            self._kill(job.job_id, handle)
        ray.remote(JobRunner).options(
            name=runner_name(job.job_id), namespace=NAMESPACE, lifetime="detached", max_restarts=0,
            num_cpus=0, resources={HEAD_NODE_RESOURCE: 0.001},
        ).remote(job.model_dump(mode="json"), attempt, str(self.runs_dir), str(self.logs_dir),
                 self.dashboard_url)

    def pause(self, job_id: str) -> None:  # noqa: D102
        handle = _find(job_id)
        if handle is not None:
            ray.get(handle.request_pause.remote(), timeout=self.report_timeout_s)

    def cancel(self, job_id: str) -> None:  # noqa: D102
        handle = _find(job_id)
        if handle is None:
            return
        try:
            ray.get(handle.cancel.remote(), timeout=self.report_timeout_s)
        except (RayActorError, GetTimeoutError):
            pass
        self._kill(job_id, handle)

    def reports(self) -> dict[str, RunnerReport]:  # noqa: D102
        names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                 if entry["namespace"] == NAMESPACE and entry["name"].startswith(RUNNER_PREFIX)]
        pending = {name[len(RUNNER_PREFIX):]: _find(name[len(RUNNER_PREFIX):]) for name in names}
        refs = {job_id: handle.report.remote() for job_id, handle in pending.items() if handle is not None}
        reports: dict[str, RunnerReport] = {}
        deadline = time.monotonic() + self.report_timeout_s
        for job_id, ref in refs.items():
            try:
                answer = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except GetTimeoutError:
                if job_id in self._last:
                    reports[job_id] = self._last[job_id]
                continue
            except RayActorError:
                continue  # dead: no report, the job is resumed from its checkpoint
            reports[job_id] = RunnerReport(job_id, int(answer["attempt"]), RunnerStatus(answer["status"]),
                                           dict(answer["progress"]), str(answer["error"]))
        self._last = reports
        return dict(reports)

    def release(self, job_id: str) -> None:  # noqa: D102
        handle = _find(job_id)
        if handle is not None:
            self._kill(job_id, handle)

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """The job's log: from its runner if it has one, else from the log file it left."""
        return read_log(self.logs_dir / f"{job_id}.log", tail_lines)

    def _kill(self, job_id: str, handle: Any) -> None:
        """Kill a runner (its Ray Train run dies with it) and wait until its name is free again."""
        ray.kill(handle, no_restart=True)
        self._last.pop(job_id, None)
        deadline = time.monotonic() + NAME_RELEASE_TIMEOUT_S
        while _find(job_id) is not None and time.monotonic() < deadline:
            time.sleep(0.1)


def _find(job_id: str) -> Any | None:
    try:
        return ray.get_actor(runner_name(job_id), namespace=NAMESPACE)
    except ValueError:
        return None
