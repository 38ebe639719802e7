"""The live scheduler's step, without Ray: store + cluster + prices -> policy -> runners.

`JobController.step()` is what the SchedulerActor runs on every tick and event. It
  1. reconciles the store with what the runners report (a run that ended is written as SUCCEEDED,
     FAILED or PAUSED; a runner that vanished leaves its job PAUSED, to resume from its checkpoint),
  2. builds the policy's `Snapshot` from the jobs that are not over,
  3. asks the policy (`factory.scheduling`, the same code `factory simulate` measures), and
  4. carries out its decisions: each one written to the store first (the job's transition with its
     reason and time), then done through the `Runners` port.

Invariants:
  * Write ahead, then act. A crash between the two is repaired by the next step: a job written as
    RUNNING that no runner was confirmed to take (`runner_confirmed`) is handed over again as the same
    attempt (unless a runner did not answer: `Runners.all_answered`), a job written as PAUSING is asked
    again; `Runners.start` is idempotent per attempt, so no attempt runs twice. A confirmed run whose
    runner reports nothing was lost (its node or process died), and so is an unconfirmed one that cannot
    be handed over: it is set back to PAUSED, to resume from its checkpoint as a new attempt.
  * Every transition is allowed by `factory.jobs.states`; a stale one (the job moved meanwhile, e.g.
    it was cancelled) is refused by the store and skipped.
  * No I/O of its own beyond the store and the runners; the clock is the caller's `now_s`.
  * What the policy needs from a job's past is kept in its schedule facts (`factory.jobs.snapshot`),
    written with the transitions they describe: each pause of the policy (`pauses_s`, for the pause
    cap), each waiting job's latest safe start, and the measured overhead of each resume
    (`resume_overheads_s`: from the resume's start until the run reports past the step it resumed
    from, as seen by the step that reads the report).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory.jobs.runners import RunnerReport, Runners, RunnerStatus
from factory.jobs.snapshot import (
    ClusterView,
    deadline_forces,
    job_view,
    num_gpus,
    placement_of,
    ran_s,
)
from factory.jobs.states import InvalidTransitionError, JobState, check_transition, predecessors
from factory.jobs.stored import run_result, schedule_of, stored_spec
from factory.scheduling.model import Policy, PriceOutlook, Snapshot, grid_caps_w
from factory.store import JobRow, StateConflictError, StateStore

ACTIVE = (JobState.QUEUED, JobState.WAITING, JobState.RUNNING, JobState.PAUSING, JobState.PAUSED)


@dataclass
class StepResult:
    """What one step did (for logs, metrics and tests)."""

    started: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)  # job id -> terminal state or PAUSED
    waiting: dict[str, str] = field(default_factory=dict)   # job id -> reason
    decide_again_s: float | None = None  # the policy's `Decisions.decide_again_s`: step again by then
    power_caps_w: dict[str, float] = field(default_factory=dict)  # running job -> its GPUs' cap (W each)


class JobController:
    """Runs a policy over the store's jobs and carries out its decisions through `runners`."""

    def __init__(self, store: StateStore, runners: Runners, policy: Policy, *, gpu_power_w: float,
                 preempt_overhead_s: float = 0.0, pause_timeout_s: float = math.inf) -> None:
        """Wire the controller to its store, runners and policy.

        `pause_timeout_s` (factory seconds): a job asked to pause that has not reached a checkpoint by
        then is stopped (its runner cancelled) and resumes later from its latest checkpoint.
        """
        self.store, self.runners, self.policy = store, runners, policy
        self.gpu_power_w = gpu_power_w
        self.preempt_overhead_s = preempt_overhead_s
        self.pause_timeout_s = pause_timeout_s

    # -- requests ------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], *, kind: str, name: str, team: str, spec_hash: str,
               deadline_s: float | None, now_s: float, submitted_by: str = "",
               schedule: dict[str, Any] | None = None) -> JobRow:
        """Persist a new job as QUEUED (durable before this returns) and return it.

        `schedule`: facts known at submission (e.g. the lineage the registry will record).
        """
        job = JobRow(job_id=new_job_id(name), name=name, team=team, kind=kind, spec=spec,
                     spec_hash=spec_hash, state=JobState.QUEUED, submitted_s=now_s, deadline_s=deadline_s,
                     updated_s=now_s, schedule=schedule or {})
        self.store.insert_job(job, reason=f"submitted by {submitted_by}" if submitted_by else "submitted")
        return job

    def cancel(self, job_id: str, now_s: float, by: str = "",
               with_write: Callable[[JobRow], Any] | None = None) -> JobRow:
        """Cancel a job wherever it is: written first, then its runner (if any) is stopped.

        `with_write(cancelled job)` runs inside the transaction that writes the cancel (an audit event,
        the request's record), never while the runner is being stopped.
        """
        with self.store.transaction():
            job = self.store.get_job(job_id)
            if job is None:
                raise InvalidTransitionError(f"no job {job_id}; `factory jobs` lists the jobs")
            check_transition(job_id, JobState(job.state), JobState.CANCELLED)
            self._move(job, JobState.CANCELLED, f"cancelled by {by}" if by else "cancelled", now_s,
                       **self._closing_run(job, now_s))
            cancelled = self.store.get_job(job_id) or job
            if with_write is not None:
                with_write(cancelled)
        if JobState(job.state).holds_gpus:
            self.runners.cancel(job_id)
        return cancelled

    # -- the step --------------------------------------------------------------------------------

    def step(self, now_s: float, cluster: ClusterView, outlook: PriceOutlook | None) -> StepResult:
        """Reconcile, decide, act (see the module docstring)."""
        result = StepResult()
        reports = self.runners.reports()
        jobs = {job.job_id: job for job in self.store.list_jobs(ACTIVE)}
        self._reconcile(jobs, reports, now_s, result)
        jobs = {job.job_id: job for job in self.store.list_jobs(ACTIVE)}

        # PAUSING jobs still hold their GPUs but are no longer the policy's to move.
        node_gpus = dict(cluster.node_gpus)
        for job in jobs.values():
            if job.state == JobState.PAUSING:
                for node, gpus in placement_of(job):
                    node_gpus[node] = max(0, node_gpus.get(node, 0) - gpus)
        schedulable = [job for job in jobs.values() if job.state != JobState.PAUSING]
        gpu_free = [job for job in schedulable if num_gpus(job) == 0]
        views = [job_view(job, now_s, self.gpu_power_w) for job in schedulable if num_gpus(job) > 0]
        for job in gpu_free:  # no GPU, nothing to plan: a CPU-only job runs at once
            if job.state != JobState.RUNNING:
                self._start(job, (), now_s, "needs no GPU", result)
        if not views:
            return result
        snapshot = Snapshot(now_s=now_s, node_gpus=node_gpus, jobs=views, prices=outlook,
                            power_budget_w=cluster.power_budget_w, quotas=dict(cluster.quotas),
                            preempt_overhead_s=self.preempt_overhead_s,
                            grid_cap_w=_grid_cap_w(now_s, outlook, cluster),
                            min_cap_share=cluster.min_cap_share)
        decisions = self.policy.decide(snapshot)
        result.decide_again_s = decisions.decide_again_s
        jobs = self._judged(jobs, decisions.admitted, dict(decisions.infeasible))
        for pause in decisions.pauses:
            job = jobs[pause.job_id]
            pauses_s = [*schedule_of(job).pauses_s, now_s]  # the pause cap counts these
            if self._move(job, JobState.PAUSING, f"{pause.reason}: {pause.detail}", now_s,
                          schedule={**job.schedule, "pausing_s": now_s, "pauses_s": pauses_s}):
                self.runners.pause(job.job_id)
                result.paused.append(job.job_id)
        price_now = outlook.price_now_per_mwh() if outlook is not None else None
        carbon_now = outlook.carbon_now_g_per_kwh() if outlook is not None else None
        for start in decisions.starts:
            job = jobs[start.job_id]
            spec = stored_spec(job)
            cap = spec.max_price_per_mwh
            if cap is not None and price_now is not None and price_now > float(cap):
                self._wait(job, "price", f"the price ({price_now:.2f}/MWh) is above its max_price_per_mwh "
                           f"({float(cap):.2f})", now_s, result)
                continue
            dirtiest = spec.max_carbon_g_per_kwh
            if dirtiest is not None and carbon_now is not None and carbon_now > dirtiest \
                    and outlook is not None and not deadline_forces(job, now_s, outlook.interval_s):
                self._wait(job, "carbon", f"the grid's carbon intensity ({carbon_now:.0f} gCO2/kWh) is above "
                           f"its max_carbon_g_per_kwh ({dirtiest:g})", now_s, result)
                continue
            self._start(job, start.placement, now_s, "started", result)
        for wait in decisions.waits:
            self._wait(jobs[wait.job_id], str(wait.reason), wait.detail, now_s, result,
                       latest_safe_start_s=wait.latest_safe_start_s)
        result.power_caps_w = dict(decisions.power_caps_w)
        return result

    # -- pieces ------------------------------------------------------------------------------------

    def _reconcile(self, jobs: dict[str, JobRow], reports: dict[str, RunnerReport], now_s: float,
                   result: StepResult) -> None:
        """Write what the runners report; set jobs whose runner vanished back to PAUSED."""
        for job_id, report in reports.items():
            job = jobs.get(job_id)
            if job is None or report.attempt != job.attempt or not JobState(job.state).holds_gpus:
                # A runner of a job that is over (cancelled), or of an older attempt: stop and forget it.
                if report.status.is_over:
                    self.runners.release(job_id)
                else:
                    self.runners.cancel(job_id)
                continue
            if not schedule_of(job).runner_confirmed:  # a runner took it, unnoted by a stopped scheduler
                job = self._confirm_runner(job)
            if report.progress and report.progress != job.progress:
                fields: dict[str, Any] = {"progress": report.progress}
                if not report.status.is_over:  # a run that ended says nothing about its restart alone
                    fields |= self._resume_measured(job, report.progress, now_s)
                self.store.update_job(job_id, **fields)
                job = job.model_copy(update=fields)
            if not report.status.is_over:
                self._stop_if_stuck(job, now_s, result)
                continue
            closing = self._closing_run(job, now_s)
            if report.status is RunnerStatus.SUCCEEDED:
                target = JobState.SUCCEEDED
                moved = self._move(job, target, "finished", now_s, **closing)
            elif report.status is RunnerStatus.FAILED:
                target = JobState.FAILED
                moved = self._move(job, target, f"failed: {report.error}", now_s, error=report.error,
                                   **closing)
            elif report.status is RunnerStatus.PAUSED:
                target = JobState.PAUSED
                moved = self._paused(job, "stopped at a checkpoint", now_s, closing)
            else:  # cancelled by someone else than the scheduler (e.g. `ray job stop`)
                target = JobState.CANCELLED
                moved = self._move(job, target, "its runner was cancelled", now_s, **closing)
            if moved:
                self.runners.release(job_id)
                result.finished[job_id] = target
        for job in jobs.values():
            if not JobState(job.state).holds_gpus or job.job_id in reports:
                continue
            # Handed over again only if every runner answered: a silent one may have taken the run after
            # all, and two runners must never run one attempt. Otherwise it is taken as lost (below): a new
            # attempt, and a silent runner of the old one is cancelled once it reports.
            if job.state == JobState.RUNNING and not schedule_of(job).runner_confirmed \
                    and self.runners.all_answered and self._handed_over_again(job):
                continue
            if self._paused(job, "its runner is gone (node lost or process died); resumes from its "
                            "latest checkpoint", now_s, self._closing_run(job, now_s)):
                result.finished[job.job_id] = JobState.PAUSED

    def _hand_over(self, job: JobRow, placement: tuple[tuple[str, int], ...]) -> None:
        """Start the job's current attempt on a runner, then record that a runner took it.

        The RUNNING transition is written first (write ahead, then act): a scheduler that stops in between
        leaves the run unconfirmed, and the next one hands it over again (`_handed_over_again`) rather
        than taking it for a run whose runner was lost."""
        self.runners.start(job, job.attempt, placement)
        self._confirm_runner(job)

    def _handed_over_again(self, job: JobRow) -> bool:
        """Hand over a run written ahead but never confirmed taken, as the same attempt (idempotent: a
        runner that took it meanwhile is left alone). False if no runner could take it."""
        try:
            self._hand_over(job, placement_of(job))
        except Exception:  # noqa: BLE001 - such a run is resumed as a new attempt, like a lost one
            return False
        return True

    def _confirm_runner(self, job: JobRow) -> JobRow:
        """Record that a runner took the job's current run (`runner_confirmed`); the job as now stored."""
        with self.store.transaction():  # re-read: a cancel may have closed the run meanwhile
            current = self.store.get_job(job.job_id) or job
            if current.attempt == job.attempt and JobState(current.state).holds_gpus \
                    and not schedule_of(current).runner_confirmed:
                schedule = {**current.schedule, "runner_confirmed": True}
                self.store.update_job(job.job_id, schedule=schedule)
                current = current.model_copy(update={"schedule": schedule})
        return current

    def _stop_if_stuck(self, job: JobRow, now_s: float, result: StepResult) -> None:
        """A job asked to pause that has not checkpointed within `pause_timeout_s` is stopped."""
        since_s = schedule_of(job).pausing_s
        if job.state != JobState.PAUSING or since_s is None or now_s - float(since_s) < self.pause_timeout_s:
            return
        reason = (f"did not reach a checkpoint within {self.pause_timeout_s:.0f} s of being asked to pause; "
                  "stopped, resumes from its latest checkpoint")
        if self._move(job, JobState.PAUSED, reason, now_s, **self._closing_run(job, now_s)):
            self.runners.cancel(job.job_id)
            result.finished[job.job_id] = JobState.PAUSED

    @staticmethod
    def _resume_measured(job: JobRow, progress: dict[str, Any], now_s: float) -> dict[str, Any]:
        """{"schedule": ...} with the overhead of the job's current resume recorded, once its run reports
        past the step it resumed from (or, without a step counter, reports at all); {} otherwise."""
        schedule = job.schedule
        if "resuming_from_step" not in schedule or "started_s" not in schedule:
            return {}
        from_step, step = schedule["resuming_from_step"], progress.get("step")
        if from_step is not None and not (_is_number(step) and step > from_step):
            return {}
        overhead_s = max(0.0, now_s - float(schedule["started_s"]))
        kept = {key: value for key, value in schedule.items() if key != "resuming_from_step"}
        measured = [*schedule.get("resume_overheads_s", []), overhead_s]
        return {"schedule": {**kept, "resume_overheads_s": measured}}

    def _paused(self, job: JobRow, reason: str, now_s: float, closing: dict[str, Any]) -> bool:
        if job.state == JobState.RUNNING and not self._move(job, JobState.PAUSING, reason, now_s):
            return False
        current = self.store.get_job(job.job_id)
        return current is not None and self._move(current, JobState.PAUSED, reason, now_s, **closing)

    def _judged(self, jobs: dict[str, JobRow], admitted: tuple[str, ...],
                infeasible: dict[str, str]) -> dict[str, JobRow]:
        """Record which jobs the policy judged (and found infeasible); return the jobs as now stored."""
        if not admitted:
            return jobs
        judged = dict(jobs)
        with self.store.transaction():
            for job_id in admitted:
                schedule = {**jobs[job_id].schedule, "admitted": True}
                if job_id in infeasible:
                    schedule |= {"at_risk": True, "infeasible": infeasible[job_id]}
                self.store.update_job(job_id, schedule=schedule)
                judged[job_id] = jobs[job_id].model_copy(update={"schedule": schedule})
        return judged

    def _start(self, job: JobRow, placement: tuple[tuple[str, int], ...], now_s: float, reason: str,
               result: StepResult) -> None:
        attempt = job.attempt + 1
        schedule = {key: value for key, value in job.schedule.items()
                    if key not in ("latest_safe_start_s", "runner_confirmed")}
        schedule |= {"placement": [list(p) for p in placement], "started_s": now_s}
        if schedule_of(job).run_s > 0:  # a resume: measure what it costs (`_resume_measured`)
            schedule["resuming_from_step"] = run_result(job).step
        if self._move(job, JobState.RUNNING, reason, now_s, attempt=attempt, schedule=schedule):
            started = self.store.get_job(job.job_id)
            assert started is not None
            self._hand_over(started, placement)
            result.started.append(job.job_id)

    def _wait(self, job: JobRow, category: str, detail: str, now_s: float, result: StepResult,
              latest_safe_start_s: float | None = None) -> None:
        """Move the job to WAITING (or keep it there) with its reason and its latest safe start (schedule
        fact `latest_safe_start_s`, the reservation plan's; removed when the policy gives none)."""
        reason = f"{category}: {detail}"
        result.waiting[job.job_id] = reason
        schedule = {key: value for key, value in job.schedule.items() if key != "latest_safe_start_s"}
        if latest_safe_start_s is not None:
            schedule["latest_safe_start_s"] = float(latest_safe_start_s)
        changed = {"schedule": schedule} if schedule != job.schedule else {}
        if job.state == JobState.WAITING and job.reason.split(":", 1)[0] == category:
            if job.reason != reason or changed:  # same cause, new detail (e.g. a new planned start): no event
                self.store.update_job(job.job_id, reason=reason, **changed)
            return
        self._move(job, JobState.WAITING, reason, now_s, **changed)

    def _closing_run(self, job: JobRow, now_s: float) -> dict[str, Any]:
        """The schedule fields that close the job's current run, if it is running."""
        started_s = schedule_of(job).started_s
        if not JobState(job.state).holds_gpus or started_s is None:
            return {}
        schedule = {key: value for key, value in job.schedule.items()
                    if key not in ("started_s", "placement", "pausing_s", "resuming_from_step",
                                   "runner_confirmed")}
        runs = [*schedule.get("runs", []), [started_s, now_s, num_gpus(job)]]
        return {"schedule": {**schedule, "run_s": ran_s(job, now_s), "runs": runs}}

    def _move(self, job: JobRow, target: JobState, reason: str, now_s: float, **fields: Any) -> bool:
        """Write one transition; False (nothing written) if the job moved meanwhile."""
        try:
            self.store.transition_job(job.job_id, target, reason, now_s, expected_from=predecessors(target),
                                      **fields)
        except StateConflictError:
            return False
        return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def new_job_id(name: str) -> str:
    """A short unique id that starts with the job's name, e.g. `resnet-3f9c2a1b`."""
    return f"{name[:40]}-{uuid.uuid4().hex[:8]}"


def _grid_cap_w(now_s: float, outlook: PriceOutlook | None, cluster: ClusterView) -> np.ndarray | None:
    """The grid events' cap per interval of `outlook` (of now alone without one); None without events."""
    if not cluster.grid_events:
        return None
    if outlook is None:  # a policy without prices keeps to an event only while it lasts
        return grid_caps_w(now_s, np.array([now_s]), 1e-3, cluster.grid_events)
    starts_s = np.asarray(outlook.starts_s, dtype=float)
    return grid_caps_w(now_s, starts_s, outlook.interval_s, cluster.grid_events)
