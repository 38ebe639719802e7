"""Following a job (`FactoryClient.wait`, `factory submit --wait`): no transition is missed between polls.

The scheduler is stood in for by a real store whose job moves through several states between two of
the client's polls, as a quick job's run, accounting and registration do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.client import FactoryClient, JobDetail
from factory.jobs.spec import parse_job_spec, spec_hash
from factory.store import JobEvent, JobRow, SQLiteStore, open_store

# What happens between each poll and the next: (state, from state) transitions.
BETWEEN_POLLS = [
    [("RUNNING", "QUEUED")],
    [("SUCCEEDED", "RUNNING"), ("REGISTERING", "SUCCEEDED"), ("REGISTERED", "REGISTERING")],
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def following(store: SQLiteStore) -> FactoryClient:
    """A client whose scheduler is `store`, where the job moves on by `BETWEEN_POLLS` at each poll."""
    spec = parse_job_spec({"name": "fit", "kind": "train", "estimated_duration_s": 60.0, "register_as": "reg",
                           "train_loop": "factory.examples.regression:train_loop_per_worker"})
    store.insert_job(JobRow(job_id="j1", name="fit", team="ml", kind="train",
                            spec=spec.model_dump(mode="json"), spec_hash=spec_hash(spec), state="QUEUED",
                            submitted_s=0.0, updated_s=0.0))
    moves = iter(BETWEEN_POLLS)
    client = FactoryClient.__new__(FactoryClient)
    client.restart_wait_s = 5.0

    def job(job_id: str) -> JobDetail:
        detail = JobDetail(job=store.get_job(job_id), events=store.job_events(job_id))  # type: ignore[arg-type]
        for time_s, (state, origin) in enumerate(next(moves, []), start=1):
            store.transition_job(job_id, state, f"now {state.lower()}", float(time_s), expected_from=[origin])
        return detail

    client.job = job  # type: ignore[method-assign]
    return client


def test_every_transition_is_seen_once_in_order_though_several_came_between_two_polls(
        store: SQLiteStore) -> None:
    client = following(store)
    seen: list[str] = []

    def on_event(event: JobEvent, job: JobRow) -> None:
        seen.append(event.state)

    done = client.wait("j1", timeout_s=10, poll_s=0.0, on_event=on_event)

    assert done.state == "REGISTERED"
    assert seen == ["QUEUED", "RUNNING", "SUCCEEDED", "REGISTERING", "REGISTERED"]


def test_on_change_sees_only_what_each_poll_found(store: SQLiteStore) -> None:
    client = following(store)
    seen: list[str] = []

    client.wait("j1", timeout_s=10, poll_s=0.0, on_change=lambda job: seen.append(job.state))

    assert seen == ["QUEUED", "RUNNING", "REGISTERED"]  # why `submit --wait` follows the timeline
