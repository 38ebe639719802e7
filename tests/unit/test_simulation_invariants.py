"""Properties of every simulated run on random small clusters, job traces and price traces.

Each run goes through a recording wrapper around the policy, so that every decision can be checked
against the snapshot it answered, as well as the `Outcome` the simulator reports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from factory.prices.series import IntervalSeries
from factory.prices.trace import LoadedTrace
from factory.scheduling import POLICY_NAMES, PriceAwarePolicy, make_policy
from factory.scheduling.model import Decisions, Phase, Snapshot
from factory.simulation.engine import Cluster, Outcome, charge, simulate
from factory.simulation.optimum import offline_optimum
from factory.simulation.run import LoadedPrices
from factory.simulation.trace import JobTrace

HOUR = 3600.0
T0 = 1_700_002_800.0  # time zero, on the hour
MAX_GPUS = 8
# About 2-15 ms per example (a whole simulation): each test stays within a few seconds.
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Scenario:
    """One random input: cluster, jobs, prices, resume overhead (not a dataclass: hypothesis prints repr)."""

    def __init__(self, cluster: Cluster, trace: JobTrace, prices: LoadedPrices, overhead_s: float,
                 days: int) -> None:
        self.cluster, self.trace, self.prices = cluster, trace, prices
        self.overhead_s, self.days = overhead_s, days

    def __repr__(self) -> str:  # what hypothesis prints for a failing example: short enough to read
        t, price = self.trace, self.prices.price
        jobs = "\n".join(
            f"  {t.job_id[i]}: submit {t.submit_s[i]:g} s, {t.duration_s[i]:g} s on {t.num_gpus[i]} GPUs, "
            f"deadline +{t.deadline_s[i]:g} s, preemptible={t.preemptible[i]}, {t.power_w[i]:g} W/GPU, "
            f"team '{t.team[i]}', priority {t.priority[i]}" for i in range(len(t)))
        return (f"Scenario({self.cluster}, overhead {self.overhead_s:g} s,\n{jobs}\n"
                f"  prices every {price.interval_s:g} s: {price.values.tolist()})")

    def run(self, policy_name: str, forecast_hours: float = 24.0,
            policy: object | None = None) -> tuple[Outcome, Recording]:
        recording = Recording(policy or make_policy(policy_name))
        outcome = simulate(self.trace, self.prices.feed(forecast_hours), self.cluster, recording,
                           time_zero_s=T0, preempt_overhead_s=self.overhead_s)
        return outcome, recording


@dataclass
class Recording:
    """A policy that remembers every snapshot it was shown and what it answered."""

    policy: object
    calls: list[tuple[Snapshot, Decisions]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.policy.name  # type: ignore[attr-defined]

    @property
    def needs_prices(self) -> bool:
        return self.policy.needs_prices  # type: ignore[attr-defined]

    def decide(self, snapshot: Snapshot) -> Decisions:
        decisions = self.policy.decide(snapshot)  # type: ignore[attr-defined]
        self.calls.append((snapshot, decisions))
        return decisions


# -- strategies ----------------------------------------------------------------------------------------


@st.composite
def price_traces(draw: st.DrawFn) -> tuple[IntervalSeries, int]:
    """Hourly or 15-minute prices over 2 to 4 days, some of them negative."""
    days = draw(st.integers(2, 4))
    hours = days * 24
    hourly = np.array(draw(st.lists(st.integers(-30, 150), min_size=hours, max_size=hours)), dtype=float)
    if draw(st.booleans()):
        return IntervalSeries(T0, HOUR, hourly), days
    quarters = np.array(draw(st.lists(st.integers(-10, 10), min_size=4, max_size=4)), dtype=float)
    return IntervalSeries(T0, HOUR / 4, np.repeat(hourly, 4) + np.tile(quarters, hours)), days


@st.composite
def scenarios(draw: st.DrawFn, *, one_node: bool = False, max_jobs: int = 12, budget: bool = True,
              quotas: bool = True, overhead: bool = True, preemptible: bool | None = None,
              aligned: bool = False) -> Scenario:
    """Random inputs; `aligned`: submit times, durations and deadlines in whole price intervals."""
    price, days = draw(price_traces())
    step_s = price.interval_s if aligned else 60.0
    trace_end_s = days * 24 * HOUR
    nodes = 1 if one_node else draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(1, MAX_GPUS // nodes), min_size=nodes, max_size=nodes))
    node_gpus = {f"node-{i}": size for i, size in enumerate(sizes)}
    total = sum(sizes)
    guarantees: dict[str, int] = {}
    if quotas and draw(st.booleans()):
        guarantees["A"] = draw(st.integers(0, total))
        guarantees["B"] = draw(st.integers(0, total - guarantees["A"]))
    unguaranteed = total - sum(guarantees.values())

    n = draw(st.integers(1, max_jobs))
    rows = []
    for _ in range(n):
        submit_s = draw(st.integers(0, int((trace_end_s - 12 * HOUR) // step_s))) * step_s
        duration_s = draw(st.integers(1 if aligned else 10, int(6 * HOUR // step_s))) * step_s
        slack = draw(st.sampled_from([0.5, 1.0, 1.25, 2.0, 4.0, 10.0]))
        deadline_s = min(np.ceil(slack * duration_s / step_s) * step_s, trace_end_s - submit_s)
        gpus = draw(st.integers(1, max(sizes)))  # a job runs on one node (one worker)
        team = draw(st.sampled_from(["", "A", "B"]))
        # A non-preemptible job wider than its team's guarantee plus the unguaranteed GPUs never starts.
        can_stop = draw(st.booleans()) if preemptible is None else preemptible
        can_stop |= bool(guarantees) and gpus > guarantees.get(team, 0) + unguaranteed
        rows.append((submit_s, duration_s, gpus, deadline_s, can_stop,
                     float(draw(st.sampled_from([0, 300, 700]))), team, draw(st.integers(0, 3))))
    trace = job_trace(rows)
    power_budget_w = None
    if budget and draw(st.booleans()):
        widest_w = float(np.max(trace.num_gpus * trace.power_w))
        power_budget_w = widest_w + draw(st.sampled_from([0.0, 300.0, 700.0, 2100.0]))
    overhead_s = float(draw(st.sampled_from([0, 0, 60, 600, 1800]))) if overhead else 0.0
    return scenario_of(Cluster(node_gpus, power_budget_w=power_budget_w, quotas=guarantees), trace, price,
                       overhead_s, days)


def job_trace(rows: list[tuple]) -> JobTrace:
    """Rows of (submit_s, duration_s, num_gpus, deadline_s, preemptible[, power_w, team, priority])."""
    rows = [(*row, 700.0, "", 0)[:8] for row in rows]
    columns = list(zip(*rows, strict=True))
    return JobTrace(
        job_id=np.array([f"job-{i}" for i in range(len(rows))], dtype=object),
        submit_s=np.array(columns[0], dtype=float), duration_s=np.array(columns[1], dtype=float),
        num_gpus=np.array(columns[2], dtype=np.int64), deadline_s=np.array(columns[3], dtype=float),
        preemptible=np.array(columns[4], dtype=bool), power_w=np.array(columns[5], dtype=float),
        team=np.array(columns[6], dtype=object), priority=np.array(columns[7], dtype=np.int64),
    )


def scenario_of(cluster: Cluster, trace: JobTrace, price: IntervalSeries, overhead_s: float = 0.0,
                days: int = 2) -> Scenario:
    loaded = LoadedTrace(price=price, carbon=None, files=["mem.csv"])
    return Scenario(cluster, trace, LoadedPrices(loaded, price, None, "USD"), overhead_s, days)


def days_at_zero_but(interval_s: float, prices: dict[int, float], days: int = 2) -> IntervalSeries:
    values = np.zeros(int(days * 86400 / interval_s))
    values[list(prices)] = list(prices.values())
    return IntervalSeries(T0, interval_s, values)


# Counterexamples found by the property below (shrunk by hand: fewer jobs, flat prices).
# Two GPUs: the 2-GPU job-1 and job-2 are both feasible after job-0 finishes at 9780 s (job-2 runs on
# for its last 1020 s, job-1 from 10800 s), but the planner gives the least-laxity job-1 both GPUs at
# 9780 s (price 0 now or later: ties go to now). At 10800 s there is still a schedule (job-2 first, then
# job-1 until 16980 s); the planner used to count the current interval only in whole GPUs held until
# the next decision, so job-1 saw no room in it while job-2 held one GPU for 1020 s, and job-2 ended
# 28 min late. Fixed by room later in the current interval, once jobs that finish in it free their
# GPUs (`Planner._later_now_s`); kept as a regression test.
SHARED_CHEAP_HOUR = scenario_of(
    Cluster({"node-0": 2}),
    job_trace([(9000.0, 780.0, 1, 900.0, True), (1620.0, 13560.0, 2, 16980.0, True),
               (9300.0, 1500.0, 1, 6000.0, True)]),
    days_at_zero_but(HOUR, {4: -11.0}))
# One GPU, 15-minute prices. When job-1 arrives at 27720 s (too tight: it is reported infeasible), job-0
# has 480 s left (due 36300 s) and the unbroken job-2 must start by 31260 s: job-0 then job-2 meets both.
# Re-planned first (less laxity), job-2 took the cheapest unbroken run, which starts now: job-0 was
# paused and ended 104 min late. The rescue round (admitted jobs as soon as possible, earliest deadline
# first, when the cheapest-first rounds leave one short) fixed it; kept as a regression test.
NON_PREEMPTIBLE_IN_THE_WAY = scenario_of(
    Cluster({"node-0": 1}),
    job_trace([(16500.0, 6600.0, 1, 19800.0, True), (27720.0, 5460.0, 1, 8220.0, True),
               (4620.0, 8880.0, 1, 35520.0, False)]),
    days_at_zero_but(HOUR / 4, {11: 103.0, 18: 118.0, 19: 111.0, 20: 137.0, 21: 131.0, 22: 141.0,
                                23: 134.0}))

# One GPU, flat prices. job-4 (5.15 h, due at 21.0 h) runs from 15.62 h, behind late unbroken jobs. At
# 16.52 h job-8 arrives; the plan lets it run its first 14 min now (in pieces: resumes are free) and
# pauses job-4, whose latest safe resume is 16.75 h, inside the hour. Nothing else happened before 17 h,
# so job-4 resumed only when it was already late and ended 242 min late (found by hypothesis). Fixed by
# `Decisions.decide_again_s` counting the latest safe resumes of jobs paused by the decision.
PAUSED_FOR_A_NEWCOMER_INSIDE_THE_HOUR = scenario_of(
    Cluster({"node-0": 1}),
    job_trace([(60, 18120, 1, 9060, False), (60, 21480, 1, 10740, False), (60, 4500, 1, 2280, False),
               (60, 11520, 1, 5760, False), (38520, 18540, 1, 37080, True, 0.0, "A", 0),
               (240, 600, 1, 300, False), (0, 600, 1, 300, False), (0, 600, 1, 300, False),
               (59460, 15360, 1, 30720, True, 700.0, "B", 0)]),
    days_at_zero_but(HOUR, {}))


# Two nodes of 2 GPUs. job-0 and job-1 start on node-0, job-2 (at 6 min) on node-1; job-1 ends at 30 min,
# leaving one GPU free on each node. job-3 (2 GPUs, one worker) arrives at 36 min due at once: price-aware
# moves a running job to the other node to give it one (a pause and a start of the same job in one
# decision), and every deadline is met.
MOVED_FOR_A_JOB_OF_ONE_WORKER = scenario_of(
    Cluster({"node-0": 2, "node-1": 2}),
    job_trace([(0, 4 * HOUR, 1, 8 * HOUR, True), (0, HOUR / 2, 1, 8 * HOUR, True),
               (0.1 * HOUR, 4 * HOUR, 1, 8 * HOUR, True), (0.6 * HOUR, HOUR, 2, HOUR, True)]),
    days_at_zero_but(HOUR, {}))

# -- what every decision must respect ------------------------------------------------------------------


def check_decision(snapshot: Snapshot, decisions: Decisions) -> None:
    """Apply the decision to the snapshot and check what a user of the cluster relies on."""
    jobs = {job.job_id: job for job in snapshot.jobs}
    paused = {p.job_id for p in decisions.pauses}
    started = {s.job_id: s.placement for s in decisions.starts}
    waiting = [w.job_id for w in decisions.waits]
    kept = {job_id for job_id, job in jobs.items() if job.phase is Phase.RUNNING and job_id not in paused}
    # A running job both paused and started is moved (`dispatch`'s `may_move`): to another node.
    moved = paused & started.keys()
    assert all(not {node for node, _ in started[job_id]} & {node for node, _ in jobs[job_id].placement}
               for job_id in moved), "a moved job stayed on its node"
    # Every job has exactly one fate, and pauses and starts name jobs in the right phase.
    assert Counter([*kept, *paused, *(set(started) - moved), *waiting]) == Counter(list(jobs))
    assert all(jobs[job_id].phase is Phase.RUNNING for job_id in paused)
    assert all(jobs[job_id].phase is not Phase.RUNNING for job_id in set(started) - moved)
    assert not any(not jobs[job_id].preemptible for job_id in paused), "a non-preemptible job was paused"

    placements = {job_id: jobs[job_id].placement for job_id in kept} | started
    used: Counter[str] = Counter()
    for job_id, placement in placements.items():
        job = jobs[job_id]
        assert sum(g for _, g in placement) == job.num_gpus
        assert all(g % job.worker_gpus == 0 for _, g in placement), "a gang worker was split"
        for node, gpus in placement:
            used[node] += gpus
    assert all(used[node] <= snapshot.node_gpus.get(node, 0) for node in used), (used, snapshot.node_gpus)
    if snapshot.power_budget_w is not None:
        assert sum(jobs[job_id].draw_w for job_id in placements) <= snapshot.power_budget_w + 1e-6
    if snapshot.quotas:
        fixed: Counter[str] = Counter()
        for job_id in placements:
            if not jobs[job_id].preemptible:
                fixed[jobs[job_id].team] += jobs[job_id].num_gpus
        borrowed = sum(max(0, gpus - snapshot.quotas.get(team, 0)) for team, gpus in fixed.items())
        assert borrowed <= snapshot.total_gpus - sum(snapshot.quotas.values()), \
            "non-preemptible jobs borrowed guaranteed GPUs"


def check_outcome(scenario: Scenario, outcome: Outcome) -> None:
    trace, cluster = scenario.trace, scenario.cluster
    submit_s = T0 + trace.submit_s
    assert not np.isnan(outcome.finish_s).any(), "a job never finished"
    assert np.all(outcome.first_start_s >= submit_s - 1e-6)
    assert np.all(outcome.finish_s >= submit_s + trace.duration_s - 1e-6)
    # Exactly the duration on the GPUs, plus one resume overhead per pause.
    np.testing.assert_allclose(outcome.run_s, trace.duration_s + scenario.overhead_s * outcome.preemptions,
                               rtol=0, atol=1e-3)
    assert np.all(outcome.segment_busy_gpus <= cluster.total_gpus)
    if cluster.power_budget_w is not None:
        assert np.all(outcome.segment_power_w <= cluster.power_budget_w + 1e-6)
    # The power profile accounts for every job's energy (resume overheads included).
    busy_gpu_s = np.sum(outcome.segment_busy_gpus * (outcome.segment_end_s - outcome.segment_start_s))
    assert busy_gpu_s == pytest.approx(float(np.sum(trace.num_gpus * outcome.run_s)), rel=1e-9, abs=1e-3)
    # A deadline shorter than the run time is reported at admission by every policy; fifo and priority
    # judge nothing else (price-aware also reports jobs whose room is already planned for others).
    too_short = trace.deadline_s < trace.duration_s - 1e-6
    if outcome.policy == "price-aware":
        assert np.all(outcome.infeasible[too_short])
    else:
        assert outcome.infeasible.tolist() == too_short.tolist()


@pytest.mark.parametrize("policy_name", POLICY_NAMES)
@EXAMPLES
@example(scenario=MOVED_FOR_A_JOB_OF_ONE_WORKER)
@given(scenario=scenarios())
def test_every_policy_respects_capacity_power_quotas_and_runs_every_job_to_completion(
        policy_name: str, scenario: Scenario) -> None:
    outcome, recording = scenario.run(policy_name)
    check_outcome(scenario, outcome)
    assert recording.calls, "the policy was never asked"
    for snapshot, decisions in recording.calls:
        check_decision(snapshot, decisions)
    # Each job is judged at admission exactly once.
    admissions = Counter(job_id for _, decisions in recording.calls for job_id in decisions.admitted)
    assert admissions == Counter(scenario.trace.job_id.tolist())
    reported = [job_id for _, decisions in recording.calls for job_id, _ in decisions.infeasible]
    assert sorted(reported) == sorted(scenario.trace.job_id[outcome.infeasible].tolist())


@EXAMPLES
@given(scenario=scenarios(one_node=True, budget=False, quotas=False))
def test_fifo_leaves_a_job_waiting_only_when_its_gpus_are_not_free(scenario: Scenario) -> None:
    outcome, recording = scenario.run("fifo")
    total = scenario.cluster.total_gpus
    busy_after = []
    for snapshot, decisions in recording.calls:
        jobs = {job.job_id: job for job in snapshot.jobs}
        assert decisions.pauses == (), "fifo paused a job"
        busy = sum(job.num_gpus for job in snapshot.jobs if job.phase is Phase.RUNNING) + \
            sum(jobs[s.job_id].num_gpus for s in decisions.starts)
        for wait in decisions.waits:
            assert jobs[wait.job_id].num_gpus > total - busy, \
                f"{wait.job_id} waits ({wait.reason}) with {total - busy} of {total} GPUs free"
        busy_after.append(busy)
    # The outcome's timeline shows the same occupancy after each decision.
    assert outcome.timeline_busy_gpus.tolist() == busy_after


def cost_of(scenario: Scenario, outcome: Outcome) -> float:
    _, cost, _, uncovered_kwh = charge(outcome, scenario.prices.price, None)
    assert uncovered_kwh == 0.0
    return cost


def cost_tolerance(scenario: Scenario) -> float:
    """A millionth of what the jobs' energy costs at the dearest price: comparable even when a cost is 0."""
    return 1e-6 * max(1e-9, float(scenario.trace.energy_kwh.sum()) * 200 / 1000)


@EXAMPLES
@given(scenario=scenarios(max_jobs=1, one_node=True, quotas=False, overhead=False, preemptible=True,
                          aligned=True))
def test_a_lone_job_with_an_exact_forecast_costs_the_offline_optimum(scenario: Scenario) -> None:
    # On whole intervals the cheapest schedule is reachable by decisions at interval starts (given as many
    # pauses a day as it takes: the cap trades that cost for fewer interruptions; and pauses without an
    # interval to spare: the guard trades that cost for a resume that may slip).
    uncapped = PriceAwarePolicy(max_pauses_per_day=10**6, pause_guard_intervals=0.0)
    outcome, _ = scenario.run("price-aware", forecast_hours=scenario.days * 24 + 24, policy=uncapped)
    optimum = offline_optimum(scenario.trace, scenario.prices.price, time_zero_s=T0,
                              gpus=scenario.cluster.total_gpus)
    assert optimum.feasible
    cost = cost_of(scenario, outcome)
    assert abs(cost - optimum.cost) <= cost_tolerance(scenario), (cost, optimum.cost)


# Found by the property below (one 300 W job on one GPU, no resume overhead) with the pause guard on
# (`pause_guard_intervals`, an hour): a plan whose later run ends within the guard of the deadline, which
# no pause for price may reach, so the job ran through the dear hour the plan skipped and cost more than
# fifo. Planning only runs the guard lets a job reach was measured and not kept (bench/README.md).
# Running at 47 h with 1 h 1 min left to run after it, due at 51 h: paused for the 1.0 hour, planned for 48 h
# and 50 h, it could not be paused at 49 h (a resume at 50 h finishes later than 50 h): a minute at 61.0.
PAUSED_INTO_A_PLAN_THE_GUARD_FORBIDS = scenario_of(
    Cluster({"node-0": 1}), job_trace([(162120.0, 10740.0, 1, 21480.0, True, 300.0, "", 0)]),
    days_at_zero_but(HOUR, {47: 1.0, 49: 61.0}, days=4), days=4)
# Queued at 53 h, 2 h 11 min of work due at 57 h 22 min: planned for 54 h, 55 h and 57 h, it started at 54 h
# and could not be paused at 56 h: 11 minutes at 6.0.
STARTED_INTO_A_PLAN_THE_GUARD_FORBIDS = scenario_of(
    Cluster({"node-0": 1}), job_trace([(190800.0, 7860.0, 1, 15720.0, True, 300.0, "", 0)]),
    days_at_zero_but(HOUR, {53: 1.0, 56: 6.0}, days=4), days=4)


@EXAMPLES
@example(scenario=PAUSED_INTO_A_PLAN_THE_GUARD_FORBIDS)
@example(scenario=STARTED_INTO_A_PLAN_THE_GUARD_FORBIDS)
@given(scenario=scenarios(max_jobs=1, one_node=True, quotas=False, overhead=False))
def test_a_lone_job_with_an_exact_forecast_costs_between_the_optimum_and_starting_at_once(
        scenario: Scenario) -> None:
    exact_hours = scenario.days * 24 + 24
    # Uncapped: with `max_pauses_per_day` 3 hypothesis found a lone job whose capped pauses left it dearer
    # than running at once (a known gap of issue 19, in the closing note). Unguarded: so did the pause guard
    # (the two examples above): both trade cost for fewer interruptions or a resume that may slip.
    uncapped = PriceAwarePolicy(max_pauses_per_day=10**6, pause_guard_intervals=0.0)
    outcome, _ = scenario.run("price-aware", forecast_hours=exact_hours, policy=uncapped)
    baseline, _ = scenario.run("fifo", forecast_hours=exact_hours)
    optimum = offline_optimum(scenario.trace, scenario.prices.price, time_zero_s=T0,
                              gpus=scenario.cluster.total_gpus)
    cost, tolerance = cost_of(scenario, outcome), cost_tolerance(scenario)
    assert optimum.cost - tolerance <= cost <= cost_of(scenario, baseline) + tolerance
    if not scenario.trace.preemptible[0]:
        assert outcome.preemptions.tolist() == [0]
        assert outcome.finish_s[0] - outcome.first_start_s[0] == pytest.approx(scenario.trace.duration_s[0])


def _late_among_admitted(scenario: Scenario, outcome: Outcome) -> dict[str, str]:
    """Jobs admitted as feasible that finished after their deadline, by how much."""
    due_s = T0 + scenario.trace.submit_s + scenario.trace.deadline_s
    late = (outcome.finish_s > due_s + 1e-3) & ~outcome.infeasible
    return {str(scenario.trace.job_id[i]): f"{(outcome.finish_s[i] - due_s[i]) / 60:.1f} min late"
            for i in np.flatnonzero(late)}


# Found by hypothesis after the two above were fixed (not shrunk further), all fixed by counting GPUs
# (and power) per interval as the cluster holds them -- from the interval's start to its end, or to the
# job's finish in it -- rather than in GPU-seconds (`plan.Planner`), and by keeping the rescue plan
# whenever it leaves fewer admitted jobs short:
# Four GPUs, flat prices. Six jobs are infeasible from the start and run as soon as possible, unbroken;
# job-7 arrives at 14040 s and was admitted as feasible (due 19320 s), planned from 18000 s, but an
# unbroken job held every GPU until 18060 s: it ended 1 min late.
UNBROKEN_AT_RISK_IN_THE_WAY = scenario_of(
    Cluster({"node-0": 4}),
    job_trace([(0.0, 10680.0, 4, 5340.0, False), (0.0, 600.0, 1, 300.0, False),
               (0.0, 600.0, 1, 300.0, False), (0.0, 600.0, 1, 300.0, False),
               (0.0, 6780.0, 1, 3420.0, False), (0.0, 600.0, 1, 300.0, False),
               (0.0, 600.0, 1, 300.0, False), (14040.0, 1320.0, 1, 5280.0, False)]),
    days_at_zero_but(HOUR, {}))
# Five GPUs. job-8 has 3780 s left, due 86580 s; job-0 arrives at 61260 s needing all five GPUs for
# 21600 s, without slack. GPU-seconds said job-8 could still use the last hour in full (job-0 takes
# only 60 s of it), but job-0 holds every GPU from its start until 82860 s: job-8 ended 1 min late.
ZERO_LAXITY_INTO_THE_LAST_HOUR = scenario_of(
    Cluster({"node-0": 5}),
    job_trace([(61260.0, 21600.0, 5, 21600.0, True, 0.0, "", 0)]
              + [(0.0, 600.0, 1, 300.0, False, 0.0, "", 0)] * 7
              + [(12780.0, 7380.0, 1, 73800.0, True, 0.0, "", 0)]),
    IntervalSeries(T0, HOUR, np.array([0.0, 0.0, 0.0, 1.0, 0.0] + [1.0] * 13 + [0.0] * 30)))
# Two GPUs, 15-minute prices. job-4 (both GPUs, unbroken, 7500 s, due 30000 s) was admitted; job-2
# arrives at 18240 s needing one GPU for 10800 s without slack. Planning it first leaves job-4 short;
# the rescue round (job-4 and job-0 as soon as possible) meets both but turns job-2 away, and was
# refused for that: job-2 was admitted instead, and job-4 ended 109 min late. An admission is a promise;
# the newcomer is the one reported infeasible.
NEWCOMER_OVER_AN_ADMITTED_JOB = scenario_of(
    Cluster({"node-0": 2}),
    job_trace([(18000.0, 3420.0, 1, 4320.0, False, 0.0, "", 0), (0.0, 600.0, 1, 300.0, False, 0.0, "", 0),
               (18240.0, 10800.0, 1, 10800.0, False, 0.0, "", 0),
               (0.0, 13560.0, 2, 54240.0, False, 0.0, "", 0), (0.0, 7500.0, 2, 30000.0, False, 0.0, "", 0)]),
    days_at_zero_but(HOUR / 4, dict.fromkeys([24, 25, 26, 27, 32, 33, 34, 35, 56, 57, 58, 59], -1.0)))
# Two GPUs, a 1000 W budget, two 700 W jobs that cannot run together. Power was counted in
# watt-seconds per interval, so job-0 (admitted at 22620 s, due 35340 s) was planned beside job-4's
# last minute in an interval whose budget job-4 holds from its start: job-0 ended 1 min late.
POWER_HELD_FROM_THE_START = scenario_of(
    Cluster({"node-0": 2}, power_budget_w=1000.0),
    job_trace([(22620.0, 10140.0, 1, 12720.0, False, 700.0, "", 0)]
              + [(0.0, 600.0, 1, 300.0, False, 0.0, "", 0)] * 3
              + [(3660.0, 21600.0, 1, 10800.0, False, 700.0, "", 0)]
              + [(0.0, 600.0, 1, 300.0, False, 0.0, "", 0)] * 2),
    days_at_zero_but(HOUR / 4, {}))

# Eight GPUs, flat prices. job-5 (one GPU, unbroken, 8940 s, due 36780 s) was admitted, then found no room
# in the plan (it counts whole intervals): its latest start alone, 27840 s, lies in the hour from 25200 s.
# Started at 25200 s, it paused job-1 (seven GPUs, 4380 s left, due 33180 s), whose resume then waited
# for job-0's GPU until 28860 s: job-1 ended 1 min late. Started at 27840 s, job-1 has 1740 s left and
# every job is on time. Found by hypothesis after the pause guard landed.
SHORT_JOB_STARTED_AT_THE_HOURS_START = scenario_of(
    Cluster({"node-0": 8}),
    job_trace([(11820.0, 17040.0, 1, 21300.0, True, 0.0, "", 0),
               (9180.0, 19200.0, 7, 24000.0, True, 0.0, "", 0),
               (11880.0, 1200.0, 1, 1200.0, False, 0.0, "", 0)]
              + [(0.0, 600.0, 1, 300.0, False, 0.0, "", 0)] * 2
              + [(1020.0, 8940.0, 1, 35760.0, False, 300.0, "B", 0)]),
    IntervalSeries(T0, HOUR, np.array([0.0] * 9 + [-1.0] + [0.0] * 62)), days=3)


def test_a_job_freeing_gpus_within_the_hour_leaves_room_for_a_wider_admitted_job() -> None:
    scenario = SHARED_CHEAP_HOUR
    outcome, _ = scenario.run("price-aware", forecast_hours=scenario.days * 24 + 24)
    due_s = T0 + scenario.trace.submit_s + scenario.trace.deadline_s
    admitted = ~outcome.infeasible
    assert (outcome.finish_s[admitted] <= due_s[admitted] + 1e-3).all()


def test_an_unbroken_job_planned_first_does_not_push_an_admitted_job_past_its_deadline() -> None:
    scenario = NON_PREEMPTIBLE_IN_THE_WAY
    outcome, _ = scenario.run("price-aware", forecast_hours=scenario.days * 24 + 24)
    due_s = T0 + scenario.trace.submit_s + scenario.trace.deadline_s
    assert outcome.infeasible.tolist() == [False, True, False]
    assert (outcome.finish_s[[0, 2]] <= due_s[[0, 2]] + 1e-3).all()


@EXAMPLES
@example(scenario=SHARED_CHEAP_HOUR)
@example(scenario=NON_PREEMPTIBLE_IN_THE_WAY)
@example(scenario=UNBROKEN_AT_RISK_IN_THE_WAY)
@example(scenario=ZERO_LAXITY_INTO_THE_LAST_HOUR)
@example(scenario=NEWCOMER_OVER_AN_ADMITTED_JOB)
@example(scenario=POWER_HELD_FROM_THE_START)
@example(scenario=PAUSED_FOR_A_NEWCOMER_INSIDE_THE_HOUR)
@example(scenario=SHORT_JOB_STARTED_AT_THE_HOURS_START)
@given(scenario=scenarios(one_node=True, overhead=False, quotas=False))
def test_price_aware_with_an_exact_forecast_meets_every_deadline_it_admitted(scenario: Scenario) -> None:
    exact_hours = scenario.days * 24 + 24
    outcome, _ = scenario.run("price-aware", forecast_hours=exact_hours)
    late = _late_among_admitted(scenario, outcome)
    assert not late, late


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(one_node=True, overhead=False, quotas=False),
       shrink=st.sampled_from([0.0, 0.5, 1.0]))
def test_price_aware_meets_every_deadline_it_admitted_on_estimated_prices_too(scenario: Scenario,
                                                                              shrink: float) -> None:
    # Prices known 12 h ahead, estimated beyond and pulled toward the known mean by `shrink`: the promise
    # rests on the reservation plan, which reads no price, so no estimate may break it.
    policy = PriceAwarePolicy(forecast_shrink=shrink)
    outcome, _ = scenario.run("price-aware", forecast_hours=12, policy=policy)
    late = _late_among_admitted(scenario, outcome)
    assert not late, late


# Prices falling every hour for ten hours, then free: the jobs of the two slack tests below wait for the end.
FALLING = IntervalSeries(T0, HOUR, np.array([100.0 - 10 * h for h in range(10)] + [0.0] * 38))


@pytest.mark.parametrize("arrival_slack", [0.0, PriceAwarePolicy.arrival_slack])
def test_jobs_waiting_for_cheap_hours_keep_slack_for_a_newcomer_with_a_short_deadline(
        arrival_slack: float) -> None:
    # Without slack means without either margin: the price plan's and the reservation plan's.
    # Two GPUs, prices falling every hour. Two 4 h jobs due at 8 h wait for the cheapest hours; with no
    # slack kept, both run from 4 h to 8 h with none to spare, and a 30 min job arriving at 5 h, due at
    # 6 h, finds no GPU: it is reported infeasible and misses. Keeping 10% of its run time as slack,
    # the second job starts an hour earlier and can step aside for it.
    scenario = scenario_of(Cluster({"node-0": 2}),
                           job_trace([(0.0, 4 * HOUR, 1, 8 * HOUR, True), (0.0, 4 * HOUR, 1, 8 * HOUR, True),
                                      (5 * HOUR, 1800.0, 1, HOUR, True)]), FALLING)
    outcome = simulate(scenario.trace, scenario.prices.feed(48.0), scenario.cluster,
                       PriceAwarePolicy(arrival_slack=arrival_slack, reserve_margin=arrival_slack),
                       time_zero_s=T0)
    due_s = T0 + scenario.trace.submit_s + scenario.trace.deadline_s
    late = (outcome.finish_s > due_s + 1e-3).tolist()
    if arrival_slack == 0.0:
        assert late == [False, False, True] and outcome.infeasible.tolist() == [False, False, True]
    else:
        assert late == [False, False, False] and not outcome.infeasible.any()
        # The slack costs little: the newcomer runs at once, the others still mostly in the cheap hours.
        assert outcome.first_start_s[2] == T0 + 5 * HOUR
        assert min(outcome.first_start_s[:2]) >= T0 + 3 * HOUR


@pytest.mark.parametrize(("cluster_gpus", "job_gpus", "budget_w", "slack_kept"),
                         [(4, 2, None, True), (16, 2, None, False), (16, 1, None, True), (16, 2, 1e7, True)])
def test_a_gang_keeps_the_arrival_slack_only_where_its_cheap_hours_leave_arrivals_too_little_room(
        cluster_gpus: int, job_gpus: int, budget_w: float | None, slack_kept: bool) -> None:
    # The slack test above with wider jobs. On four GPUs the two 2-GPU jobs fill the cluster in their
    # cheapest hours, so a newcomer needs the slack: the first job starts an hour early. On sixteen, twelve
    # GPUs stay free beside them (more than `gang_arrival_room` of the cluster): the first job waits for the
    # cheapest four hours, as without any slack, and the newcomer still finds room at once. One-GPU jobs
    # keep the slack wherever their window is shared (measured: bench/README.md), and so does every job under
    # a power budget (free GPUs may lack the watts an arrival needs).
    scenario = scenario_of(Cluster({"node-0": cluster_gpus}, power_budget_w=budget_w), job_trace(
        [(0.0, 4 * HOUR, job_gpus, 8 * HOUR, True), (0.0, 4 * HOUR, job_gpus, 8 * HOUR, True),
         (5 * HOUR, 1800.0, job_gpus, HOUR, True)]), FALLING)

    def run(policy: PriceAwarePolicy) -> tuple[list[float], list[bool]]:
        outcome = simulate(scenario.trace, scenario.prices.feed(48.0), scenario.cluster, policy,
                           time_zero_s=T0)
        late = outcome.finish_s > T0 + scenario.trace.submit_s + scenario.trace.deadline_s + 1e-3
        return ((outcome.first_start_s - T0) / HOUR).tolist(), (late | outcome.infeasible).tolist()

    assert PriceAwarePolicy.gang_arrival_room <= 12 / 16  # (the large cluster is roomy by the default)
    starts_h, failed = run(PriceAwarePolicy())
    assert failed == [False, False, False] and starts_h[2] == 5.0
    assert starts_h[0] == (3.0 if slack_kept else 4.0)
    # With a slack for every gang (`gang_arrival_room` 1) the first job starts early wherever it shares.
    assert run(PriceAwarePolicy(gang_arrival_room=1.0))[0][0] == 3.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(budget=False, max_jobs=6))
def test_no_schedule_that_keeps_every_deadline_costs_less_than_the_optimum_with_its_resumes(
        scenario: Scenario) -> None:
    # The LP charges each resume its overhead only as far as a relaxation can (optimum.py): it must stay a
    # lower bound on every schedule the simulator replays with that overhead, pauses and resumes included.
    # (Without a power budget: a capped GPU's energy is not the LP's.)
    free = offline_optimum(scenario.trace, scenario.prices.price, time_zero_s=T0,
                           gpus=scenario.cluster.total_gpus)
    charged = offline_optimum(scenario.trace, scenario.prices.price, time_zero_s=T0,
                              gpus=scenario.cluster.total_gpus, preempt_overhead_s=scenario.overhead_s)
    tolerance = cost_tolerance(scenario)
    assert free.feasible or not charged.feasible  # (resumes that do not fit fail only the charged one)
    if not charged.feasible:
        return
    if scenario.prices.price.values.min() >= 0:  # (below zero, redoing work after a resume can pay)
        assert charged.cost >= free.cost - tolerance
    trace = scenario.trace
    window_end_s = T0 + trace.submit_s + np.maximum(trace.deadline_s, trace.duration_s)
    for name in ("fifo", "price-aware"):
        outcome, _ = scenario.run(name)
        if np.all(outcome.finish_s <= window_end_s + 1e-6):  # (the LP's windows: it keeps every deadline)
            assert charged.cost <= cost_of(scenario, outcome) + tolerance, (name, charged.cost)
