"""The live scheduler's step on a real SQLite store and the real price-aware policy, with runners in
memory: what users of `factory jobs` / `factory job ID` see happen to their jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import factory.cli.jobs as jobs_cli
from factory.cli.jobs import job_text
from factory.cli.render import compact_times
from factory.client import JobDetail
from factory.clock import ReplayClock
from factory.config import SchedulerConfig
from factory.jobs.controller import JobController
from factory.jobs.policy import live_policy
from factory.jobs.runners import RunnerReport, RunnerStatus
from factory.jobs.snapshot import DAY_S, ClusterView, job_view
from factory.jobs.spec import parse_job_spec
from factory.jobs.states import InvalidTransitionError
from factory.prices.series import utc_label
from factory.scheduling import FifoPolicy, PriceAwarePolicy
from factory.scheduling.model import Decisions, JobView, PriceOutlook, Snapshot
from factory.store import JobRow, SQLiteStore

HOUR = 3600.0
T0 = 1_700_002_800.0  # on the hour
CLUSTER = ClusterView({"node-a": 4})


class MemoryRunners:
    """Runners that do nothing but remember: the test plays the part of the training."""

    def __init__(self) -> None:
        self.live: dict[str, RunnerReport] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.all_answered = True  # in memory, every runner answers (a test may say otherwise)

    def start(self, job: JobRow, attempt: int, placement: tuple[tuple[str, int], ...]) -> None:
        current = self.live.get(job.job_id)
        if current is not None and current.attempt == attempt:
            return  # idempotent per attempt
        self.calls.append(("start", job.job_id, attempt))
        self.live[job.job_id] = RunnerReport(job.job_id, attempt, RunnerStatus.RUNNING)

    def pause(self, job_id: str) -> None:
        self.calls.append(("pause", job_id, self.live[job_id].attempt))

    def cancel(self, job_id: str) -> None:
        self.calls.append(("cancel", job_id, self.live[job_id].attempt))
        self.finish(job_id, RunnerStatus.CANCELLED)

    def reports(self) -> dict[str, RunnerReport]:
        return dict(self.live)

    def release(self, job_id: str) -> None:
        self.live.pop(job_id)

    # what the training does
    def finish(self, job_id: str, status: RunnerStatus, error: str = "", **progress: object) -> None:
        current = self.live[job_id]
        self.live[job_id] = RunnerReport(job_id, current.attempt, status, dict(progress), error)

    def progress(self, job_id: str, **progress: object) -> None:
        """The run reports (its step, metrics) and goes on."""
        current = self.live[job_id]
        self.live[job_id] = RunnerReport(job_id, current.attempt, RunnerStatus.RUNNING, dict(progress))

    def started(self) -> list[tuple[str, int]]:
        return [(job_id, attempt) for call, job_id, attempt in self.calls if call == "start"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def outlook(now_s: float, hourly: list[float]) -> PriceOutlook:
    """Hourly prices from the hour containing `now_s`."""
    start_s = T0 + HOUR * int((now_s - T0) // HOUR)
    return PriceOutlook(np.array([start_s + HOUR * i for i in range(len(hourly))]), HOUR,
                        np.array(hourly, dtype=float), np.ones(len(hourly), dtype=bool))


def submit(controller: JobController, name: str = "train", *, gpus: int = 2, estimate_s: float = HOUR,
           deadline_h: float | None = 6.0, now_s: float = T0, **spec: object) -> str:
    full = {"name": name, "kind": "train", "train_loop": "factory.examples.regression:train_loop_per_worker",
            "num_workers": 1, "gpus_per_worker": gpus, "estimated_duration_s": estimate_s, "preemptible": True,
            **spec}
    stored = parse_job_spec(full).model_dump(mode="json")  # as the scheduler stores a submitted spec
    job = controller.submit(stored, kind=stored["kind"], name=name, team="vision",
                            spec_hash="h", now_s=now_s, submitted_by="cli:alice",
                            deadline_s=None if deadline_h is None else now_s + deadline_h * HOUR)
    return job.job_id


def timeline(store: SQLiteStore, job_id: str) -> list[str]:
    return [event.state for event in store.job_events(job_id)]


def make(store: SQLiteStore, policy: object | None = None) -> tuple[JobController, MemoryRunners]:
    runners = MemoryRunners()
    return JobController(store, runners, policy or PriceAwarePolicy(), gpu_power_w=700.0), runners


def test_a_job_waits_for_the_cheap_hour_then_runs_and_succeeds(store: SQLiteStore) -> None:
    controller, runners = make(store)
    job_id = submit(controller)
    assert store.get_job(job_id).state == "QUEUED"  # type: ignore[union-attr]

    result = controller.step(T0, CLUSTER, outlook(T0, [90, 90, 10, 90, 90, 90, 90]))
    job = store.get_job(job_id)
    assert job is not None and job.state == "WAITING" and job.reason.startswith("price: cheap window at")
    assert result.waiting[job_id] == job.reason and runners.calls == []

    # Still the dear hour: same cause, no new timeline entry.
    controller.step(T0 + 600, CLUSTER, outlook(T0 + 600, [90, 90, 10, 90, 90, 90, 90]))
    assert timeline(store, job_id) == ["QUEUED", "WAITING"]

    cheap_s = T0 + 2 * HOUR
    controller.step(cheap_s, CLUSTER, outlook(cheap_s, [10, 90, 90, 90, 90]))
    assert runners.started() == [(job_id, 1)]
    running = store.get_job(job_id)
    assert running is not None and (running.state, running.attempt) == ("RUNNING", 1)

    runners.finish(job_id, RunnerStatus.SUCCEEDED, step=100, loss=0.01)
    result = controller.step(cheap_s + HOUR, CLUSTER, outlook(cheap_s + HOUR, [90, 90, 90, 90]))
    done = store.get_job(job_id)
    assert done is not None and done.state == "SUCCEEDED" and result.finished == {job_id: "SUCCEEDED"}
    assert done.progress == {"step": 100, "loss": 0.01}
    assert done.schedule["run_s"] == pytest.approx(HOUR)
    assert done.schedule["runs"] == [[cheap_s, cheap_s + HOUR, 2]]
    assert timeline(store, job_id) == ["QUEUED", "WAITING", "RUNNING", "SUCCEEDED"]
    assert runners.live == {}  # released once written


def test_a_deadline_that_forbids_waiting_starts_the_job_in_the_dear_hour(store: SQLiteStore) -> None:
    controller, runners = make(store)
    job_id = submit(controller, estimate_s=HOUR, deadline_h=1.5)
    controller.step(T0, CLUSTER, outlook(T0, [90, 10, 10, 10]))
    assert runners.started() == [(job_id, 1)]


def carbon_outlook(now_s: float, hourly_g_per_kwh: list[float]) -> PriceOutlook:
    """A flat price and an hourly carbon intensity from the hour containing `now_s`."""
    flat = outlook(now_s, [50.0] * len(hourly_g_per_kwh))
    return PriceOutlook(flat.starts_s, HOUR, flat.price_per_mwh, flat.known,
                        carbon_g_per_kwh=np.array(hourly_g_per_kwh, dtype=float))


def test_a_job_with_a_carbon_ceiling_waits_for_cleaner_power_unless_its_deadline_forces_it(
        store: SQLiteStore) -> None:
    controller, runners = make(store, FifoPolicy())
    clean = submit(controller, "clean", gpus=1, deadline_h=6, max_carbon_g_per_kwh=300)
    forced = submit(controller, "forced", gpus=1, deadline_h=1.5, max_carbon_g_per_kwh=300)
    anything = submit(controller, "anything", gpus=1, deadline_h=6)

    controller.step(T0, CLUSTER, carbon_outlook(T0, [450, 450, 200, 200, 450, 450]))
    waiting = store.get_job(clean)
    assert waiting is not None and waiting.state == "WAITING"
    assert waiting.reason == "carbon: the grid's carbon intensity (450 gCO2/kWh) is above its " \
        "max_carbon_g_per_kwh (300)"
    assert sorted(runners.started()) == sorted([(forced, 1), (anything, 1)])  # one cannot wait an hour

    controller.step(T0 + HOUR, CLUSTER, carbon_outlook(T0 + HOUR, [450, 200, 200, 450, 450]))
    assert (clean, 1) not in runners.started()
    controller.step(T0 + 2 * HOUR, CLUSTER, carbon_outlook(T0 + 2 * HOUR, [200, 200, 450, 450]))
    assert (clean, 1) in runners.started()


def test_a_price_spike_pauses_a_running_job_which_resumes_as_a_new_attempt(store: SQLiteStore) -> None:
    controller, runners = make(store)
    job_id = submit(controller, estimate_s=2 * HOUR, deadline_h=10)
    controller.step(T0, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert runners.started() == [(job_id, 1)]

    spike_s = T0 + HOUR
    result = controller.step(spike_s, CLUSTER, outlook(spike_s, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert result.paused == [job_id] and ("pause", job_id, 1) in runners.calls
    pausing = store.get_job(job_id)
    assert pausing is not None and pausing.state == "PAUSING" and pausing.reason.startswith("price")

    runners.finish(job_id, RunnerStatus.PAUSED, step=50)
    controller.step(spike_s + 60, CLUSTER, outlook(spike_s + 60, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    paused = store.get_job(job_id)
    assert paused is not None and paused.state in ("PAUSED", "WAITING")
    assert paused.schedule["run_s"] == pytest.approx(HOUR + 60)  # it ran until it stopped
    assert paused.progress == {"step": 50}

    cheap_s = T0 + 3 * HOUR
    controller.step(cheap_s, CLUSTER, outlook(cheap_s, [10, 10, 90, 90, 90, 90, 90]))
    assert runners.started() == [(job_id, 1), (job_id, 2)]
    assert timeline(store, job_id)[:5] == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "WAITING"]
    assert timeline(store, job_id)[-1] == "RUNNING"


def test_cancel_stops_a_running_job_and_refuses_a_finished_one(store: SQLiteStore) -> None:
    controller, runners = make(store, FifoPolicy())
    queued, running = submit(controller, "a", gpus=4), submit(controller, "b", gpus=4)
    controller.step(T0, CLUSTER, None)
    assert runners.started() == [(queued, 1)]
    cancelled = controller.cancel(queued, T0 + 10, by="cli:bob")
    assert cancelled.state == "CANCELLED" and cancelled.reason == "cancelled by cli:bob"
    assert ("cancel", queued, 1) in runners.calls
    controller.cancel(running, T0 + 11)  # a waiting job: nothing to stop
    controller.step(T0 + 20, CLUSTER, None)
    assert runners.live == {} and runners.started() == [(queued, 1)]
    with pytest.raises(InvalidTransitionError, match=f"job {queued} is already CANCELLED"):
        controller.cancel(queued, T0 + 30)
    with pytest.raises(InvalidTransitionError, match="no job nope"):
        controller.cancel("nope", T0 + 30)


def test_a_failed_run_is_failed_with_its_error(store: SQLiteStore) -> None:
    controller, runners = make(store, FifoPolicy())
    job_id = submit(controller)
    controller.step(T0, CLUSTER, None)
    runners.finish(job_id, RunnerStatus.FAILED, error="RuntimeError: loss is NaN")
    controller.step(T0 + 60, CLUSTER, None)
    job = store.get_job(job_id)
    assert job is not None and job.state == "FAILED" and job.error == "RuntimeError: loss is NaN"
    assert job.reason == "failed: RuntimeError: loss is NaN"


def test_a_job_whose_runner_vanished_is_paused_and_started_again(store: SQLiteStore) -> None:
    controller, runners = make(store, FifoPolicy())
    job_id = submit(controller)
    controller.step(T0, CLUSTER, None)
    runners.live.clear()  # the node died with the runner
    result = controller.step(T0 + 300, CLUSTER, None)
    assert result.finished == {job_id: "PAUSED"}
    assert runners.started() == [(job_id, 1), (job_id, 2)]  # fifo resumes it at once, as a new attempt
    job = store.get_job(job_id)
    assert job is not None and job.state == "RUNNING" and job.schedule["run_s"] == pytest.approx(300)
    assert "its runner is gone" in store.job_events(job_id)[-2].reason


def test_a_restarted_scheduler_reattaches_without_starting_anything_twice(store: SQLiteStore) -> None:
    controller, runners = make(store, FifoPolicy())
    first, second = submit(controller, "a", gpus=2), submit(controller, "b", gpus=2)
    controller.step(T0, CLUSTER, None)
    # The scheduler dies; Ray restarts it over the same store, and the runners (named actors) live on.
    restarted = JobController(store, runners, FifoPolicy(), gpu_power_w=700.0)
    restarted.step(T0 + 5, CLUSTER, None)
    restarted.step(T0 + 10, CLUSTER, None)
    assert runners.started() == [(first, 1), (second, 1)]
    assert [job.state for job in store.list_jobs()] == ["RUNNING", "RUNNING"]


class SchedulerKilled(BaseException):
    """The scheduler's process dies (Ray kills it): nothing after this line of the step runs."""


class DyingOnHandOver(MemoryRunners):
    """Runners whose scheduler is killed while handing a run over: before, or just after, a runner took it."""

    def __init__(self, live: dict[str, RunnerReport], taken: bool) -> None:
        super().__init__()
        self.live, self.taken = live, taken

    def start(self, job: JobRow, attempt: int, placement: tuple[tuple[str, int], ...]) -> None:
        if self.taken:
            super().start(job, attempt, placement)
        raise SchedulerKilled


@pytest.mark.parametrize("taken", [False, True], ids=["before-a-runner-took-it", "after-a-runner-took-it"])
def test_a_scheduler_killed_while_starting_a_job_leaves_it_to_run_once_as_that_attempt(
        store: SQLiteStore, taken: bool) -> None:
    survivors = MemoryRunners()  # the runners (named actors) outlive the scheduler
    dying = JobController(store, DyingOnHandOver(survivors.live, taken), FifoPolicy(), gpu_power_w=700.0)
    job_id = submit(dying)
    with pytest.raises(SchedulerKilled):
        dying.step(T0, CLUSTER, None)
    written = store.get_job(job_id)
    assert written is not None and written.state == "RUNNING" and written.attempt == 1  # written ahead

    restarted = JobController(store, survivors, FifoPolicy(), gpu_power_w=700.0)
    restarted.step(T0 + 5, CLUSTER, None)
    restarted.step(T0 + 10, CLUSTER, None)
    assert survivors.live[job_id].attempt == 1  # the same run: nothing paused, nothing started twice
    assert survivors.started() == ([] if taken else [(job_id, 1)])
    assert timeline(store, job_id) == ["QUEUED", "RUNNING"]

    survivors.live.clear()  # only now is its runner lost (its node died): resumed as a new attempt
    assert restarted.step(T0 + 300, CLUSTER, None).finished == {job_id: "PAUSED"}
    assert survivors.live[job_id].attempt == 2
    assert timeline(store, job_id) == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "RUNNING"]


def test_a_run_written_ahead_is_not_handed_to_a_second_runner_while_a_runner_is_silent(
        store: SQLiteStore) -> None:
    survivors = MemoryRunners()
    dying = JobController(store, DyingOnHandOver(survivors.live, taken=False), FifoPolicy(),
                          gpu_power_w=700.0)
    job_id = submit(dying)
    with pytest.raises(SchedulerKilled):
        dying.step(T0, CLUSTER, None)
    survivors.all_answered = False  # a silent runner may hold the run

    JobController(store, survivors, FifoPolicy(), gpu_power_w=700.0).step(T0 + 5, CLUSTER, None)
    # Taken as lost: a new attempt (a silent runner of attempt 1 is cancelled once it reports), never a
    # second runner of attempt 1.
    assert survivors.started() == [(job_id, 2)]
    assert timeline(store, job_id) == ["QUEUED", "RUNNING", "PAUSING", "PAUSED", "RUNNING"]


def test_a_job_needing_no_gpu_runs_at_once_and_a_price_cap_holds_a_job(store: SQLiteStore) -> None:
    controller, runners = make(store)
    cpu_only = submit(controller, "cpu", gpus=0)
    capped = submit(controller, "capped", deadline_h=1.5, max_price_per_mwh=50.0)
    controller.step(T0, CLUSTER, outlook(T0, [90, 10, 10]))
    assert runners.started() == [(cpu_only, 1)]
    job = store.get_job(capped)
    assert job is not None and job.state == "WAITING" and "above its max_price_per_mwh" in job.reason


def test_infeasible_at_admission_is_recorded_on_the_job(store: SQLiteStore) -> None:
    controller, _ = make(store)
    job_id = submit(controller, gpus=4, estimate_s=2 * HOUR, deadline_h=1.0)
    controller.step(T0, CLUSTER, outlook(T0, [90, 10, 10]))
    job = store.get_job(job_id)
    assert job is not None and job.schedule["admitted"] and job.schedule["at_risk"]
    assert job.schedule["infeasible"].startswith("cannot finish before ")
    assert "earliest finish" in job.schedule["infeasible"]


def test_a_job_that_does_not_reach_a_checkpoint_is_stopped_after_the_pause_timeout(
        store: SQLiteStore) -> None:
    runners = MemoryRunners()
    controller = JobController(store, runners, PriceAwarePolicy(), gpu_power_w=700.0, pause_timeout_s=600.0)
    job_id = submit(controller, estimate_s=2 * HOUR, deadline_h=10)
    controller.step(T0, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    spike_s = T0 + HOUR
    controller.step(spike_s, CLUSTER, outlook(spike_s, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert store.get_job(job_id).state == "PAUSING"  # type: ignore[union-attr]
    # The loop never checks its stop file: still running 5 minutes later, then stopped at 10.
    controller.step(spike_s + 300, CLUSTER, outlook(spike_s + 300, [500, 500, 10, 10, 90, 90, 90, 90]))
    assert store.get_job(job_id).state == "PAUSING"  # type: ignore[union-attr]
    result = controller.step(spike_s + 601, CLUSTER, outlook(spike_s + 601, [500, 500, 10, 10, 90, 90, 90]))
    job = store.get_job(job_id)
    assert job is not None and result.finished == {job_id: "PAUSED"}
    assert ("cancel", job_id, 1) in runners.calls
    paused = [event for event in store.job_events(job_id) if event.state == "PAUSED"]
    assert len(paused) == 1 and "did not reach a checkpoint within 600 s" in paused[0].reason
    assert job.state == "WAITING"  # for the cheap hours, to resume from its latest checkpoint
    assert job.schedule["run_s"] == pytest.approx(HOUR + 601) and "pausing_s" not in job.schedule


# -- what a waiting job is promised, how often it was paused, what its resumes cost -----------------


class RecordingPolicy:
    """The real policy, remembering what it was shown and what it answered."""

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.snapshots: list[Snapshot] = []
        self.decisions: list[Decisions] = []
        self.needs_prices = True

    def decide(self, snapshot: Snapshot) -> Decisions:
        self.snapshots.append(snapshot)
        self.decisions.append(self.policy.decide(snapshot))  # type: ignore[attr-defined]
        return self.decisions[-1]

    def view(self, job_id: str) -> JobView:
        """The job as the latest decision saw it."""
        return next(view for view in self.snapshots[-1].jobs if view.job_id == job_id)


def test_a_waiting_jobs_latest_safe_start_is_stored_and_shown_until_it_starts(store: SQLiteStore) -> None:
    policy = RecordingPolicy(PriceAwarePolicy())
    controller, _ = make(store, policy)
    job_id = submit(controller, estimate_s=HOUR, deadline_h=6.0)
    controller.step(T0, CLUSTER, outlook(T0, [90, 90, 10, 90, 90, 90, 90]))

    wait = next(wait for wait in policy.decisions[-1].waits if wait.job_id == job_id)
    assert wait.latest_safe_start_s is not None
    # Waiting for the cheap hour only inside its slack: started by then, it finishes before its deadline.
    assert T0 + 2 * HOUR < wait.latest_safe_start_s <= T0 + 6 * HOUR - HOUR
    job = store.get_job(job_id)
    assert job is not None and job.state == "WAITING"
    assert job.schedule["latest_safe_start_s"] == wait.latest_safe_start_s
    assert job.latest_safe_start_s == wait.latest_safe_start_s
    label = utc_label(wait.latest_safe_start_s)
    assert f"latest safe start {label}" in job.reason and job.reason.startswith("price: cheap window at")
    shown = job.model_dump(mode="json")  # what `factory jobs --json`, `factory job ID --json` and the SDK get
    assert shown["latest_safe_start_s"] == wait.latest_safe_start_s
    assert datetime.fromisoformat(shown["latest_safe_start"]).timestamp() == wait.latest_safe_start_s
    assert {"job_id", "state", "reason", "schedule", "deadline_s"} <= set(shown)  # every key kept
    assert JobRow.model_validate(shown).latest_safe_start == datetime.fromtimestamp(wait.latest_safe_start_s,
                                                                                    tz=UTC)
    text = job_text(job, store.job_events(job_id), now_s=T0)
    assert f"Start by   {label.removesuffix(' UTC')} (its latest safe start" in text
    # As `factory jobs` and the demo show it: the times of the day as HH:MM (T0 is 23:00, the rest tomorrow).
    tomorrow = datetime.fromtimestamp(T0 + HOUR, tz=UTC)
    assert compact_times(job.reason, tomorrow.date()) == \
        f"price: cheap window at 01:00; latest safe start {label[11:16]}; deadline 05:00"

    cheap_s = T0 + 2 * HOUR
    controller.step(cheap_s, CLUSTER, outlook(cheap_s, [10, 90, 90, 90, 90]))
    running = store.get_job(job_id)
    assert running is not None and running.state == "RUNNING"
    assert running.latest_safe_start is None and "latest_safe_start_s" not in running.schedule
    assert "Start by" not in job_text(running, store.job_events(job_id), now_s=cheap_s)


def test_the_policys_pauses_are_counted_and_only_those_of_the_last_day_hold_a_job_back(
        store: SQLiteStore) -> None:
    policy = RecordingPolicy(PriceAwarePolicy())
    controller, runners = make(store, policy)
    job_id = submit(controller, estimate_s=2 * HOUR, deadline_h=10)
    controller.step(T0, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert policy.view(job_id).pauses_today == 0
    controller.step(T0 + 600, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert policy.view(job_id).started_s == T0  # its run began at the first step (the price-pause rule)
    spike_s = T0 + HOUR
    controller.step(spike_s, CLUSTER, outlook(spike_s, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    pausing = store.get_job(job_id)
    assert pausing is not None and pausing.state == "PAUSING"
    assert pausing.schedule["pauses_s"] == [spike_s] and pausing.pauses == 1

    runners.finish(job_id, RunnerStatus.PAUSED, step=50)
    controller.step(spike_s + 60, CLUSTER, outlook(spike_s + 60, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert policy.view(job_id).pauses_today == 1  # the policy sees its pause (the pause cap)
    paused = store.get_job(job_id)
    assert paused is not None and paused.model_dump(mode="json")["pauses"] == 1
    assert "Pauses     1 (1 in the last 24 h)" in job_text(paused, store.job_events(job_id), now_s=spike_s)

    # Only the last 24 h count: pauses a day and more ago are forgotten by the cap, not by the total.
    old = paused.model_copy(update={"schedule": {**paused.schedule,
                                                 "pauses_s": [spike_s - DAY_S - 1, spike_s - DAY_S + 120,
                                                              spike_s]}})
    assert job_view(old, spike_s + 60, 700.0).pauses_today == 2
    assert job_view(old, spike_s + DAY_S, 700.0).pauses_today == 0
    assert old.pauses == 3
    assert "Pauses     3 (2 in the last 24 h)" in job_text(old, store.job_events(job_id), now_s=spike_s + 60)


def test_a_jobs_resume_overhead_is_learnt_from_its_resume_and_reaches_the_policy(store: SQLiteStore) -> None:
    policy = RecordingPolicy(PriceAwarePolicy())
    controller, runners = make(store, policy)
    job_id = submit(controller, estimate_s=2 * HOUR, deadline_h=10)
    controller.step(T0, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    runners.progress(job_id, step=20)
    spike_s = T0 + HOUR
    controller.step(spike_s, CLUSTER, outlook(spike_s, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    runners.finish(job_id, RunnerStatus.PAUSED, step=50)
    controller.step(spike_s + 60, CLUSTER, outlook(spike_s + 60, [500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert policy.view(job_id).resume_overhead_s is None  # never resumed: the configured default applies
    assert store.get_job(job_id).schedule.get("resume_overheads_s") is None  # type: ignore[union-attr]

    cheap_s = T0 + 3 * HOUR
    controller.step(cheap_s, CLUSTER, outlook(cheap_s, [10, 10, 90, 90, 90, 90, 90]))
    assert runners.started() == [(job_id, 1), (job_id, 2)]
    resumed = store.get_job(job_id)
    assert resumed is not None and resumed.schedule["resuming_from_step"] == 50
    # Restarting: the new run has not yet reported past the step it resumed from.
    runners.progress(job_id, step=50)
    controller.step(cheap_s + 120, CLUSTER, outlook(cheap_s + 120, [10, 10, 90, 90, 90, 90, 90]))
    assert "resume_overheads_s" not in store.get_job(job_id).schedule  # type: ignore[union-attr]
    runners.progress(job_id, step=55)
    controller.step(cheap_s + 300, CLUSTER, outlook(cheap_s + 300, [10, 10, 90, 90, 90, 90, 90]))
    learnt = store.get_job(job_id)
    assert learnt is not None and learnt.schedule["resume_overheads_s"] == [300.0]
    assert "resuming_from_step" not in learnt.schedule
    shown = job_text(learnt, store.job_events(job_id), now_s=cheap_s + 300)
    assert "a resume costs it about 5m00s (measured over 1)" in shown

    controller.step(cheap_s + 360, CLUSTER, outlook(cheap_s + 360, [10, 10, 90, 90, 90, 90, 90]))
    assert policy.view(job_id).resume_overhead_s == 300.0
    # Two measured resumes: the policy plans with their mean.
    two = learnt.model_copy(update={"schedule": {**learnt.schedule, "resume_overheads_s": [300.0, 900.0]}})
    assert job_view(two, cheap_s, 700.0).resume_overhead_s == 600.0


def test_the_live_policy_takes_the_pause_cap_from_the_config(store: SQLiteStore) -> None:
    assert live_policy(SchedulerConfig(max_pauses_per_day=1)) == PriceAwarePolicy(max_pauses_per_day=1)
    assert isinstance(live_policy(SchedulerConfig(policy="fifo")), FifoPolicy)
    # With a cap of 0, a job started now could not be paused at the spike that pauses it under the default
    # cap (see above): it is planned in one unbroken run, and waits for the two cheap hours after the spike.
    controller, runners = make(store, live_policy(SchedulerConfig(max_pauses_per_day=0)))
    job_id = submit(controller, estimate_s=2 * HOUR, deadline_h=10)
    controller.step(T0, CLUSTER, outlook(T0, [10, 500, 500, 10, 10, 90, 90, 90, 90, 90]))
    assert store.get_job(job_id).state == "WAITING"  # type: ignore[union-attr]
    cheap_s = T0 + 3 * HOUR
    controller.step(cheap_s, CLUSTER, outlook(cheap_s, [10, 10, 90, 90, 90, 90, 90]))
    assert store.get_job(job_id).state == "RUNNING"  # type: ignore[union-attr]


class StoreClient:
    """What `factory jobs` / `factory job ID` ask of the SDK, answered from the store at `now_s`."""

    def __init__(self, store: SQLiteStore, now_s: float) -> None:
        self.store, self.now_s = store, now_s

    def jobs(self, states: list[str] | None) -> list[JobRow]:
        return self.store.list_jobs(states)

    def job(self, job_id: str) -> JobDetail:
        job = self.store.get_job(job_id)
        assert job is not None
        return JobDetail(job=job, events=self.store.job_events(job_id))

    def clock(self) -> ReplayClock:
        return ReplayClock(self.now_s, 1.0, anchor_wall_s=0.0, wall=lambda: 0.0)  # stopped at `now_s`

    def now(self) -> datetime:
        return self.clock().now()


def test_factory_jobs_and_factory_job_show_a_waiting_jobs_promise(store: SQLiteStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    controller, _ = make(store)
    job_id = submit(controller, estimate_s=HOUR, deadline_h=6.0)
    controller.step(T0, CLUSTER, outlook(T0, [90, 90, 10, 90, 90, 90, 90]))
    job = store.get_job(job_id)
    assert job is not None and job.latest_safe_start_s is not None
    latest = utc_label(job.latest_safe_start_s).removesuffix(" UTC")
    monkeypatch.setattr(jobs_cli, "connect", lambda *_: StoreClient(store, T0 + HOUR))  # it is 00:00 now
    runner = CliRunner()

    listed = runner.invoke(jobs_cli.jobs, [])
    assert listed.exit_code == 0, listed.output
    header, line = listed.output.splitlines()[:2]
    assert "LATEST START" in header and f"  {latest}  " in line
    why = f"price: cheap window at 01:00; latest safe start {latest[11:]}; deadline 05:00"
    assert line.rstrip().endswith(why)  # today's times as HH:MM
    as_json = json.loads(runner.invoke(jobs_cli.jobs, ["--json"]).output)
    assert as_json[0]["latest_safe_start_s"] == job.latest_safe_start_s and as_json[0]["pauses"] == 0

    shown = runner.invoke(jobs_cli.job, [job_id])
    assert f"Start by   {latest} (its latest safe start" in shown.output and "Pauses     0" in shown.output
    detail = json.loads(runner.invoke(jobs_cli.job, [job_id, "--json"]).output)
    assert set(detail) == {"job", "events"}
    assert detail["job"]["latest_safe_start"] == f"{latest.replace(' ', 'T')}:00Z"


def test_reasons_show_the_times_of_today_as_hours_and_minutes() -> None:
    reason = ("price: cheap window at 2024-07-01 02:00 UTC; latest safe start 2024-07-01 04:10 UTC; "
              "deadline 2024-07-02 09:00:35 UTC")
    assert compact_times(reason, datetime(2024, 7, 1, tzinfo=UTC).date()) == \
        "price: cheap window at 02:00; latest safe start 04:10; deadline 2024-07-02 09:00"


def test_a_step_asks_to_decide_again_at_a_latest_safe_start_inside_the_hour(store: SQLiteStore) -> None:
    # "first" holds all 4 GPUs for 30 min. "second" must start within this hour to make its deadline, so
    # the step asks for a decision by its latest safe start, not only at the hour's end; the live
    # scheduler's loop sleeps no longer than that.
    controller, _ = make(store)
    submit(controller, "first", gpus=4, estimate_s=HOUR / 2, deadline_h=0.75, preemptible=False)
    second = submit(controller, "second", gpus=4, estimate_s=HOUR, deadline_h=1.75)
    result = controller.step(T0, CLUSTER, outlook(T0, [50.0] * 6))
    waiting = store.get_job(second)
    assert waiting is not None and waiting.state == "WAITING" and waiting.latest_safe_start_s is not None
    assert T0 < waiting.latest_safe_start_s < T0 + HOUR
    assert result.decide_again_s == waiting.latest_safe_start_s
    # Nothing of the kind when every waiting job may wait past this hour (for a cheap one, here).
    cheap_later = submit(controller, "cheap-later", gpus=1, estimate_s=HOUR, deadline_h=12.0, now_s=T0 + HOUR)
    controller.cancel(second, T0 + HOUR, by="cli:alice")
    result = controller.step(T0 + HOUR, CLUSTER, outlook(T0 + HOUR, [90.0, 90.0, 10.0] + [90.0] * 12))
    assert store.get_job(cheap_later).state == "WAITING"  # type: ignore[union-attr]
    assert result.decide_again_s is None


def test_a_job_moved_for_a_gang_pauses_at_its_checkpoint_and_resumes_on_the_other_node(
        store: SQLiteStore) -> None:
    two_nodes = ClusterView({"node-a": 8, "node-b": 8})
    controller, runners = make(store)
    flat = [50.0] * 30
    # Nine single-GPU jobs: best fit packs eight on node-a, the ninth goes to node-b.
    small = [submit(controller, f"small{i}", gpus=1, estimate_s=4 * HOUR, deadline_h=24) for i in range(9)]
    controller.step(T0, two_nodes, outlook(T0, flat))
    placement = {job_id: store.get_job(job_id).schedule["placement"] for job_id in small}  # type: ignore[union-attr]
    lone = next(job_id for job_id, where in placement.items() if where == [["node-b", 1]])
    leaving = next(job_id for job_id, where in placement.items() if where == [["node-a", 1]])
    runners.finish(leaving, RunnerStatus.SUCCEEDED, step=10)  # node-a: 1 free, node-b: 7 free

    # An 8-GPU job of one worker that must start now to meet its deadline.
    now_s = T0 + 600
    gang = submit(controller, "gang", gpus=8, estimate_s=6 * HOUR, deadline_h=6.1, now_s=now_s)
    result = controller.step(now_s, two_nodes, outlook(now_s, flat))
    assert result.paused == [lone]
    moving = store.get_job(lone)
    assert moving is not None and moving.state == "PAUSING"
    assert moving.reason.startswith("capacity: moved to node-a to make room for job " + gang)
    running_gang = store.get_job(gang)
    assert running_gang is not None and running_gang.state == "RUNNING"
    assert running_gang.schedule["placement"] == [["node-b", 8]]

    # Once its checkpoint is written, the next step resumes it where it was moved.
    runners.finish(lone, RunnerStatus.PAUSED, step=20)
    controller.step(now_s + 60, two_nodes, outlook(now_s + 60, flat))
    resumed = store.get_job(lone)
    assert resumed is not None and (resumed.state, resumed.attempt) == ("RUNNING", 2)
    assert resumed.schedule["placement"] == [["node-a", 1]]
