"""The SchedulerActor's accounting of finished jobs, on a real SQLite store, without Ray.

Telemetry's energy and the price integral are passed in (plain functions here, as in
test_job_accounting); the registration that follows a success is the real `Registrations` with a fake
registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.jobs.accountant import Accountant
from factory.jobs.registration import Registrations
from factory.jobs.spec import parse_job_spec, spec_hash
from factory.store import JobRow, SQLiteStore, open_store
from tests.unit.test_job_accounting import HOUR, T0, price


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def ended(store: SQLiteStore, job_id: str, state: str = "SUCCEEDED", register_as: str | None = "reg") -> None:
    """A job that ran one hour on 2 GPUs from T0 + 1 h, and ended in `state`."""
    spec = parse_job_spec({"name": "fit", "kind": "train", "estimated_duration_s": HOUR,
                           "register_as": register_as,
                           "train_loop": "factory.examples.regression:train_loop_per_worker"})
    store.insert_job(JobRow(job_id=job_id, name="fit", team="ml", kind="train",
                            spec=spec.model_dump(mode="json"), spec_hash=spec_hash(spec), state="QUEUED",
                            submitted_s=T0, updated_s=T0))
    store.transition_job(job_id, "RUNNING", "started", T0 + HOUR, expected_from=["QUEUED"])
    store.transition_job(job_id, state, state.lower(), T0 + 2 * HOUR, expected_from=["RUNNING"],
                         schedule={"runs": [[T0 + HOUR, T0 + 2 * HOUR, 2]]})


def accountant(store: SQLiteStore, **options: Any) -> Accountant:
    return Accountant(store, lambda job_id: 1.4, price, 700.0, **options)


def test_a_finished_job_is_accounted_once_with_its_energy_priced(store: SQLiteStore) -> None:
    ended(store, "j1", register_as=None)
    seen: list[tuple[str, float]] = []
    books = accountant(store, on_accounted=lambda job, record: seen.append((job.job_id, record["cost"])))
    assert books.pending == {"j1"}  # found in the store: a restarted scheduler accounts it too
    assert books.account_pending() == ["j1"]
    job = store.get_job("j1")
    assert job is not None and job.accounting["energy_kwh"] == 1.4
    assert job.accounting["cost"] == pytest.approx(1.4 * 10 / 1000)  # the cheap hour it ran in
    books.finished(["j1"])  # reported again (a cancel, a restart): accounted already, left as it is
    assert books.account_pending() == [] and seen == [("j1", job.accounting["cost"])]
    assert accountant(store).pending == set()


def test_an_accounted_success_starts_its_registration_in_the_same_write(store: SQLiteStore) -> None:
    ended(store, "j1")
    ended(store, "j2", state="FAILED")
    registrations = Registrations(store, lambda: T0 + 3 * HOUR, lambda job_id: {"name": "reg", "version": 1})
    books = accountant(store, after=registrations.after_accounting)
    assert sorted(books.account_pending()) == ["j1", "j2"]
    assert store.get_job("j1").state == "REGISTERING"  # type: ignore[union-attr]
    assert store.get_job("j2").state == "FAILED"  # type: ignore[union-attr]


def test_a_failed_hand_on_writes_no_accounting_and_the_job_stays_pending(store: SQLiteStore) -> None:
    ended(store, "a")
    ended(store, "b", register_as=None)
    calls = {"n": 0}

    def flaky_after(job: JobRow) -> None:
        calls["n"] += 1
        if job.job_id == "a" and calls["n"] == 1:
            raise OSError("database is locked")  # fault injection: the registration's write fails once

    books = accountant(store, after=flaky_after)
    with pytest.raises(OSError, match="database is locked"):
        books.account_pending()
    assert store.get_job("a").accounting == {}  # type: ignore[union-attr]  # rolled back with it
    assert store.get_job("b").accounting  # type: ignore[union-attr]  # the others were accounted
    assert books.pending == {"a"}
    assert books.account_pending() == ["a"] and store.get_job("a").accounting  # type: ignore[union-attr]
