"""The power budget on measured power (issue 21, point 4): what the facility draws above the jobs'
nominal watts is kept free, so the meters, not the plan, stay under the budget and grid targets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from factory.jobs.controller import JobController
from factory.jobs.measured_power import PowerDrift
from factory.jobs.runners import RunnerStatus
from factory.jobs.snapshot import ClusterView
from factory.jobs.spec import parse_job_spec
from factory.scheduling import PriceAwarePolicy
from factory.scheduling.model import PriceOutlook
from factory.store import SQLiteStore
from factory.telemetry.backends.simulated import SimulatedGpuBackend
from factory.telemetry.models import NodeStatus
from tests.unit.test_job_controller import MemoryRunners

HOUR = 3600.0
T0 = 1_700_002_800.0
NOMINAL_W = 700.0


def node(busy: int, gpu_w: float, cpu_w: float = 0.0, state: str = "alive") -> NodeStatus:
    return NodeStatus(node_id="node-a", state=state, gpus=4, gpus_busy=busy, gpu_power_w=gpu_w,  # type: ignore[arg-type]
                      it_power_w=gpu_w + cpu_w)


def test_before_any_sample_nothing_is_corrected_and_no_margin_taken() -> None:
    drift = PowerDrift()
    assert drift.budget_w(2100.0, 5.0) == 2100.0 and drift.cap_w(1000.0, 5.0) == 1000.0
    assert drift.budget_w(None, 5.0) is None


def test_idle_gpus_and_the_margin_are_kept_free_of_the_budget() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=2, gpu_w=2 * 700 + 2 * 75)], 2 * NOMINAL_W, T0)
    assert drift.gpu_w == pytest.approx(150.0)
    assert drift.budget_w(2100.0, 5.0) == pytest.approx(2100 * 0.95 - 150)
    assert math.isinf(drift.cap_w(math.inf, 5.0))  # no event: no cap
    assert drift.budget_w(100.0, 5.0) == 0.0  # never below nothing


def test_a_draw_below_nominal_lends_the_budget_nothing() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=4, gpu_w=4 * 400)], 4 * NOMINAL_W, T0)  # GPUs draw far less than planned
    assert drift.gpu_w < 0 and drift.budget_w(2100.0, 0.0) == 2100.0


def test_cpu_power_counts_against_an_event_target_not_the_gpu_budget() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=1, gpu_w=700 + 3 * 75, cpu_w=300)], NOMINAL_W, T0)
    assert drift.budget_w(2000.0, 0.0) == pytest.approx(2000 - 225)
    assert drift.cap_w(2000.0, 0.0) == pytest.approx(2000 - 525)


def test_a_step_in_the_drift_is_followed_within_four_samples() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=4, gpu_w=4 * 700)], 4 * NOMINAL_W, T0)
    assert drift.gpu_w == 0.0
    for _ in range(4):  # the GPUs now draw 800 W each: 400 W above nominal
        drift.observe([node(busy=4, gpu_w=4 * 800)], 4 * NOMINAL_W, T0)
    assert drift.gpu_w == pytest.approx(400.0, rel=0.07)


def test_a_gpu_busy_for_anything_but_a_factory_job_is_drift_the_budget_keeps_free() -> None:
    drift = PowerDrift()  # two jobs' GPUs, an inference endpoint's GPU and an idle one
    drift.observe([node(busy=3, gpu_w=3 * 700 + 75)], 2 * NOMINAL_W, T0)
    assert drift.budget_w(2100.0, 0.0) == pytest.approx(2100 - 775)  # two 700 W jobs, not three


def test_a_drift_not_measured_for_a_while_is_unknown() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=0, gpu_w=4 * 75)], 0.0, T0)
    assert drift.fresh(T0 + 10.0, 60.0).budget_w(2100.0, 5.0) == pytest.approx(2100 * 0.95 - 300)
    assert drift.fresh(T0 + 61.0, 60.0).budget_w(2100.0, 5.0) == 2100.0  # nominal watts again


def test_nodes_that_are_down_or_unreachable_are_no_sample() -> None:
    drift = PowerDrift()
    drift.observe([node(busy=0, gpu_w=0.0, state="unreachable")], 0.0, T0)
    assert drift.gpu_w is None


def submit(controller: JobController, name: str) -> str:
    stored = parse_job_spec({
        "name": name, "kind": "train", "train_loop": "factory.examples.regression:train_loop_per_worker",
        "num_workers": 1, "gpus_per_worker": 1, "estimated_duration_s": 4 * HOUR, "preemptible": True,
    }).model_dump(mode="json")
    return controller.submit(stored, kind="train", name=name, team="vision", spec_hash="h", now_s=T0,
                             submitted_by="cli:alice", deadline_s=T0 + 48 * HOUR).job_id


def flat_outlook() -> PriceOutlook:
    return PriceOutlook(T0 + HOUR * np.arange(72), HOUR, np.full(72, 50.0), np.ones(72, dtype=bool))


def draw_w(store: SQLiteStore, gpus: SimulatedGpuBackend, limit_w: float | None) -> float:
    """What the 4 GPUs draw: busy while a job holds them (RUNNING, or PAUSING until its checkpoint)."""
    busy = len(store.list_jobs(["RUNNING", "PAUSING"]))
    return busy * gpus.power_w(1.0, limit_w) + (4 - busy) * gpus.power_w(0.0, limit_w)


def facility_draw_w(store_path: Path, *, on_measured_power: bool, budget_w: float,
                    hot_from_round: int | None = None, rounds: int = 8) -> tuple[list[float], list[int]]:
    """Four 1-GPU jobs on 4 simulated GPUs (700 W busy, 75 W idle; 900 W busy from `hot_from_round`)
    under a budget, one control round a minute: the GPUs' measured draw and the jobs running after
    each round."""
    gpus = SimulatedGpuBackend(4, usage=dict, idle_power_w=75.0, busy_power_w=900.0)
    store = SQLiteStore(store_path)
    runners = MemoryRunners()
    controller = JobController(store, runners, PriceAwarePolicy(), gpu_power_w=NOMINAL_W)
    for index in range(4):
        submit(controller, f"job-{index}")
    drift, draws_w, running = PowerDrift(), [], []
    try:
        for round_index in range(rounds):
            limit_w = None if hot_from_round is not None and round_index >= hot_from_round else 700.0
            busy = len(store.list_jobs(["RUNNING", "PAUSING"]))
            reading = node(busy=busy, gpu_w=draw_w(store, gpus, limit_w))
            if on_measured_power:
                drift.observe([reading], busy * NOMINAL_W, T0 + 60.0 * round_index)
            fresh = drift.fresh(T0 + 60.0 * round_index, 300.0)
            controller.step(T0 + 60.0 * round_index, ClusterView({"node-a": 4},
                            power_budget_w=fresh.budget_w(budget_w, 5.0)), flat_outlook())
            for job_id, call_attempt in [(j, a) for call, j, a in runners.calls if call == "pause"]:
                report = runners.live.get(job_id)
                if report is not None and report.attempt == call_attempt and \
                        report.status == RunnerStatus.RUNNING:
                    runners.finish(job_id, RunnerStatus.PAUSED, step=1)  # at its next checkpoint
            draws_w.append(draw_w(store, gpus, limit_w))
            running.append(len(store.list_jobs(["RUNNING", "PAUSING"])))
    finally:
        store.close()
    return draws_w, running


def test_nominal_watts_alone_overdraw_a_budget_that_measured_power_keeps(tmp_path: Path) -> None:
    budget_w = 2100.0  # nominal watts allow three 700 W jobs; three busy GPUs and an idle one draw 2,175 W

    nominal_w, _ = facility_draw_w(tmp_path / "nominal.db", on_measured_power=False, budget_w=budget_w)
    measured_w, running = facility_draw_w(tmp_path / "measured.db", on_measured_power=True,
                                          budget_w=budget_w)

    assert nominal_w[-1] == pytest.approx(3 * 700 + 75) and nominal_w[-1] > budget_w  # what this fixes
    assert max(measured_w[2:]) <= budget_w and running[-1] == 2  # within a few samples, and held


def test_gpus_that_begin_to_draw_more_than_planned_are_paused_down_to_the_budget(tmp_path: Path) -> None:
    budget_w = 2600.0  # three 700 W jobs fit (2,175 W with the idle GPU); at 900 W they draw 2,775 W

    nominal_w, _ = facility_draw_w(tmp_path / "nominal.db", on_measured_power=False, budget_w=budget_w,
                                   hot_from_round=4)
    measured_w, running = facility_draw_w(tmp_path / "measured.db", on_measured_power=True,
                                          budget_w=budget_w, hot_from_round=4)

    assert nominal_w[3] <= budget_w < nominal_w[-1]  # the plan never sees the hot GPUs
    assert running[3] == 3 and measured_w[3] <= budget_w
    assert measured_w[4] > budget_w  # the round the GPUs got hot, before a sample shows it
    assert max(measured_w[5:]) <= budget_w and running[-1] == 2  # the next sample pauses one, held
