"""A succeeded job's model registration as job states, on a real SQLite store with a fake registry.

The registry is the one seam faked here (it is a Ray actor in the factory): it either returns the
version row, refuses (`FactoryError`), or does not answer (`ClusterError`). Like the RegistryActor, it
registers a job's checkpoint once: asked again for the same job, it returns the same row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.errors import ClusterError, FactoryError
from factory.jobs.registration import Registrations
from factory.jobs.spec import parse_job_spec, spec_hash
from factory.store import JobRow, SQLiteStore, open_store


class FakeRegistry:
    """Answers `register(job_id)` as scripted, then registers (once per job, like the RegistryActor)."""

    def __init__(self, *script: BaseException) -> None:
        self.script = list(script)
        self.versions: dict[str, int] = {}  # job id -> version
        self.calls = 0

    def __call__(self, job_id: str) -> dict[str, Any]:
        self.calls += 1
        if self.script:
            raise self.script.pop(0)
        version = self.versions.setdefault(job_id, len(self.versions) + 1)
        return {"name": "reg", "version": version}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def succeeded(store: SQLiteStore, job_id: str, register_as: str | None = "reg",
              accounted: bool = True) -> JobRow:
    """A job whose run succeeded (and was accounted), as the scheduler leaves it."""
    spec = parse_job_spec({"name": "fit", "kind": "train", "estimated_duration_s": 60.0,
                           "register_as": register_as,
                           "train_loop": "factory.examples.regression:train_loop_per_worker"})
    store.insert_job(JobRow(job_id=job_id, name="fit", team="ml", kind="train",
                            spec=spec.model_dump(mode="json"), spec_hash=spec_hash(spec), state="QUEUED",
                            submitted_s=0.0, updated_s=0.0))
    for state, origin in (("RUNNING", "QUEUED"), ("SUCCEEDED", "RUNNING")):
        store.transition_job(job_id, state, state.lower(), 1.0, expected_from=[origin])
    if accounted:
        store.update_job(job_id, accounting={"energy_kwh": 0.5})
    job = store.get_job(job_id)
    assert job is not None
    return job


def registrations(store: SQLiteStore, registry: FakeRegistry, **options: Any) -> Registrations:
    return Registrations(store, lambda: 100.0, registry, retry_s=0.0, **options)


def drain(manager: Registrations) -> None:
    while manager.register_next() is not None:
        pass


def states(store: SQLiteStore, job_id: str) -> list[str]:
    return [event.state for event in store.job_events(job_id)]


def test_an_accounted_success_is_registered_and_says_as_what(store: SQLiteStore) -> None:
    registry = FakeRegistry()
    manager = registrations(store, registry)
    manager.after_accounting(succeeded(store, "j1"))
    assert store.get_job("j1").state == "REGISTERING"  # type: ignore[union-attr]
    drain(manager)
    job = store.get_job("j1")
    assert job is not None and (job.state, job.reason) == ("REGISTERED", "registered as reg:1")
    assert job.accounting == {"energy_kwh": 0.5, "model": "reg:1"}  # kept for older --json readers
    assert states(store, "j1")[-3:] == ["SUCCEEDED", "REGISTERING", "REGISTERED"]


def test_a_job_without_register_as_stays_succeeded(store: SQLiteStore) -> None:
    registry = FakeRegistry()
    manager = registrations(store, registry)
    manager.after_accounting(succeeded(store, "j1", register_as=None))
    drain(manager)
    assert store.get_job("j1").state == "SUCCEEDED" and registry.calls == 0  # type: ignore[union-attr]


def test_a_refusal_is_registration_failed_with_the_reason_at_once(store: SQLiteStore) -> None:
    registry = FakeRegistry(FactoryError("job j1 succeeded without a checkpoint to register as 'reg'"))
    manager = registrations(store, registry)
    manager.after_accounting(succeeded(store, "j1"))
    drain(manager)
    job = store.get_job("j1")
    assert job is not None and job.state == "REGISTRATION_FAILED" and registry.calls == 1
    assert job.reason == "job j1 succeeded without a checkpoint to register as 'reg'"
    assert job.accounting["registration_error"] == job.reason


def test_a_registry_that_does_not_answer_is_tried_again_then_given_up_on(store: SQLiteStore) -> None:
    busy = [ClusterError("the registry did not answer in 3600 s")] * 3
    registry = FakeRegistry(*busy)
    errors: list[BaseException] = []
    manager = registrations(store, registry, attempts=4, on_error=errors.append)
    manager.after_accounting(succeeded(store, "j1"))
    drain(manager)
    assert store.get_job("j1").reason == "registered as reg:1"  # type: ignore[union-attr]
    assert registry.calls == 4 and len(errors) == 3  # each unanswered call is reported (`factory status`)

    silent = FakeRegistry(*[ClusterError("the registry did not answer in 3600 s")] * 4)
    manager = registrations(store, silent, attempts=4)
    manager.after_accounting(succeeded(store, "j2"))
    drain(manager)
    job = store.get_job("j2")
    assert job is not None and job.state == "REGISTRATION_FAILED" and silent.calls == 4
    assert job.reason == "the registry did not answer in 3600 s (4 attempts)"


def test_a_retry_after_a_failure_registers_once_and_never_makes_a_second_version(store: SQLiteStore) -> None:
    registry = FakeRegistry(FactoryError("the artifact store is full"))
    manager = registrations(store, registry)
    manager.after_accounting(succeeded(store, "j1"))
    drain(manager)
    failed = store.get_job("j1")
    assert failed is not None and failed.state == "REGISTRATION_FAILED"

    retried = manager.retry(failed, "cli:alice")
    assert retried is not None and (retried.state, retried.reason) == (
        "REGISTERING", "registering as reg (retried by cli:alice)")
    drain(manager)
    job = store.get_job("j1")
    assert job is not None and (job.state, job.reason) == ("REGISTERED", "registered as reg:1")
    assert "registration_error" not in job.accounting and job.accounting["model"] == "reg:1"
    assert states(store, "j1")[-4:] == ["REGISTERING", "REGISTRATION_FAILED", "REGISTERING", "REGISTERED"]
    # Registered: a second retry changes nothing, and the registry is not asked again.
    assert manager.retry(job, "cli:alice") is None
    drain(manager)
    assert registry.calls == 2 and registry.versions == {"j1": 1}


def test_only_a_failed_registration_is_retried(store: SQLiteStore) -> None:
    manager = registrations(store, FakeRegistry())
    running = succeeded(store, "j1", accounted=False).model_copy(update={"state": "RUNNING"})
    with pytest.raises(FactoryError, match=r"^job j1 is RUNNING: only a job whose registration failed"):
        manager.retry(running, "cli:bob")
    plain = succeeded(store, "j2", register_as=None)
    with pytest.raises(FactoryError, match=r"^job j2 has no register_as: it registers no model$"):
        manager.retry(plain, "cli:bob")


def test_a_restarted_scheduler_finds_every_registration_left_to_do_and_registers_each_once(
        store: SQLiteStore) -> None:
    registry = FakeRegistry()
    before = registrations(store, registry)
    before.after_accounting(succeeded(store, "in-flight"))  # REGISTERING when the scheduler died
    succeeded(store, "accounted")  # accounted, but the scheduler died before it moved on
    succeeded(store, "unaccounted", accounted=False)  # left to accounting first
    after = registrations(store, registry)  # the restarted scheduler's
    after.resume()
    drain(after)
    drain(before)  # the dead scheduler's queue, were it still to run: nothing is registered twice
    assert {job.job_id: job.state for job in store.list_jobs()} == {
        "in-flight": "REGISTERED", "accounted": "REGISTERED", "unaccounted": "SUCCEEDED"}
    assert registry.calls == 2 and sorted(registry.versions) == ["accounted", "in-flight"]


def test_a_busy_store_does_not_lose_the_job(store: SQLiteStore) -> None:
    registry = FakeRegistry()
    errors: list[BaseException] = []
    manager = registrations(store, registry, on_error=errors.append)
    manager.after_accounting(succeeded(store, "j1"))
    real_get = store.get_job
    calls = {"n": 0}

    def flaky_get(job_id: str) -> JobRow | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("database is locked")  # fault injection: a store busy for a moment
        return real_get(job_id)

    store.get_job = flaky_get  # type: ignore[method-assign]
    drain(manager)
    assert len(errors) == 1 and store.get_job("j1").state == "REGISTERED"  # type: ignore[union-attr]


def test_a_job_accounted_twice_in_a_race_moves_on_once(store: SQLiteStore) -> None:
    manager = registrations(store, FakeRegistry())
    stale = succeeded(store, "j1")  # both calls read it SUCCEEDED
    manager.after_accounting(stale)
    manager.after_accounting(stale)  # the second finds it REGISTERING: left as it is, no error
    drain(manager)
    assert states(store, "j1")[-3:] == ["SUCCEEDED", "REGISTERING", "REGISTERED"]


def test_an_unexpected_error_every_time_ends_registration_failed_not_an_endless_retry(
        store: SQLiteStore) -> None:
    def bad_answer(job_id: str) -> dict[str, Any]:
        return {"version": 1}  # no name: a KeyError, not a registry refusal

    errors: list[BaseException] = []
    manager = Registrations(store, lambda: 100.0, bad_answer, retry_s=0.0, attempts=3, on_error=errors.append)
    manager.after_accounting(succeeded(store, "j1"))
    drain(manager)
    job = store.get_job("j1")
    assert job is not None and job.state == "REGISTRATION_FAILED" and job.reason.endswith("(3 attempts)")
    assert len(errors) == 3


def test_an_accounted_job_left_succeeded_can_be_retried(store: SQLiteStore) -> None:
    manager = registrations(store, FakeRegistry())
    left = succeeded(store, "j1")  # accounted, never moved on (it should not happen; a user can fix it)
    retried = manager.retry(left, "cli:carol")
    assert retried is not None and retried.state == "REGISTERING"
    drain(manager)
    assert store.get_job("j1").state == "REGISTERED"  # type: ignore[union-attr]
    with pytest.raises(FactoryError, match="is SUCCEEDED: only a job whose registration failed"):
        manager.retry(succeeded(store, "j2", accounted=False), "cli:carol")  # not accounted yet
