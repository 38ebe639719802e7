"""A store written by a released version opens after an upgrade with everything in it intact.

`tests/fixtures/store-v4-demo.sql` is the SQL dump (`sqlite3 .dump`) of the store `factory demo` left
in `.factory/live-demo` at commit 6de6d47 (schema version 4): three trained jobs with their events,
three registered model versions, a `production` alias and its history, an endpoint following it (in the
serving actor's state), the audit log. It is never regenerated: when a release changes the schema, its
migration must carry this store forward (and a dump of the new release's store is added beside it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from factory.jobs.stored import stored_spec
from factory.serving.endpoints import Endpoint
from factory.store import SQLiteStore, StateStore, open_store
from factory.store.migrations import MIGRATIONS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEMO_JOBS = {"nlp-large-b94bf41d": ("nlp", 8), "vision-small-575b6fa9": ("vision", 4),
             "ops-urgent-a9ee9631": ("ops", 3)}  # job id -> (team, events)


@pytest.fixture()
def released_store(tmp_path: Path) -> StateStore:
    path = tmp_path / "factory.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "store-v4-demo.sql").read_text())
    store = open_store(path)
    yield store
    store.close()


def stored_endpoints(store: StateStore) -> dict[str, Endpoint]:
    """The endpoints as the serving actor reads them back on start (their own table since migration 6)."""
    return {name: Endpoint.model_validate(value) for name, value in store.list_endpoints().items()}


def test_a_released_store_is_migrated_to_this_codes_schema(released_store: StateStore) -> None:
    assert released_store.schema_version() == MIGRATIONS[-1].version


def test_every_job_and_its_events_survive_the_upgrade(released_store: StateStore) -> None:
    jobs = {job.job_id: job for job in released_store.list_jobs()}
    assert set(jobs) == set(DEMO_JOBS)
    for job_id, (team, events) in DEMO_JOBS.items():
        job = jobs[job_id]
        # Registered back then (the outcome in the accounting): REGISTERED now (migration 7).
        model = job.accounting["model"]
        assert (job.team, job.state, job.reason, job.kind) == (team, "REGISTERED", f"registered as {model}",
                                                               "train")
        assert job.accounting["energy_kwh"] > 0 and job.spec["deadline"]
        # The spec as stored then reads back typed (defaults included) by this release's model.
        spec = stored_spec(job)
        assert spec.register_as == model.split(":")[0] and spec.team == team and spec.total_gpus >= 1
        history = released_store.job_events(job_id)
        assert len(history) == events + 2 and history[0].state == "QUEUED"
        assert [(e.from_state, e.state) for e in history[-3:]] == [
            ("RUNNING", "SUCCEEDED"), ("SUCCEEDED", "REGISTERING"), ("REGISTERING", "REGISTERED")]
        assert history[-1].time_s == job.updated_s


def test_a_registration_that_failed_before_registration_states_becomes_registration_failed(
        tmp_path: Path) -> None:
    path = tmp_path / "factory.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "store-v4-demo.sql").read_text())
        conn.execute("""UPDATE jobs SET accounting_json = json_set(json_remove(accounting_json, '$.model'),
                        '$.registration_error', 'the registry refused it') WHERE job_id = 'ops-urgent-a9ee9631'""")
        conn.execute("""UPDATE jobs SET accounting_json = json_remove(accounting_json, '$.model')
                        WHERE job_id = 'vision-small-575b6fa9'""")
    store = open_store(path)
    try:
        jobs = {job.job_id: job for job in store.list_jobs()}
        failed = jobs["ops-urgent-a9ee9631"]
        assert (failed.state, failed.reason) == ("REGISTRATION_FAILED", "the registry refused it")
        assert store.job_events(failed.job_id)[-1].state == "REGISTRATION_FAILED"
        # No outcome recorded yet: left SUCCEEDED, for the scheduler to register when it starts.
        assert jobs["vision-small-575b6fa9"].state == "SUCCEEDED"
        assert len(store.job_events("vision-small-575b6fa9")) == DEMO_JOBS["vision-small-575b6fa9"][1]
    finally:
        store.close()


def test_every_model_version_alias_and_endpoint_survives_the_upgrade(released_store: StateStore) -> None:
    versions = released_store.list_model_versions()
    assert {(row.name, row.version) for row in versions} == {
        ("nlp-regressor", 1), ("ops-regressor", 1), ("vision-regressor", 1)}
    for row in versions:
        assert len(row.digest) == 64 and row.lineage["job_id"] in DEMO_JOBS and row.lineage["energy_kwh"] > 0
    assert released_store.model_aliases() == {"nlp-regressor": {"production": 1}}
    assert [change.version for change in released_store.model_alias_history("nlp-regressor")] == [1]
    endpoint = stored_endpoints(released_store)["nlp-regressor"]
    assert (endpoint.model, endpoint.follows, endpoint.stable_version) == ("nlp-regressor", "production", 1)


def test_endpoints_move_out_of_the_serving_actors_state_into_their_own_table(
        released_store: StateStore) -> None:
    assert set(stored_endpoints(released_store)) == {"nlp-regressor"}
    state = released_store.get_actor_state("serving")
    assert state is not None and "endpoints" not in state and state["incarnation"] == 1


def test_the_audit_log_survives_the_upgrade(released_store: StateStore) -> None:
    actions = [event.action for event in released_store.list_audit(limit=1000)]
    assert len(actions) == 12
    assert actions.count("job.submitted") == 3 and actions.count("model.registered") == 3


def test_opening_a_released_store_twice_changes_nothing(tmp_path: Path, released_store: StateStore) -> None:
    before = {job.job_id: job for job in released_store.list_jobs()}
    location = released_store.location
    released_store.close()
    again = SQLiteStore(location)
    try:
        assert {job.job_id: job for job in again.list_jobs()} == before
    finally:
        again.close()
