"""Grid events in the live factory without Ray: the book over a real store, the controller's cap, the CLI.

The SchedulerActor keeps a `GridEventBook`, feeds it the facility's measured power every control
round and hands the events' caps to `JobController.step` (`ClusterView.grid_events`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from factory.jobs.snapshot import ClusterView
from factory.prices.grid_events import RESPONSE_S, GridEventBook, GridEventError, GridEventNotFoundError
from factory.scheduling import FifoPolicy
from factory.store import AuditEvent, SQLiteStore, open_store
from tests.support import FACTORY_BIN, clean_env
from tests.unit.test_cli_errors import assert_one_line_error
from tests.unit.test_job_controller import MemoryRunners, submit

T0 = 1_719_792_000.0  # 2024-07-01 00:00 UTC


class Clock:
    def __init__(self) -> None:
        self.now_s = T0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def book_on(store: SQLiteStore, clock: Clock, speed_factor: float = 1.0) -> GridEventBook:
    def audit(action: str, subject: str = "", actor: str | None = None, **detail: Any) -> int:
        return store.append_audit(AuditEvent(time_s=clock.now_s, actor=actor or "scheduler", action=action,
                                             subject=subject, detail=detail))

    return GridEventBook(store, lambda: clock.now_s, audit, speed_factor)


def test_an_event_is_stored_measured_and_judged_and_survives_a_restart(store: SQLiteStore) -> None:
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0 + 600, T0 + 1800, reduce_pct=25.0, source="utility", created_by="cli:ops")
    book.observe(T0 + 590, 100.0)  # the last measurement before the start: the baseline
    assert book.get(event.event_id).target_now_kw(book.latest_kw) == pytest.approx(75.0)
    assert book.target_now_kw() is None  # not under way yet (the metric shows NaN)
    clock.now_s = T0 + 700
    assert book.target_now_kw() == pytest.approx(75.0)

    for offset_s, kw in ((600, 98.0), (630, 80.0), (640, 74.0), (900, 70.0), (1790, 72.0), (1800, 90.0)):
        book.observe(T0 + offset_s, kw)

    done = book_on(store, clock).get(event.event_id)  # read back from the store, as after a restart
    assert done.baseline_kw == 100.0 and done.ended and done.max_kw == 98.0
    assert done.seconds_to_target == pytest.approx(40.0) and done.seconds_to_target <= RESPONSE_S
    assert done.complied() is True
    assert [round(row[2], 1) for row in done.intervals] == [98.0, 70.0, 72.0]  # max per 5 minutes
    actions = [e.action for e in store.list_audit(action_prefix="grid")]
    assert actions == ["grid.event_added", "grid.event_started", "grid.event_ended"]


def test_an_event_is_judged_as_soon_as_its_end_has_passed(store: SQLiteStore) -> None:
    # The next measurement marks it ended a control round later; a user (or the caps restored at its end)
    # may look before that, and sees its outcome already.
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0, T0 + 600, target_kw=50.0)
    for offset_s, kw in ((0, 60.0), (20, 40.0), (590, 45.0)):
        book.observe(T0 + offset_s, kw)
    assert book.get(event.event_id).view(T0 + 595)["complied"] is None  # still under way
    view = book.get(event.event_id).view(T0 + 601)
    assert (view["state"], view["complied"]) == ("ended", True)
    assert not book.get(event.event_id).ended  # not yet marked: nothing measured since the end


def test_power_over_the_target_after_the_response_time_is_not_complied(store: SQLiteStore) -> None:
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0, T0 + 600, target_kw=50.0)
    for offset_s, kw in ((0, 60.0), (20, 40.0), (300, 55.0), (600, 40.0)):
        book.observe(T0 + offset_s, kw)
    assert book.get(event.event_id).complied() is False  # back over the target at 300 s


@pytest.mark.parametrize(("real_response_s", "complied"), [(30.0, True), (90.0, False)])
def test_under_a_replay_the_response_is_judged_in_real_seconds(store: SQLiteStore, real_response_s: float,
                                                               complied: bool) -> None:
    speed = 120.0  # a fast replay: a real second is two factory minutes
    book = book_on(store, Clock(), speed_factor=speed)
    event = book.add(T0, T0 + 6 * 3600, target_kw=50.0)
    book.observe(T0, 60.0)
    book.observe(T0 + real_response_s * speed, 40.0)  # 3,600 or 10,800 factory seconds: both over 60
    book.observe(T0 + 6 * 3600, 40.0)

    done = book.get(event.event_id)
    assert done.seconds_to_target == pytest.approx(real_response_s * speed)
    assert done.real_seconds_to_target == pytest.approx(real_response_s)
    assert done.complied() is complied


def test_a_target_the_fixed_load_exceeds_names_it_as_the_reason_once(store: SQLiteStore) -> None:
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0, T0 + 3600, target_kw=1.0)
    clock.now_s = T0 + 60
    book.note_fixed_load(T0 + 60, 0.9, ["steady"])  # under the target: nothing to explain
    assert book.get(event.event_id).unmet_reason() is None

    for kw in (1.5, 1.4):  # the same load measured again: kept once (its largest), audited once
        book.note_fixed_load(T0 + 120, kw, ["steady", "other draw (idle GPUs, CPUs, endpoints)"])
    assert book.get(event.event_id).view(T0 + 120)["unmet_reason"] == (
        "the fixed load (steady; other draw (idle GPUs, CPUs, endpoints)) needs 1.50 kW at the meter, over "
        "the 1.00 kW target")
    actions = [e.action for e in store.list_audit(action_prefix="grid")]
    assert actions.count("grid.event_fixed_load") == 1


def test_the_fixed_load_is_what_no_pause_can_shed(store: SQLiteStore) -> None:
    from factory.jobs.controller import JobController
    from factory.jobs.measured_power import PowerDrift, fixed_load_w
    from factory.telemetry.models import NodeStatus

    controller = JobController(store, MemoryRunners(), FifoPolicy(), gpu_power_w=700.0)
    submit(controller, name="flexible", gpus=1, now_s=T0, deadline_h=12)
    submit(controller, name="steady", gpus=1, now_s=T0, deadline_h=12, preemptible=False)
    submit(controller, name="due", gpus=2, now_s=T0, estimate_s=3600.0, deadline_h=1.5)
    controller.step(T0, ClusterView({"node-1": 4}), None)
    drift = PowerDrift()
    drift.observe([NodeStatus(node_id="node-1", state="alive", gpus=4, gpus_busy=4, gpu_power_w=2800.0,
                              it_power_w=2950.0)], 2800.0, T0)  # 150 W of CPUs above the GPUs' nominal

    fixed_w, names = fixed_load_w(store.list_jobs(["RUNNING"]), T0 + 60, 700.0, 3600.0, drift)

    assert names == ["due", "steady", "other draw (idle GPUs, CPUs, endpoints)"]
    assert fixed_w == pytest.approx(3 * 700.0 + 150.0)


def test_a_short_event_back_over_its_target_after_reaching_it_is_not_complied(store: SQLiteStore) -> None:
    book = book_on(store, Clock(), speed_factor=120.0)
    event = book.add(T0, T0 + 3600, target_kw=50.0)  # 30 real seconds: all within the response time
    for offset_s, kw in ((0, 60.0), (240, 40.0), (1200, 70.0), (3600, 40.0)):
        book.observe(T0 + offset_s, kw)
    assert book.get(event.event_id).complied() is False


def test_what_the_scheduler_did_for_an_event_is_audited_once(store: SQLiteStore) -> None:
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0 + 60, T0 + 3600, target_kw=1.0)
    held = {"late": "power budget: a grid event holds the GPUs to 0.71 kW now"}
    book.record_actions(T0 + 30, {"flex": "power budget: running jobs draw 1.4 kW"}, held)  # not yet
    for now_s in (T0 + 60, T0 + 120):  # the same wait told again: audited once
        book.record_actions(now_s, {"flex": "power budget: running jobs draw 1.4 kW"} if now_s == T0 + 60
                            else {}, {**held, "cheap": "price: cheap window at 03:00"})

    actions = [(e.subject, e.detail["taken"], e.detail["job_id"])
               for e in store.list_audit(action_prefix="grid") if e.action == "grid.event_action"]
    assert actions == [(event.event_id, "paused", "flex"), (event.event_id, "deferred", "late")]


def test_a_cancelled_event_caps_nothing_from_then_on(store: SQLiteStore) -> None:
    clock = Clock()
    book = book_on(store, clock)
    event = book.add(T0 + 3600, T0 + 7200, target_kw=10.0)
    assert book.caps() == [(T0 + 3600, T0 + 7200, 10_000.0, T0)]

    clock.now_s = T0 + 1800
    assert book.cancel(event.event_id, "cli:ops").state(clock.now_s) == "cancelled"
    assert book.caps() == [] and book.listed()[0].cancelled_s == T0 + 1800
    with pytest.raises(GridEventNotFoundError, match="no grid event 'ev-nope'"):
        book.cancel("ev-nope")


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"target_kw": 5.0, "reduce_pct": 10.0}, "either a target in kW"),
    ({"reduce_pct": 0.0}, "--reduce-pct 0 is out of range"),
    ({"target_kw": float("nan")}, "--target-kw nan is not a finite power"),
])
def test_an_event_that_cannot_be_kept_is_refused_naming_the_flag(store: SQLiteStore, kwargs: dict[str, float],
                                                                 expected: str) -> None:
    with pytest.raises(GridEventError, match=expected):
        book_on(store, Clock()).add(T0 + 60, T0 + 120, **kwargs)
    with pytest.raises(GridEventError, match="--end is in the past"):
        book_on(store, Clock()).add(T0 - 120, T0 - 60, target_kw=1.0)


def test_the_controller_pauses_jobs_to_keep_under_an_event_under_way(store: SQLiteStore) -> None:
    from factory.jobs.controller import JobController

    runners = MemoryRunners()
    controller = JobController(store, runners, FifoPolicy(), gpu_power_w=1000.0)
    jobs = [submit(controller, name=f"j{i}", gpus=1, now_s=T0) for i in range(4)]
    cluster = ClusterView({"node-1": 4})
    controller.step(T0, cluster, None)
    assert len(runners.started()) == 4  # 4 kW

    capped = ClusterView({"node-1": 4}, grid_events=[(T0 + 60, T0 + 660, 2000.0, T0)])
    controller.step(T0 + 30, capped, None)  # announced, not under way: nothing paused yet
    assert all(store.get_job(job).state == "RUNNING" for job in jobs)  # type: ignore[union-attr]
    result = controller.step(T0 + 60, capped, None)
    assert len(result.paused) == 2  # down to 2 kW


def test_a_job_held_back_by_an_event_under_way_is_told_so(store: SQLiteStore) -> None:
    import numpy as np

    from factory.jobs.controller import JobController
    from factory.scheduling import PriceAwarePolicy
    from factory.scheduling.model import PriceOutlook

    runners = MemoryRunners()
    controller = JobController(store, runners, PriceAwarePolicy(), gpu_power_w=1000.0)
    first = submit(controller, name="first", gpus=2, now_s=T0)
    flat = PriceOutlook(T0 + 3600.0 * np.arange(48), 3600.0, np.full(48, 50.0), np.ones(48, dtype=bool))
    controller.step(T0, ClusterView({"node-1": 4}), flat)
    assert runners.started() == [(first, 1)]

    capped = ClusterView({"node-1": 4}, grid_events=[(T0, T0 + 3 * 3600, 2500.0, T0)])
    second = submit(controller, name="second", gpus=1, now_s=T0 + 60)
    controller.step(T0 + 60, capped, flat)

    waiting = store.get_job(second)
    assert waiting is not None and waiting.state == "WAITING", waiting
    assert waiting.reason.startswith("power budget: a grid event holds the GPUs to 2.50 kW now"), \
        waiting.reason


def test_the_cli_refuses_a_bad_time_or_target_in_one_line_before_touching_the_cluster(tmp_path: Path) -> None:
    def grid(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FACTORY_BIN, "grid", "event", "add", *args], cwd=tmp_path, env=clean_env(),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert "--start 'soon' is not an ISO 8601 time" in assert_one_line_error(
        grid("--start", "soon", "--end", "2024-07-01T11:00Z", "--target-kw", "5"))
    assert "either --target-kw or --reduce-pct" in assert_one_line_error(
        grid("--start", "2024-07-01T10:00Z", "--end", "2024-07-01T11:00Z"))


def test_an_event_file_adds_each_event_once_and_skips_those_over(store: SQLiteStore, tmp_path: Path) -> None:
    clock = Clock()
    book = book_on(store, clock)
    path = tmp_path / "events.csv"
    path.write_text("id,start,end,target_kw,reduce_pct,source\n"
                    "a,2024-07-01T02:00:00Z,2024-07-01T03:00:00Z,40,,pjm\n"
                    "b,2024-07-01T04:00:00Z,2024-07-01T05:00:00Z,,20,\n"
                    "old,2024-06-30T02:00:00Z,2024-06-30T03:00:00Z,40,,\n")

    added = book.add_from_file(path)
    assert [(e.event_id, e.target_kw, e.reduce_pct, e.source) for e in added] == [
        ("file-a", 40.0, None, "pjm"), ("file-b", None, 20.0, "file:events.csv")]
    assert book.add_from_file(path) == [] and len(book.listed()) == 2  # read again: nothing new

    path.write_text("start,end,target_kw\n2024-07-01T02:00:00Z,soon,40\n")
    with pytest.raises(GridEventError, match="events.csv:2: end 'soon' is not an ISO 8601 time"):
        book.add_from_file(path)


def test_the_event_file_path_is_made_absolute_as_the_tariffs_is(tmp_path: Path) -> None:
    from factory.config import load_config

    (tmp_path / "factory.yaml").write_text("prices:\n  grid_events_path: events.csv\n")
    config = load_config(tmp_path / "factory.yaml", env={}, cwd=tmp_path)  # the actor runs elsewhere
    assert config.prices.grid_events_path == (tmp_path / "events.csv").resolve()
