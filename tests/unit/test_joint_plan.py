"""The flexible jobs planned together (`joint_plan`): a cheap hour goes to the job that needs it most.

Two GPUs; two cheap hours, then a dear one. "now" (1 h) must run in the first hour; "short" (1 h) may
run in either cheap hour; "long" (2 h) may run until the dear hour ends. Planned one by one, least laxity
first, "short" takes the first cheap hour beside "now" and "long" is left the dear one; planned together,
"long" runs in both cheap hours and "short" in the second.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from factory.errors import FactoryError
from factory.scheduling import PriceAwarePolicy
from factory.scheduling.joint_plan import MAX_JOBS, joint_applies, plan_jointly
from factory.scheduling.model import Decisions
from factory.scheduling.plan import FLEXIBLE, Planner, PlanRequest
from tests.unit.test_scheduling_policies import HOUR, T0, job, outlook, running, snapshot, started

PRICES = [10.0, 10.0, 90.0]
JOBS = [job("now", hours=1, deadline_s=T0 + HOUR), job("short", hours=1, deadline_s=T0 + 2 * HOUR),
        job("long", hours=2, deadline_s=T0 + 3 * HOUR)]


def _requests() -> list[PlanRequest]:
    return [PlanRequest(j, j.remaining_s, j.deadline_s or 0.0, FLEXIBLE) for j in JOBS]


def _cost(plans: list) -> float:
    """Price x GPU-hours of every plan (each job has one GPU)."""
    return sum(float(np.dot(np.asarray(PRICES)[plan.intervals], plan.seconds)) / HOUR for plan in plans)


def test_planned_together_every_job_runs_in_the_cheap_hours_one_by_one_one_is_left_the_dear_hour() -> None:
    one_by_one = Planner(outlook(PRICES), T0, 2, None)
    greedy = [one_by_one.plan(r) for r in sorted(_requests(), key=lambda r: (r.deadline_s - r.needed_s,
                                                                              r.deadline_s))]
    assert all(plan.covered for plan in greedy) and _cost(greedy) == pytest.approx(10 + 10 + 10 + 90)

    together = plan_jointly(Planner(outlook(PRICES), T0, 2, None), _requests(), capacity_margin=0.0)
    assert together is not None
    plans = {request.job.job_id: plan for request, plan in together}
    assert all(plan.covered for plan in plans.values()) and _cost(list(plans.values())) == pytest.approx(40)
    assert plans["long"].intervals.tolist() == [0, 1] and plans["short"].intervals.tolist() == [1]
    # Placed in the order they start: the jobs that run for the whole current interval first.
    assert [request.job.job_id for request, _ in together][-1] == "short"


def test_the_margin_for_jobs_to_come_gives_way_when_the_jobs_here_need_the_room() -> None:
    # Three quarters of every later interval kept back leaves 3 GPU-hours for 5 of work: the margin yields,
    # and the dear last hour runs one job.
    extra = job("extra", hours=1, deadline_s=T0 + 3 * HOUR)
    requests = [*_requests(), PlanRequest(extra, extra.remaining_s, T0 + 3 * HOUR, FLEXIBLE)]
    together = plan_jointly(Planner(outlook(PRICES), T0, 2, None), requests, capacity_margin=0.75)
    assert together is not None and all(plan.covered for _, plan in together)
    later_s = sum(float(plan.seconds[plan.intervals >= 1].sum()) for _, plan in together)
    assert later_s == pytest.approx(3 * HOUR)


@pytest.mark.parametrize(("margin", "first_cheap_gpu_hours"), [(0.0, 2.0), (0.5, 1.0), (0.15, 2.0)])
def test_the_margin_keeps_part_of_each_later_interval_for_jobs_to_come(
    margin: float, first_cheap_gpu_hours: float
) -> None:
    # Two GPUs, three 1 h jobs, the cheapest hour next: without a margin two jobs take it; with half of every
    # later interval kept back, only one does, and the others spread over the next hours. A margin of less
    # than one of the cluster's GPUs (0.15 of two) could hold no job that arrives, so none is kept.
    jobs = [job(name, hours=1, deadline_s=T0 + 4 * HOUR) for name in ("a", "b", "c")]
    requests = [PlanRequest(j, HOUR, T0 + 4 * HOUR, FLEXIBLE) for j in jobs]
    together = plan_jointly(Planner(outlook([50, 10, 20, 20]), T0, 2, None), requests, capacity_margin=margin)
    assert together is not None and all(plan.covered for _, plan in together)
    in_cheapest_s = sum(float(plan.seconds[plan.intervals == 1].sum()) for _, plan in together)
    assert in_cheapest_s == pytest.approx(first_cheap_gpu_hours * HOUR)


def test_a_job_started_now_keeps_to_the_pause_cap_or_waits_for_its_cheapest_unbroken_run() -> None:
    # One GPU. "capped" (2 h) has used today's pauses: its cheap hours now and at 2 h would need a pause, so
    # it waits for its cheapest unbroken run (2 h to 4 h) rather than start now and run through the dear hour.
    capped = job("capped", hours=2, deadline_s=T0 + 4 * HOUR, pauses_today=3)
    other = job("other", hours=1, deadline_s=T0 + 5 * HOUR)
    requests = [PlanRequest(j, j.remaining_s, j.deadline_s or 0.0, FLEXIBLE) for j in (capped, other)]
    planner = Planner(outlook([10, 90, 10, 10, 90]), T0, 1, None, max_pauses_per_day=3)
    together = {r.job.job_id: plan for r, plan in plan_jointly(planner, requests, 0.0) or []}
    assert together["capped"].intervals.tolist() == [2, 3]


def test_no_more_jobs_start_now_than_there_are_free_gpus_and_each_runs_through_the_interval() -> None:
    # One GPU, two equal jobs: the program alone would run each for half of now; the cluster cannot.
    same = [job(name, hours=1.5, deadline_s=T0 + 3 * HOUR) for name in ("a", "b")]
    requests = [PlanRequest(j, j.remaining_s, T0 + 3 * HOUR, FLEXIBLE) for j in same]
    together = plan_jointly(Planner(outlook([10, 10, 50, 50]), T0, 1, None), requests, capacity_margin=0.0)
    assert together is not None
    (first, first_plan), (second, second_plan) = together
    assert first_plan.intervals.tolist() == [0, 1] and first_plan.seconds[0] == pytest.approx(HOUR)
    assert second_plan.intervals[0] >= 1 and all(plan.covered for _, plan in together)
    # Placed in that order, the planner never holds more GPUs now than the cluster has.
    planner = Planner(outlook([10, 10, 50, 50]), T0, 1, None)
    placed = [planner.place(request, plan) for request, plan in
              plan_jointly(planner, requests, capacity_margin=0.0) or []]
    assert [plan.runs_now for plan in placed if plan is not None] == [True, False]
    assert planner.free_gpus_now == 0


@pytest.mark.parametrize(("resume_h", "flexible_hours"), [(0.0, [1, 3]), (0.25, [1, 3, 4]), (1.0, [3, 4])])
def test_each_resume_is_charged_its_redone_run_time(resume_h: float, flexible_hours: list[int]) -> None:
    # One GPU; "now" takes the first hour. "flexible" (2 h) has cheap hours 1 and 3 with a dear one between.
    # Split there, it pays one resume: redone in hour 4, the next cheapest it has room in. A quarter-hour
    # resume (10 + 10 + 7.5) still beats the cheapest unbroken run, hours 3-4 (10 + 30); an hour's does not.
    now = job("now", hours=1, deadline_s=T0 + HOUR)
    flexible = job("flexible", hours=2, deadline_s=T0 + 5 * HOUR)
    requests = [PlanRequest(now, HOUR, T0 + HOUR, FLEXIBLE, resume_s=resume_h * HOUR),
                PlanRequest(flexible, 2 * HOUR, T0 + 5 * HOUR, FLEXIBLE, resume_s=resume_h * HOUR)]
    planner = Planner(outlook([10, 10, 60, 10, 30]), T0, 1, None)
    together = {r.job.job_id: plan for r, plan in plan_jointly(planner, requests, capacity_margin=0.0) or []}
    plan = together["flexible"]
    assert plan.intervals.tolist() == flexible_hours and plan.covered
    assert float(plan.seconds.sum()) == pytest.approx((2 + resume_h * (len(flexible_hours) > 2)) * HOUR)


def test_no_resume_is_planned_for_the_run_time_it_would_add_in_hours_below_zero() -> None:
    # One GPU, two hours at -20 after "now". A resume adds its overhead to the run time, which those hours
    # would pay for: the program must not plan "later" in two runs for that (the cluster would run it once).
    now = job("now", hours=1, deadline_s=T0 + HOUR)
    later = job("later", hours=1, deadline_s=T0 + 4 * HOUR)
    requests = [PlanRequest(j, HOUR, j.deadline_s or 0.0, FLEXIBLE, resume_s=HOUR / 2) for j in (now, later)]
    together = plan_jointly(Planner(outlook([10, -20, -20, 50]), T0, 1, None), requests, capacity_margin=0.0)
    plan = {r.job.job_id: plan for r, plan in together or []}["later"]
    assert len(plan.intervals) == 1 and plan.intervals[0] in (1, 2)
    assert float(plan.seconds.sum()) == pytest.approx(HOUR)


def test_when_the_jobs_do_not_fit_the_greedy_plan_decides_who_is_left_short() -> None:
    crowded = [*_requests(), PlanRequest(job("more", hours=3, deadline_s=T0 + 3 * HOUR), 3 * HOUR,
                                         T0 + 3 * HOUR, FLEXIBLE)]
    assert plan_jointly(Planner(outlook(PRICES), T0, 2, None), crowded, capacity_margin=0.0) is None


def test_jobs_that_do_not_compete_for_room_are_left_to_the_greedy_plan() -> None:
    # On eight GPUs each job has its cheapest hours to itself: planning them together would change nothing.
    assert plan_jointly(Planner(outlook(PRICES), T0, 8, None), _requests(), capacity_margin=0.0) is None


def _decide(**fields: object) -> Decisions:
    # As above, but "now" is a running job that cannot be paused: nobody is due, every job here is flexible.
    busy = running("busy", (("n0", 1),), hours=1, preemptible=False, deadline_s=T0 + 3 * HOUR)
    policy = PriceAwarePolicy(arrival_slack=0.0, reserve_margin=0.0, **fields)  # type: ignore[arg-type]
    return policy.decide(snapshot([busy, *JOBS[1:]], PRICES, nodes={"n0": 2}))


def test_price_aware_starts_the_job_that_needs_the_cheap_hour_now() -> None:
    assert set(started(_decide(joint_margin=0.0))) == {"long"}
    # Planned one by one (the joint plan off), "short" would take it and "long" would run in the dear hour.
    assert set(started(_decide(joint_margin=None))) == {"short"}


def test_while_a_job_is_due_now_the_flexible_jobs_are_planned_one_by_one_least_laxity_first() -> None:
    # "now" must start now: with promises pressed, the tightest flexible job goes first, as without the plan.
    decide = PriceAwarePolicy(arrival_slack=0.0, reserve_margin=0.0, joint_margin=0.0).decide
    assert set(started(decide(snapshot(JOBS, PRICES, nodes={"n0": 2})))) == {"now", "short"}


@pytest.mark.parametrize("margin", [-0.1, 1.0, float("nan")])
def test_a_joint_margin_outside_zero_to_one_is_refused(margin: float) -> None:
    with pytest.raises(FactoryError, match="joint_margin"):
        PriceAwarePolicy(joint_margin=margin)


@pytest.mark.parametrize("change", ["resume never paid back", "not preemptible", "several GPUs",
                                    "power budget", "too many jobs", "resumes beside a gang"])
def test_jobs_are_planned_one_by_one_where_the_program_cannot_say_what_the_cluster_does(change: str) -> None:
    requests = _requests()
    planner = Planner(outlook(PRICES), T0, 2, None)
    assert joint_applies(planner, requests, default_overhead_s=0.0)
    assert joint_applies(planner, requests, default_overhead_s=600.0)  # each resume charged its run time
    if change == "resume never paid back":
        assert not joint_applies(planner, requests, default_overhead_s=math.inf)
    elif change == "resumes beside a gang":
        gang = job("gang", gpus=2, hours=1)
        assert joint_applies(planner, requests, default_overhead_s=600.0, cluster_jobs=[gang, *JOBS])
        resuming = [r._replace(resume_s=600.0) for r in requests]
        assert joint_applies(planner, resuming, default_overhead_s=600.0, cluster_jobs=JOBS)
        assert not joint_applies(planner, resuming, default_overhead_s=600.0, cluster_jobs=[gang, *JOBS])
    elif change == "not preemptible":
        requests[2] = requests[2]._replace(job=replace(requests[2].job, preemptible=False))
        assert not joint_applies(planner, requests, default_overhead_s=0.0)
    elif change == "several GPUs":
        requests[2] = requests[2]._replace(job=replace(requests[2].job, num_gpus=2))
        assert not joint_applies(planner, requests, default_overhead_s=0.0)
    elif change == "power budget":
        assert not joint_applies(Planner(outlook(PRICES), T0, 2, 5000.0), requests, default_overhead_s=0.0)
    else:
        many = [r._replace(job=replace(r.job, job_id=f"j{i}")) for i, r in enumerate(requests * MAX_JOBS)]
        assert not joint_applies(planner, many, default_overhead_s=0.0)
