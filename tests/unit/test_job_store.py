"""The job state machine and the state store's job tables: what `factory job ID` and a restarted
scheduler rely on (every transition written with its reason, none lost, none applied twice)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.errors import StoreError
from factory.jobs.states import (
    ALLOWED,
    REGISTRATION,
    TERMINAL,
    InvalidTransitionError,
    JobState,
    check_transition,
    predecessors,
    settled,
)
from factory.store import JobRow, SQLiteStore, StateConflictError
from factory.store.migrations import MIGRATIONS

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def job(job_id: str = "job-1", *, submitted_s: float = T0, **overrides: object) -> JobRow:
    values: dict[str, object] = dict(job_id=job_id, name="resnet", team="vision", kind="train",
                                     spec={"name": "resnet", "num_workers": 2}, spec_hash="abc",
                                     state="QUEUED", submitted_s=submitted_s, deadline_s=submitted_s + 3600,
                                     updated_s=submitted_s)
    values.update(overrides)
    return JobRow(**values)  # type: ignore[arg-type]


def move(store: SQLiteStore, job_id: str, target: JobState, reason: str, time_s: float, **fields: object):
    return store.transition_job(job_id, target, reason, time_s, expected_from=predecessors(target), **fields)


# -- the state machine ----------------------------------------------------------------------------------


def test_terminal_states_have_no_way_out_and_every_state_before_the_end_of_the_run_can_be_cancelled() -> None:
    for state in JobState:
        if state.is_terminal:
            assert ALLOWED[state] == frozenset()
        elif not state.is_finished:
            assert JobState.CANCELLED in ALLOWED[state]
            assert JobState.FAILED in ALLOWED[state]
        else:  # the run is over: only its model's registration goes on
            assert ALLOWED[state] <= REGISTRATION
    assert TERMINAL == {JobState.FAILED, JobState.CANCELLED, JobState.REGISTERED}


def test_registration_follows_success_and_a_failed_one_may_be_retried() -> None:
    assert predecessors(JobState.REGISTERING) == {JobState.SUCCEEDED, JobState.REGISTRATION_FAILED}
    assert predecessors(JobState.REGISTERED) == {JobState.REGISTERING}
    assert predecessors(JobState.REGISTRATION_FAILED) == {JobState.REGISTERING}
    assert not any(state.holds_gpus for state in REGISTRATION)
    # What `wait` waits for: a job that registers a model is not settled when its run succeeds.
    assert settled(JobState.SUCCEEDED, registers_model=False)
    assert not settled(JobState.SUCCEEDED, registers_model=True)
    assert not settled(JobState.REGISTERING, registers_model=True)
    assert settled(JobState.REGISTERED, registers_model=True)
    assert settled(JobState.REGISTRATION_FAILED, registers_model=True)
    assert not settled(JobState.RUNNING, registers_model=False)


def test_only_a_pausing_job_becomes_paused_and_a_paused_one_resumes() -> None:
    assert predecessors(JobState.PAUSED) == {JobState.PAUSING}
    assert JobState.RUNNING in ALLOWED[JobState.PAUSED]
    assert JobState.PAUSING.holds_gpus and not JobState.PAUSED.holds_gpus


def test_a_refused_transition_is_one_line_naming_the_job_and_states() -> None:
    already = r"^job j-9 is already SUCCEEDED; it cannot become CANCELLED$"
    with pytest.raises(InvalidTransitionError, match=already):
        check_transition("j-9", JobState.SUCCEEDED, JobState.CANCELLED)
    with pytest.raises(InvalidTransitionError, match=r"^job j-9 cannot go from QUEUED to PAUSED$"):
        check_transition("j-9", JobState.QUEUED, JobState.PAUSED)
    check_transition("j-9", JobState.WAITING, JobState.WAITING)  # a new wait reason is a transition


# -- the store ----------------------------------------------------------------------------------------


def test_a_submitted_job_round_trips_with_its_first_event(store: SQLiteStore) -> None:
    event = store.insert_job(job(), reason="submitted by cli:alice")
    stored = store.get_job("job-1")
    assert stored == job()
    assert event.id is not None and event.state == "QUEUED" and event.reason == "submitted by cli:alice"
    assert [e.state for e in store.job_events("job-1")] == ["QUEUED"]
    assert store.get_job("nope") is None


def test_a_job_id_is_never_stored_twice(store: SQLiteStore) -> None:
    store.insert_job(job())
    with pytest.raises(StoreError, match="job job-1 already exists"):
        store.insert_job(job(name="other"))
    assert store.get_job("job-1").name == "resnet"  # type: ignore[union-attr]
    assert len(store.job_events("job-1")) == 1


def test_the_timeline_records_every_transition_with_reason_time_and_origin(store: SQLiteStore) -> None:
    store.insert_job(job())
    move(store, "job-1", JobState.WAITING, "price: planned to run from 02:00 UTC", T0 + 1)
    move(store, "job-1", JobState.WAITING, "capacity: the GPUs are planned for more urgent jobs", T0 + 2)
    move(store, "job-1", JobState.RUNNING, "started on node-a", T0 + 3, attempt=1)
    move(store, "job-1", JobState.PAUSING, "price spike", T0 + 4)
    move(store, "job-1", JobState.PAUSED, "checkpoint at step 120", T0 + 5, progress={"step": 120})
    move(store, "job-1", JobState.RUNNING, "resumed", T0 + 6, attempt=2)
    move(store, "job-1", JobState.SUCCEEDED, "finished", T0 + 7, accounting={"energy_kwh": 1.5})
    events = store.job_events("job-1")
    assert [(e.from_state, e.state) for e in events] == [
        ("", "QUEUED"), ("QUEUED", "WAITING"), ("WAITING", "WAITING"), ("WAITING", "RUNNING"),
        ("RUNNING", "PAUSING"), ("PAUSING", "PAUSED"), ("PAUSED", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    assert [e.time_s for e in events] == [T0 + i for i in range(8)]
    assert events[2].reason.startswith("capacity")
    final = store.get_job("job-1")
    assert final is not None
    assert (final.state, final.reason, final.updated_s) == ("SUCCEEDED", "finished", T0 + 7)
    assert (final.attempt, final.progress, final.accounting) == (2, {"step": 120}, {"energy_kwh": 1.5})


def test_a_transition_from_an_unexpected_state_writes_nothing(store: SQLiteStore) -> None:
    store.insert_job(job())
    move(store, "job-1", JobState.CANCELLED, "cancelled by cli:bob", T0 + 1)
    # A stale decision (the scheduler decided to start it before seeing the cancel) is refused whole.
    with pytest.raises(StateConflictError, match="job job-1 is CANCELLED, not ") as refused:
        move(store, "job-1", JobState.RUNNING, "started", T0 + 2, attempt=1)
    assert refused.value.current == "CANCELLED"
    stored = store.get_job("job-1")
    assert stored is not None and (stored.state, stored.attempt, stored.updated_s) == ("CANCELLED", 0, T0 + 1)
    assert [e.state for e in store.job_events("job-1")] == ["QUEUED", "CANCELLED"]
    with pytest.raises(StateConflictError, match="job ghost is unknown"):
        move(store, "ghost", JobState.RUNNING, "started", T0)


def test_list_jobs_filters_by_state_in_submission_order(store: SQLiteStore) -> None:
    for i, submitted in enumerate([T0 + 30, T0 + 10, T0 + 20]):
        store.insert_job(job(f"job-{i}", submitted_s=submitted))
    move(store, "job-2", JobState.RUNNING, "started", T0 + 40)
    assert [j.job_id for j in store.list_jobs()] == ["job-1", "job-2", "job-0"]
    assert [j.job_id for j in store.list_jobs(["QUEUED"])] == ["job-1", "job-0"]
    assert [j.job_id for j in store.list_jobs([JobState.RUNNING, JobState.PAUSING])] == ["job-2"]
    assert store.list_jobs([]) == []
    assert store.count_jobs(["QUEUED", "RUNNING", "FAILED"]) == {"QUEUED": 2, "RUNNING": 1}
    assert store.count_jobs([]) == {}


def test_update_job_changes_only_what_it_names(store: SQLiteStore) -> None:
    store.insert_job(job())
    store.update_job("job-1", progress={"step": 7}, accounting={"energy_kwh": 0.25})
    stored = store.get_job("job-1")
    assert stored is not None and stored.state == "QUEUED" and stored.progress == {"step": 7}
    assert len(store.job_events("job-1")) == 1
    with pytest.raises(ValueError, match="not updatable"):
        store.update_job("job-1", spec_hash="evil")


def test_jobs_survive_a_reopen_and_a_store_from_before_jobs_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteStore(path, migrations=MIGRATIONS[:1]).close()  # the schema before jobs existed
    upgraded = SQLiteStore(path)
    upgraded.insert_job(job())
    move(upgraded, "job-1", JobState.RUNNING, "started", T0 + 1)
    upgraded.close()
    reopened = SQLiteStore(path)
    try:
        assert reopened.get_job("job-1").state == "RUNNING"  # type: ignore[union-attr]
        assert len(reopened.job_events("job-1")) == 2
    finally:
        reopened.close()
    with sqlite3.connect(path) as conn:  # an event cannot point at a job that does not exist
        conn.execute("PRAGMA foreign_keys=ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO job_events (job_id, time_s, state) VALUES ('ghost', 0, 'QUEUED')")
