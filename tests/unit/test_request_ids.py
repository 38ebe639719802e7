"""Clients that ride out a restart and never act twice, without Ray.

A mutating call carries a request id kept with its effect (`StateStore.once`), so a call sent again
after the actor restarted returns the first answer and creates nothing; the retry itself lives in one
place (`factory.control_plane.ride_out_restart`). The actors' methods are called here directly: the
scheduler's on a bare instance, the serving actor's with Ray's runtime context and Serve stood in for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray

from actors.scheduler import SchedulerActor
from actors.serving import ServingActor
from factory.clock import ClockSpec
from factory.config import FactoryConfig
from factory.control_plane import ActorRestartingError, ActorTimeoutError, ride_out_restart
from factory.errors import ClusterError, FactoryError
from factory.jobs.accountant import Accountant
from factory.store import JobRow, RequestReusedError, SQLiteStore, open_store
from tests.unit.test_job_controller import make


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def insert_job(store: SQLiteStore, job_id: str) -> dict[str, object]:
    row = JobRow(job_id=job_id, name="cmd", team="ops", kind="command", spec={}, spec_hash="h",
                 state="QUEUED", submitted_s=0.0, updated_s=0.0)
    store.insert_job(row)
    return row.model_dump(mode="json")


def test_a_retried_request_returns_the_first_result_and_creates_nothing(store: SQLiteStore) -> None:
    first = store.once("req-1", "job.submit", 1.0, lambda: insert_job(store, "job-a"))
    again = store.once("req-1", "job.submit", 2.0, lambda: insert_job(store, "job-b"))

    assert again == first
    assert [job.job_id for job in store.list_jobs()] == ["job-a"]
    assert store.find_request("req-1").result["job_id"] == "job-a"  # type: ignore[union-attr]


def test_distinct_requests_each_act(store: SQLiteStore) -> None:
    store.once("req-1", "job.submit", 1.0, lambda: insert_job(store, "job-a"))
    store.once("req-2", "job.submit", 1.0, lambda: insert_job(store, "job-b"))
    store.once(None, "job.submit", 1.0, lambda: insert_job(store, "job-c"))  # no id: no record

    assert [job.job_id for job in store.list_jobs()] == ["job-a", "job-b", "job-c"]


def test_a_failed_mutation_records_no_request_so_a_retry_acts(store: SQLiteStore) -> None:
    def refused() -> dict[str, object]:
        insert_job(store, "job-a")
        raise FactoryError("refused after writing")

    with pytest.raises(FactoryError):
        store.once("req-1", "job.submit", 1.0, refused)
    assert store.list_jobs() == [] and store.find_request("req-1") is None  # rolled back together

    store.once("req-1", "job.submit", 1.0, lambda: insert_job(store, "job-a"))
    assert [job.job_id for job in store.list_jobs()] == ["job-a"]


def test_a_request_id_reused_for_another_action_is_refused(store: SQLiteStore) -> None:
    store.once("req-1", "job.submit", 1.0, lambda: insert_job(store, "job-a"))
    with pytest.raises(RequestReusedError, match="req-1 was used for job.submit, not model.alias"):
        store.once("req-1", "model.alias", 1.0, lambda: {"moved": True})


def test_a_request_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "factory.db"
    first = open_store(path)
    result = first.once("req-1", "model.alias", 5.0, lambda: {"version": 2})
    first.close()
    reopened = open_store(path)
    try:
        assert reopened.once("req-1", "model.alias", 6.0, lambda: {"version": 3}) == result
        assert reopened.find_request("req-1").time_s == 5.0  # type: ignore[union-attr]
    finally:
        reopened.close()


def test_a_retried_cancel_cancels_once(store: SQLiteStore) -> None:
    controller, _ = make(store)
    job = controller.submit({}, kind="command", name="cmd", team="ops", spec_hash="h", deadline_s=None,
                            now_s=0.0)

    def cancel() -> dict[str, object]:
        return controller.cancel(job.job_id, 1.0, by="cli:alice").model_dump(mode="json")

    first = store.once("req-9", "job.cancel", 1.0, cancel)
    again = store.once("req-9", "job.cancel", 2.0, cancel)  # acting again would raise: already CANCELLED

    assert again == first and first["state"] == "CANCELLED"
    assert [event.state for event in store.job_events(job.job_id)] == ["QUEUED", "CANCELLED"]


class Restarts:
    """An actor call that is lost `times` times (the actor restarting), then answers."""

    def __init__(self, times: int) -> None:
        self.times, self.waits = times, []  # type: ignore[var-annotated]

    def __call__(self, wait_s: float) -> str:
        self.waits.append(wait_s)
        if len(self.waits) <= self.times:
            raise ActorRestartingError("the factory's 'scheduler' actor is unavailable: restarting")
        return "answer"


class FakeTime:
    def __init__(self) -> None:
        self.now_s = 100.0

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += seconds


def test_a_call_rides_out_a_restart_with_one_line() -> None:
    attempt, lines, fake = Restarts(times=3), [], FakeTime()

    answer = ride_out_restart(attempt, "scheduler", 10.0, 60.0, notice=lines.append, clock=fake.clock,
                              sleep=fake.sleep)

    assert answer == "answer"
    assert lines == ["waiting for the scheduler to come back…"]
    assert attempt.waits[0] == 10.0 and all(wait > 10.0 for wait in attempt.waits[1:])  # the bound's rest


def test_after_the_bound_one_error_names_the_actor_and_factory_status() -> None:
    attempt, lines, fake = Restarts(times=10**6), [], FakeTime()

    with pytest.raises(ClusterError) as caught:
        ride_out_restart(attempt, "registry", 10.0, 5.0, notice=lines.append, clock=fake.clock,
                         sleep=fake.sleep)

    message = str(caught.value)
    assert "'registry'" in message and "5 s" in message and "`factory status`" in message
    assert "\n" not in message and len(lines) == 1
    assert fake.now_s - 100.0 <= 5.0 + 1.0  # gave up at the bound, not later


def test_other_errors_are_not_retried() -> None:
    calls = []

    def refused(wait_s: float) -> str:
        calls.append(wait_s)
        raise ClusterError("the factory's 'scheduler' actor did not answer within 10 s")

    lines: list[str] = []
    with pytest.raises(ClusterError, match="did not answer"):
        ride_out_restart(refused, "scheduler", 10.0, 60.0, notice=lines.append, sleep=lambda _: None)
    assert calls == [10.0] and lines == []


def test_the_restart_wait_is_configurable_from_the_environment(tmp_path: Path) -> None:
    from factory.config import load_config

    assert load_config(env={}, cwd=tmp_path).ray.actor_restart_wait_s == 60.0
    config = load_config(env={"FACTORY_RAY__ACTOR_RESTART_WAIT_S": "5"}, cwd=tmp_path)
    assert config.ray.actor_restart_wait_s == 5.0


class _FakeMethod:
    def __init__(self, sent: list[tuple]) -> None:
        self.sent = sent

    def remote(self, *args: object, **kwargs: object) -> object:
        self.sent.append((args, kwargs))
        return object()


def _named(sent: list[tuple]) -> object:
    from factory import control_plane

    actor = control_plane.NamedActor.__new__(control_plane.NamedActor)
    actor.name, actor.restart_wait_s = "serving", 60.0
    actor.handle = type("Handle", (), {"rollback": _FakeMethod(sent), "deploy": _FakeMethod(sent)})()
    return actor


def _answers_in_turn(monkeypatch: pytest.MonkeyPatch, outcomes: list[object]) -> list[object]:
    """Make each try of a call get the next of `outcomes` (an exception is raised); return the list, which
    the test may refill."""
    from factory import control_plane

    def answer(ref: object, who: str, wait_s: float) -> object:
        value = outcomes.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(control_plane, "call_actor", answer)
    monkeypatch.setattr(control_plane, "RETRY_PAUSE_S", 0.0)
    return outcomes


def test_a_call_lost_in_a_restart_is_resent_with_its_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first answer is lost with the actor's old process (Ray cannot say whether it acted).
    from factory import control_plane

    _answers_in_turn(monkeypatch, [control_plane.ActorRestartingError("restarting"), "done"])
    sent: list[tuple] = []
    actor = _named(sent)
    monkeypatch.setattr(control_plane, "get_actor", lambda name: actor.handle)
    # Sent again with the same id, it returns what the lost one did (the actor's `once`).
    assert actor.call("rollback", "nlp", timeout_s=1.0, request_id="r-1") == "done"
    assert [kwargs["request_id"] for _, kwargs in sent] == ["r-1", "r-1"]


@pytest.mark.parametrize("method", ["deploy", "canary", "rollback", "undeploy"])
def test_every_mutating_serving_call_of_the_sdk_carries_a_request_id(
        monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    from factory.serving.sdk import ServingClient

    calls: list[dict[str, Any]] = []
    client = ServingClient.__new__(ServingClient)
    client._actor = SimpleNamespace(  # type: ignore[assignment]
        call=lambda name, *args, **kwargs: calls.append(kwargs))
    arguments = {"deploy": ("reg:1",), "canary": ("reg", 2, 10.0), "rollback": ("reg",), "undeploy": ("reg",)}
    getattr(client, method)(*arguments[method])
    getattr(client, method)(*arguments[method])
    ids = [kwargs["request_id"] for kwargs in calls]
    assert all(ids) and ids[0] != ids[1]  # one per call, kept across its resends (above)


@pytest.mark.parametrize(("sent", "timed_out"), [
    (("ALIVE", 0), ("ALIVE", 1)),       # Ray restarted the actor while the call waited its turn
    (("RESTARTING", 1), ("ALIVE", 1)),  # sent while it restarted: Ray held it for the new process
], ids=["restarted-meanwhile", "sent-while-restarting"])
def test_a_call_unanswered_across_a_restart_is_waited_for_not_a_timeout(
        monkeypatch: pytest.MonkeyPatch, sent: tuple[str, int], timed_out: tuple[str, int]) -> None:
    # The actor is alive again (reloading its store) by the time the first wait runs out: a restart to ride
    # out, on the same call (no second send).
    from factory import ray_compat

    lives = [sent, timed_out]
    unanswered = ActorTimeoutError("the factory's 'serving' actor did not answer within 1 s")
    _answers_in_turn(monkeypatch, [unanswered, "done"])
    monkeypatch.setattr(ray_compat, "actor_life", lambda handle: lives.pop(0))
    sent_calls: list[tuple] = []
    actor = _named(sent_calls)
    assert actor.call("deploy", "m@prod", timeout_s=1.0, request_id="r-1") == "done"
    assert len(sent_calls) == 1


def test_a_call_to_a_live_actor_times_out_and_a_restart_is_ridden_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from factory import ray_compat

    unanswered = ActorTimeoutError("the factory's 'serving' actor did not answer within 1 s")
    actor = _named([])
    # No restart (or a GCS that does not say): the caller's own timeout, at once.
    for lives in ([("ALIVE", 1), ("ALIVE", 1)], [(None, None), (None, None)]):
        _answers_in_turn(monkeypatch, [unanswered, "done"])
        monkeypatch.setattr(ray_compat, "actor_life", lambda handle, lives=lives: lives.pop(0))
        with pytest.raises(ActorTimeoutError, match="within 1 s"):
            actor.call("deploy", "m@prod", timeout_s=1.0, request_id="r-2")
    # Sent while restarting, then unanswered for the whole restart wait too: one timeout naming the restart.
    lives = [("RESTARTING", 1), ("ALIVE", 1), ("ALIVE", 1)]
    _answers_in_turn(monkeypatch, [unanswered, unanswered])
    monkeypatch.setattr(ray_compat, "actor_life", lambda handle: lives.pop(0))
    with pytest.raises(ActorTimeoutError, match="came back but did not answer within 60 s of its restart"):
        actor.call("deploy", "m@prod", timeout_s=1.0, request_id="r-3")


def test_waiting_for_a_restarted_actor_ends_at_the_restart_wait_however_long_the_calls_timeout() -> None:
    fake, lines, waits = FakeTime(), [], []

    def queued_on_a_restarting_actor(wait_s: float) -> str:  # each try waits its whole wait, unanswered
        waits.append(wait_s)
        fake.now_s += wait_s
        raise ActorRestartingError("the factory's 'serving' actor is restarting")

    with pytest.raises(ClusterError, match="did not come back within 5 s"):
        ride_out_restart(queued_on_a_restarting_actor, "serving", 600.0, 5.0, notice=lines.append,
                         clock=fake.clock, sleep=fake.sleep)

    assert waits[0] == 600.0  # the call's own timeout, as for a live actor
    assert fake.now_s - (100.0 + 600.0) <= 5.0  # from the restart on, no longer than the restart wait


def test_a_restarted_actor_that_does_not_answer_within_the_restart_wait_is_a_timeout_naming_it() -> None:
    fake, waits = FakeTime(), []

    def back_but_busy(wait_s: float) -> str:  # lost once; the restarted actor then answers too late
        waits.append(wait_s)
        fake.now_s += wait_s
        if len(waits) == 1:
            raise ActorRestartingError("the factory's 'serving' actor is unavailable: restarting")
        raise ActorTimeoutError(f"the factory's 'serving' actor did not answer within {wait_s:.0f} s")

    with pytest.raises(ActorTimeoutError) as caught:
        ride_out_restart(back_but_busy, "serving", 600.0, 5.0, notice=lambda _: None, clock=fake.clock,
                         sleep=fake.sleep)

    assert "within 5 s of its restart" in str(caught.value) and "may still act" in str(caught.value)
    assert waits[1] <= 5.0


# --- the actors' side: a request id is checked and kept with the effect --------------------------------


def bare_scheduler(store: SQLiteStore) -> SchedulerActor:
    """The scheduler's job and audit calls on `store`: no Ray, no loops, runners in memory."""
    scheduler = SchedulerActor.__new__(SchedulerActor)
    scheduler.name, scheduler.store, scheduler.clock = "scheduler", store, ClockSpec().build()
    scheduler._controller, _ = make(store)
    scheduler._jobs_lock, scheduler._wake_event = threading.Lock(), threading.Event()
    scheduler._accountant = Accountant(store, lambda job_id: None, lambda profile: None, 700.0)  # type: ignore[arg-type,return-value]
    return scheduler


def test_a_cancel_with_a_request_id_used_for_a_submit_is_refused_and_cancels_nothing(
        store: SQLiteStore) -> None:
    scheduler = bare_scheduler(store)
    store.once("req-1", "job.submit", 0.0, lambda: insert_job(store, "job-a"))

    with pytest.raises(RequestReusedError, match="req-1 was used for job.submit, not job.cancel"):
        scheduler.cancel_job("job-a", "cli:alice", request_id="req-1")

    assert store.get_job("job-a").state == "QUEUED"  # type: ignore[union-attr]
    assert scheduler.cancel_job("job-a", "cli:alice", request_id="req-2")["state"] == "CANCELLED"
    assert scheduler.cancel_job("job-a", "cli:alice", request_id="req-2")["state"] == "CANCELLED"


def test_a_submit_is_answered_while_a_control_step_holds_the_jobs(
        store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # A step starting runners may hold the jobs for a minute on a slow machine; a submit only inserts a
    # QUEUED job (the next step sees it), so it does not wait for that step, and its request acts once.
    scheduler = bare_scheduler(store)
    scheduler._runners = SimpleNamespace(keep_warm=False)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 4.0}}])
    spec = {"name": "hello", "kind": "command", "entrypoint": "python -c pass", "estimated_duration_s": 10,
            "deadline": "30d"}

    with ThreadPoolExecutor(1) as pool, scheduler._jobs_lock:  # a control step in progress
        row = pool.submit(scheduler.submit_job, spec, "cli:alice", request_id="req-9").result(timeout=10.0)
        again = pool.submit(scheduler.submit_job, spec, "cli:alice", request_id="req-9").result(timeout=10.0)

    assert row["state"] == "QUEUED" and again["job_id"] == row["job_id"]
    assert [job.job_id for job in store.list_jobs()] == [row["job_id"]]
    assert scheduler._runners.keep_warm  # a runner is warmed for the waiting job


class _Handle:
    """An actor handle whose `method` acts at once on `target`, noting each call's request id."""

    def __init__(self, method: str, target: Any, request_ids: list[str | None]) -> None:
        def remote(*args: Any, **kwargs: Any) -> Any:
            request_ids.append(kwargs.get("request_id"))
            return getattr(target, method)(*args, **kwargs)

        setattr(self, method, SimpleNamespace(remote=remote))


def test_an_audit_event_resent_after_a_restart_is_written_once(store: SQLiteStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from factory import control_plane
    from factory.client import FactoryClient

    request_ids: list[str | None] = []
    handle = _Handle("record_audit", bare_scheduler(store), request_ids)

    def first_answer_lost(answer: Any, who: str, wait_s: float) -> Any:  # the actor acted, then restarted
        if len(request_ids) == 1:
            raise ActorRestartingError(f"{who} is unavailable: restarting")
        return answer

    monkeypatch.setattr(control_plane, "call_actor", first_answer_lost)
    monkeypatch.setattr(control_plane, "get_actor", lambda name: handle)
    monkeypatch.setattr(control_plane, "RETRY_PAUSE_S", 0.0)
    client = FactoryClient.__new__(FactoryClient)
    client._scheduler = control_plane.NamedActor("scheduler")

    event_id = client.record_audit("cli:alice", "factory.up", "127.0.0.1:6379")

    assert len(request_ids) == 2 and request_ids[0] is not None and request_ids[0] == request_ids[1]
    assert [(event.id, event.action) for event in store.list_audit()] == [(event_id, "factory.up")]


class _RuntimeContext:
    """What `FactoryActor` reads from Ray's runtime context, in a process that is no Ray worker."""

    was_current_actor_reconstructed = False

    def get_node_id(self) -> str:
        return "node-1"


class _LockWatch:
    """The endpoint manager's `apply_lock`, noting when a second thread has to wait for it."""

    def __init__(self) -> None:
        self._lock, self.contended = threading.RLock(), threading.Event()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.fixture
def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServingActor]:
    """A serving actor on its own store whose Serve deploys are `serving.applied` (and `serving.hold`)."""
    monkeypatch.setattr(ray, "get_runtime_context", _RuntimeContext)
    actor = ServingActor("serving", FactoryConfig(state_dir=tmp_path).model_dump(mode="json"),
                         ClockSpec().model_dump())
    actor._stopping.set()  # no watch rounds
    applied: list[int] = []
    hold = threading.Event()
    hold.set()

    def apply(endpoint: Any) -> None:
        applied.append(endpoint.stable_version)
        assert hold.wait(10.0), "the test never let Serve finish"

    monkeypatch.setattr(actor.serve, "apply", apply)
    monkeypatch.setattr(actor.manager, "servable", lambda ref: SimpleNamespace(version=ref.version or 1))
    actor.applied, actor.hold = applied, hold  # type: ignore[attr-defined]
    yield actor
    actor.store.close()


def test_a_deploy_resent_while_the_first_still_deploys_waits_for_it_and_deploys_once(
        serving: ServingActor) -> None:
    watch = serving.manager.apply_lock = _LockWatch()  # type: ignore[assignment]
    serving.hold.clear()  # type: ignore[attr-defined]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(serving.deploy, "reg:1", deployed_by="cli:alice", request_id="req-1")
        while not serving.applied:  # type: ignore[attr-defined]
            assert not first.done(), first.result()
            time.sleep(0.01)
        again = pool.submit(serving.deploy, "reg:1", deployed_by="cli:alice", request_id="req-1")
        assert watch.contended.wait(10.0), again.result()
        serving.hold.set()  # type: ignore[attr-defined]
        first_view, again_view = first.result(timeout=10.0), again.result(timeout=10.0)

    assert serving.applied == [1]  # type: ignore[attr-defined]
    assert {key: again_view[key] for key in ("name", "stable_version", "updated_s")} == \
        {key: first_view[key] for key in ("name", "stable_version", "updated_s")}
    assert len(serving.store.list_audit(action_prefix="endpoint.deployed")) == 1


def test_a_deploy_with_a_request_id_used_for_another_action_is_refused_and_deploys_nothing(
        serving: ServingActor) -> None:
    serving.store.once("req-1", "model.alias", 0.0, lambda: {"version": 1})

    with pytest.raises(RequestReusedError, match="req-1 was used for model.alias, not endpoint.deploy"):
        serving.deploy("reg:1", request_id="req-1")

    assert serving.applied == [] and serving.manager.endpoints == {}  # type: ignore[attr-defined]


def test_a_canary_rollback_or_undeploy_resent_after_it_took_effect_acts_once(
        serving: ServingActor, monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []
    monkeypatch.setattr(serving.serve, "delete", deleted.append)
    for version in (1, 2, 3):
        serving.deploy(f"reg:{version}", deployed_by="cli:alice")

    for _ in range(2):  # the second is the client's resend: the first answer was lost in a restart
        canary = serving.canary("reg", 2, 10.0, "cli:alice", request_id="req-canary")
    assert canary["canary_version"] == 2
    serving.rollback("reg", "cli:ops", request_id="req-drop-canary")  # takes the canary out
    for _ in range(2):
        rolled = serving.rollback("reg", "cli:ops", request_id="req-rollback")
    assert rolled["stable_version"] == 2  # back one version, not two
    for _ in range(2):
        gone = serving.undeploy("reg", "cli:ops", request_id="req-undeploy")
    assert gone["name"] == "reg" and deleted == ["reg"] and serving.manager.endpoints == {}

    actions = [event.action for event in serving.store.list_audit(action_prefix="endpoint")]
    assert actions == ["endpoint.deployed"] * 3 + ["endpoint.canary", "endpoint.rolled_back",
                                                    "endpoint.rolled_back", "endpoint.undeployed"]
