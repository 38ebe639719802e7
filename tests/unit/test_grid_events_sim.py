"""Demand-response events in `factory simulate --grid-events`: the facility's power under each target.

Four one-GPU jobs of 1 kW each start at 08:00 on flat prices (nothing to wait for); the grid asks for
at most 2 kW from 10:00 to 12:00. Every job has a day of slack, so the policy can pause two of them, or
(GPU power caps, on unless `--min-power-cap-pct 100`) cap all four at half their power.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from factory.errors import SimulationInputError
from factory.simulation.grid_events import GridEvents, compliance, load_grid_events
from tests.unit.test_cli_errors import assert_one_line_error
from tests.unit.test_cli_simulate import simulate, write_jobs

EVENT = "id,start,end,target_kw,announced\ndr-1,2024-03-01T10:00:00Z,2024-03-01T12:00:00Z,2,{announced}\n"
T0 = 1_709_251_200.0  # 2024-03-01 00:00 UTC
HOUR_S = 3600.0


@pytest.fixture()
def flat(tmp_path: Path) -> Path:
    (tmp_path / "prices.csv").write_text("timestamp,price_per_mwh\n" + "".join(
        f"2024-03-{h // 24 + 1:02d}T{h % 24:02d}:00:00+00:00,50\n" for h in range(72)))
    write_jobs(tmp_path / "jobs.csv", [f"j{i},{8 * 3600},{4 * 3600},1,86400,true,1000" for i in range(4)],
               header="job_id,submit_s,duration_s,num_gpus,deadline_s,preemptible,power_w")
    (tmp_path / "events.csv").write_text(EVENT.format(announced="2024-03-01T09:00:00Z"))
    return tmp_path


def run(cwd: Path, *flags: str) -> dict:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "4", "--json", *flags,
                      cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("policy", ["price-aware", "fifo"])
def test_the_facility_stays_under_the_target_by_pausing_where_caps_are_off(flat: Path, policy: str) -> None:
    report = run(flat, "--grid-events", "events.csv", "--policy", policy, "--min-power-cap-pct", "100")

    (event,) = report["grid_events"]
    assert event == {"id": "dr-1", "start": "2024-03-01T10:00:00+00:00", "end": "2024-03-01T12:00:00+00:00",
                     "target_kw": 2.0, "max_kw": 2.0, "complied": True, "unmet_reason": None}
    assert report["deadline_misses"] == 0 and report["completed"] == 4
    assert report["preemptions"] >= 2  # two jobs paused for the event, resumed after it
    assert report["capped_gpu_h"] == 0.0
    assert report["compliance_cost"] == pytest.approx(0.0, abs=1e-9)  # flat prices: the same energy
    plain = run(flat)
    assert "grid_events" not in plain and "compliance_cost" not in plain and "capped_gpu_h" not in plain


@pytest.mark.parametrize("policy", ["price-aware", "fifo"])
def test_gpu_caps_meet_the_target_before_any_job_is_paused(flat: Path, policy: str) -> None:
    # 4 kW of jobs, a 2 kW target: every GPU capped at half its power meets it, and nobody pays a resume.
    report = run(flat, "--grid-events", "events.csv", "--policy", policy)

    (event,) = report["grid_events"]
    assert event["max_kw"] == pytest.approx(2.0) and event["complied"]
    assert report["preemptions"] == 0 and report["deadline_misses"] == 0 and report["completed"] == 4
    assert report["capped_gpu_h"] == pytest.approx(4 * 2.0)  # four GPUs for the event's two hours
    # Capped GPUs lose less speed than power (`throughput_share`): the same work takes less energy.
    assert report["compliance_cost"] < 0
    assert report["energy_kwh"] < run(flat, "--grid-events", "events.csv", "--policy", policy,
                                      "--min-power-cap-pct", "100")["energy_kwh"]


def test_jobs_that_do_not_fit_even_at_the_lowest_cap_are_paused(flat: Path) -> None:
    (flat / "events.csv").write_text(EVENT.format(announced="2024-03-01T09:00:00Z").replace(",2,", ",1,"))
    report = run(flat, "--grid-events", "events.csv")

    (event,) = report["grid_events"]
    assert event["max_kw"] == pytest.approx(1.0) and event["complied"]
    assert report["preemptions"] == 2  # two paused; the other two capped at half their power
    assert report["capped_gpu_h"] == pytest.approx(2 * 2.0)


def test_an_event_without_notice_is_met_from_its_start(flat: Path) -> None:
    (flat / "events.csv").write_text(EVENT.format(announced=""))
    (event,) = run(flat, "--grid-events", "events.csv")["grid_events"]
    assert event["complied"] and event["max_kw"] == 2.0


def test_a_fixed_load_above_the_target_is_reported_as_not_complied(flat: Path) -> None:
    write_jobs(flat / "jobs.csv", [f"j{i},{8 * 3600},{4 * 3600},1,86400,false,1000" for i in range(4)],
               header="job_id,submit_s,duration_s,num_gpus,deadline_s,preemptible,power_w")
    (event,) = run(flat, "--grid-events", "events.csv")["grid_events"]
    assert event["max_kw"] == 4.0 and not event["complied"]  # nothing could be paused
    assert event["unmet_reason"] == "the fixed load (jobs that cannot be paused) needs 4.00 kW, over the " \
        "2.00 kW target"


def test_the_summary_says_whether_each_event_was_met_and_what_it_cost(flat: Path) -> None:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "4", "--grid-events",
                      "events.csv", cwd=flat)
    assert result.returncode == 0, result.stderr
    assert "grid event dr-1 2024-03-01T10:00:00+00:00 to 2024-03-01T12:00:00+00:00: target 2.0 kW, " \
           "at most 2.0 kW drawn: met" in result.stdout
    assert "cost of answering the grid: -0.12 USD" in result.stdout  # capped GPUs use less energy per step
    assert "GPU power capped for 8.0 GPU-hours during grid events" in result.stdout


@pytest.mark.parametrize(("text", "expected"), [
    ("start,end\n", "the columns are start, end, and target_kw or reduce_pct"),
    ("start,end,reduce_pct\n2024-03-01T10:00:00Z,2024-03-01T12:00:00Z,20\n", "the simulator needs target_kw"),
    ("start,end,target_kw\n2024-03-01T10:00:00Z,2024-03-01T09:00:00Z,2\n", "events.csv:2: end"),
    ("start,end,target_kw\n2024-03-01 10:00,2024-03-01T12:00:00Z,2\n", "has no UTC offset"),
    ("start,end,target_kw\nsoon,2024-03-01T12:00:00Z,2\n", "events.csv:2: start 'soon' is not an ISO 8601"),
    ("start,end,target_kw\n2024-03-01T10:00:00Z,2024-03-01T12:00:00Z,-1\n", "target_kw '-1' is not a finite"),
])
def test_a_bad_event_file_is_one_line_naming_the_line_and_column(flat: Path, text: str,
                                                                  expected: str) -> None:
    (flat / "events.csv").write_text(text)
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "4", "--grid-events",
                      "events.csv", cwd=flat)
    assert expected in assert_one_line_error(result)


def test_the_cap_counts_announced_events_and_not_the_current_interval_before_a_start(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(EVENT.format(announced="2024-03-01T09:00:00Z"))
    events = load_grid_events(tmp_path / "events.csv")
    starts = T0 + HOUR_S * np.arange(8, 14)  # 08:00 .. 13:00

    assert np.isinf(events.cap_w(T0 + 8.5 * HOUR_S, starts, HOUR_S)).all()  # not announced yet
    seen = events.cap_w(T0 + 9.5 * HOUR_S, starts[1:], HOUR_S)  # from 09:00: the current one runs on
    np.testing.assert_array_equal(seen, [np.inf, 2000.0, 2000.0, np.inf, np.inf])
    assert events.cap_w(T0 + 10.5 * HOUR_S, starts[2:], HOUR_S)[0] == 2000.0  # under way


def test_compliance_is_the_highest_power_while_the_event_lasts() -> None:
    events = GridEvents(("e",), np.array([10.0]), np.array([20.0]), np.array([2000.0]), np.array([10.0]))
    reports = compliance(events, np.array([0.0, 10.0, 15.0, 20.0]), np.array([10.0, 15.0, 20.0, 30.0]),
                         np.array([9000.0, 2000.0, 1500.0, 9000.0]))
    assert reports[0].max_kw == 2.0 and reports[0].complied
    with pytest.raises(SimulationInputError, match="no such file"):
        load_grid_events("absent.csv")


def test_an_event_that_caps_nothing_leaves_the_run_as_it_was() -> None:
    # 40 jobs over cheap nights and dear days on 4 GPUs; the event, announced at time zero, is long
    # after every job is due, so no plan may change (one did, when an all-inf cap array switched the
    # planner's within-interval starts off).
    from factory.prices.series import IntervalSeries
    from factory.simulation.run import SimulationSettings, prices_from_series, run_policy
    from factory.simulation.trace import JobTrace

    rng, n = np.random.default_rng(0), 40
    prices = prices_from_series(IntervalSeries(T0, HOUR_S, np.array(
        [10.0 if h % 24 < 6 else 80.0 + 20 * np.sin(h) for h in range(24 * 5)])), "USD", "toy")
    trace = JobTrace(job_id=np.array([f"j{i}" for i in range(n)], dtype=object),
                     submit_s=np.sort(rng.uniform(0, 36 * HOUR_S, n)),
                     duration_s=rng.uniform(0.3, 4, n) * HOUR_S, num_gpus=rng.integers(1, 3, n),
                     deadline_s=np.full(n, 30 * HOUR_S), preemptible=np.ones(n, bool),
                     power_w=np.full(n, 700.0), team=np.full(n, "", dtype=object),
                     priority=np.zeros(n, np.int64))
    late = GridEvents(("e",), np.array([T0 + 108 * HOUR_S]), np.array([T0 + 110 * HOUR_S]), np.array([0.0]),
                      np.array([T0]))

    _, without = run_policy(trace, prices, SimulationSettings(gpus=4), "price-aware")
    _, with_event = run_policy(trace, prices, SimulationSettings(gpus=4, grid_events=late), "price-aware")
    assert with_event.cost == without.cost and with_event.preemptions == without.preemptions


def test_caps_spare_the_fixed_load_and_keep_the_event_budget() -> None:
    from factory.scheduling import FifoPolicy, JobView, Phase, Snapshot

    def running(job_id: str, gpus: int, preemptible: bool) -> JobView:
        return JobView(job_id, gpus, 700.0, 0.0, 3600.0, Phase.RUNNING, None, preemptible,
                       placement=(("n", gpus),))

    jobs = [running("fixed", 2, False), running("a", 2, True), running("b", 2, True)]
    event = Snapshot(now_s=0.0, node_gpus={"n": 8}, jobs=jobs, grid_cap_w=np.array([2800.0]),
                     min_cap_share=0.5)
    decisions = FifoPolicy().decide(event)

    assert decisions.pauses == ()  # 1.4 kW fixed + 2.8 kW capped to half = 2.8 kW
    assert dict(decisions.power_caps_w) == {"a": 350.0, "b": 350.0}  # the fixed load runs uncapped
    assert FifoPolicy().decide(replace(event, min_cap_share=None)).power_caps_w == ()  # no caps: pauses
    assert [p.job_id for p in FifoPolicy().decide(replace(event, min_cap_share=None)).pauses] == ["b"]
    # Outside an event, the facility's own budget is kept as before: by pausing.
    standing = replace(event, grid_cap_w=None, power_budget_w=2800.0)
    assert FifoPolicy().decide(standing).power_caps_w == ()


def flat_outlook(now_s: float, hours: int = 48) -> Any:
    from factory.scheduling.model import PriceOutlook

    starts = now_s - now_s % HOUR_S + HOUR_S * np.arange(hours)
    return PriceOutlook(starts, HOUR_S, np.full(hours, 50.0), np.ones(hours, dtype=bool),
                        carbon_g_per_kwh=np.full(hours, 300.0))


def test_price_aware_caps_only_what_can_slow_down_not_a_job_due_now() -> None:
    from factory.scheduling import FifoPolicy, JobView, Phase, PriceAwarePolicy, Snapshot

    now_s = T0 + 10 * HOUR_S
    due = JobView("due", 2, 700.0, T0, 3 * HOUR_S, Phase.RUNNING, now_s + 3 * HOUR_S + 60, True,
                  placement=(("n", 2),), admitted=True)  # a minute of slack: it needs its full speed
    flex = JobView("flex", 2, 700.0, T0, HOUR_S, Phase.RUNNING, now_s + 40 * HOUR_S, True,
                   placement=(("n", 2),), admitted=True)
    caps = np.full(48, np.inf)
    caps[:2] = 2100.0  # 2.8 kW running, 2.1 kW allowed for two hours
    event = Snapshot(now_s=now_s, node_gpus={"n": 8}, jobs=[due, flex], prices=flat_outlook(now_s),
                     grid_cap_w=caps, min_cap_share=0.5)

    aware = PriceAwarePolicy().decide(event)
    assert aware.pauses == () and dict(aware.power_caps_w) == {"flex": 350.0}  # due keeps 1.4 kW
    fifo = FifoPolicy().decide(event)  # fifo knows no deadlines: both slow down alike
    assert fifo.pauses == () and dict(fifo.power_caps_w) == {"due": 525.0, "flex": 525.0}


def test_a_decision_in_the_last_seconds_of_an_interval_keeps_the_events_caps_in_step() -> None:
    # It plans from the next interval when the caps are the same on both sides of the boundary (the caps
    # move on with the prices, which once raised an IndexError on 15-minute markets), and from now when
    # an event starts in the next interval: nothing is paused before an event starts.
    from factory.scheduling import JobView, Phase, PriceAwarePolicy, Snapshot

    now_s = T0 + 10 * HOUR_S + HOUR_S - 0.5
    jobs = [JobView(f"j{i}", 1, 1000.0, T0, 4 * HOUR_S, Phase.RUNNING, now_s + 30 * HOUR_S, True,
                    placement=(("n", 1),), admitted=True) for i in range(4)]

    def pauses(caps: np.ndarray) -> int:
        snapshot = Snapshot(now_s=now_s, node_gpus={"n": 4}, jobs=jobs, prices=flat_outlook(now_s),
                            grid_cap_w=caps)
        return len(PriceAwarePolicy().decide(snapshot).pauses)

    under_way = np.full(48, np.inf)
    under_way[:3] = 2000.0
    assert pauses(under_way) == 2  # 2 kW now and after the boundary
    starting = np.full(48, np.inf)
    starting[1:3] = 2000.0  # an event that starts somewhere in the next interval
    assert pauses(starting) == 0


def test_a_job_is_never_kept_under_a_cap_on_gpus_a_start_took() -> None:
    # A (1 GPU) and B (2 GPUs) run on a 3-GPU node, C (1 GPU) waits; the event allows 1.5 kW. Pausing B
    # lets C start on one of its GPUs; keeping B too (all three at half power would fit the 1.5 kW)
    # would put four GPUs' worth of jobs on three GPUs. A start the policy needs (a due job: `may_cap`
    # refuses it), or one ranked above B (priority), keeps its GPUs; one it may put off waits instead, and
    # B keeps running under a cap.
    from factory.scheduling import FifoPolicy, JobView, Phase, Snapshot
    from factory.scheduling.dispatch import dispatch

    a = JobView("a", 1, 700.0, 0.0, 3600.0, Phase.RUNNING, None, True, placement=(("n", 1),))
    b = JobView("b", 2, 700.0, 1.0, 3600.0, Phase.RUNNING, None, True, placement=(("n", 2),))
    c = JobView("c", 1, 700.0, 2.0, 3600.0)
    event = Snapshot(now_s=10.0, node_gpus={"n": 3}, jobs=[a, b, c], grid_cap_w=np.array([1500.0]),
                     min_cap_share=0.5)
    for ranked, may_cap, paused, started in (([a, b, c], lambda job: job.job_id != "c", ["b"], ["c"]),
                                             ([a, c, b], None, ["b"], ["c"]),
                                             ([a, b, c], None, [], [])):
        decisions = dispatch(event, ranked, {}, may_cap=may_cap)

        held = sum(job.num_gpus for job in (a, b, c) if job.job_id not in {p.job_id for p in decisions.pauses}
                   and (job.phase is Phase.RUNNING or job.job_id in {s.job_id for s in decisions.starts}))
        assert held <= 3, decisions
        assert [p.job_id for p in decisions.pauses] == paused, decisions
        assert [s.job_id for s in decisions.starts] == started, decisions
    assert dict(decisions.power_caps_w) == pytest.approx({"a": 500.0, "b": 500.0})  # 1.5 kW over three GPUs
    assert [(w.job_id, w.reason.value) for w in decisions.waits] == [("c", "power budget")]
    assert FifoPolicy().decide(event).starts == ()  # fifo puts a queued job off for a running one


def test_a_start_that_preempted_a_job_stands_when_a_paused_job_is_kept_under_a_cap() -> None:
    # On a full 4-GPU node the event pauses B (2 GPUs) for the budget; P (priority 5, 3 GPUs) then preempts
    # L for its third GPU. P's start stands (L paid its pause for it) and no GPU is held twice.
    from factory.scheduling import JobView, Phase, PriorityPolicy, Snapshot

    fixed = JobView("fixed", 1, 700.0, 0.0, 3600.0, Phase.RUNNING, None, False, placement=(("n", 1),))
    low = JobView("low", 1, 700.0, 0.0, 3600.0, Phase.RUNNING, None, True, placement=(("n", 1),))
    b = JobView("b", 2, 700.0, 1.0, 3600.0, Phase.RUNNING, None, True, placement=(("n", 2),))
    p = JobView("p", 3, 300.0, 2.0, 3600.0, priority=5)
    decisions = PriorityPolicy().decide(Snapshot(now_s=10.0, node_gpus={"n": 4}, jobs=[fixed, low, b, p],
                                                 grid_cap_w=np.array([2000.0]), min_cap_share=0.5))

    assert [s.job_id for s in decisions.starts] == ["p"], decisions
    assert {pause.job_id for pause in decisions.pauses} == {"low", "b"}, decisions


def test_a_job_that_can_wait_never_costs_a_running_job_its_run_during_an_event() -> None:
    # The demo's grid chapter: a fixed 1-GPU job and a preemptible 2-GPU job run on 4 GPUs when an event
    # allows 1.52 kW; a third job, due in 12 hours, arrives. Capping the running job to half keeps the
    # facility under the target; starting the newcomer instead would pause it. The newcomer waits.
    from factory.scheduling import JobView, Phase, PriceAwarePolicy, Snapshot

    now_s = T0 + 5 * HOUR_S
    fixed = JobView("steady", 1, 700.0, T0, 2 * HOUR_S, Phase.RUNNING, now_s + 12 * HOUR_S, False,
                    placement=(("n", 1),), admitted=True)
    flex = JobView("flex", 2, 700.0, T0, 1.25 * HOUR_S, Phase.RUNNING, now_s + 11 * HOUR_S, True,
                   placement=(("n", 2),), admitted=True)
    late = JobView("late", 1, 700.0, now_s, 2 * HOUR_S, Phase.QUEUED, now_s + 12 * HOUR_S, True)
    caps = np.full(48, np.inf)
    caps[:2] = 1520.0
    decisions = PriceAwarePolicy().decide(Snapshot(
        now_s=now_s, node_gpus={"n": 4}, jobs=[fixed, flex, late], prices=flat_outlook(now_s),
        grid_cap_w=caps, min_cap_share=0.5))

    assert decisions.pauses == () and decisions.starts == (), decisions
    assert dict(decisions.power_caps_w) == pytest.approx({"flex": 410.0})  # (1.52 - 0.7) kW over 2 GPUs
    wait = next(w for w in decisions.waits if w.job_id == "late")
    assert wait.reason.value == "power budget" and "the running jobs keep it under caps" in wait.detail, wait
