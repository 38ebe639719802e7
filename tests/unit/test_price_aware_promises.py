"""The promises of `price-aware` (issue 19): latest safe starts, honest admission, pauses that pay, the cap.

Decisions on hand-built snapshots (no simulator), then properties over random simulated traces.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from factory.prices.series import utc_label
from factory.scheduling import PriceAwarePolicy, reservation
from factory.scheduling.model import Decisions, Snapshot, WaitReason
from factory.scheduling.reservation import SHORT_START_LAG_S, Booking, Reservation, due_alone, reserve
from factory.simulation.engine import Cluster
from tests.unit.test_scheduling_policies import (
    HOUR,
    T0,
    detail,
    job,
    outlook,
    paused,
    running,
    snapshot,
    started,
    waiting,
)
from tests.unit.test_simulation_invariants import (
    EXAMPLES,
    Recording,
    Scenario,
    days_at_zero_but,
    job_trace,
    scenario_of,
    scenarios,
)

EXPENSIVE_NEXT = [50, 100, 100, 10, 10, 50, 50, 50]  # now 50, two dear hours, two cheap ones


def test_a_job_waiting_for_a_cheap_hour_is_told_its_latest_safe_start_and_deadline() -> None:
    # Alone on the cluster it needs no margin: 2 h of work due at 6 h may start as late as 4 h.
    snap = snapshot([job("train", hours=2, deadline_s=T0 + 6 * HOUR)], prices=[50, 50, 10, 10, 50, 50])
    decisions = PriceAwarePolicy().decide(snap)
    (wait,) = decisions.waits
    assert wait.reason is WaitReason.PRICE and wait.latest_safe_start_s == T0 + 4 * HOUR
    assert wait.detail == (f"cheap window at {utc_label(T0 + 2 * HOUR)}; latest safe start "
                           f"{utc_label(T0 + 4 * HOUR)}; deadline {utc_label(T0 + 6 * HOUR)}")


def test_a_job_at_its_latest_safe_start_runs_whatever_the_price() -> None:
    # Due now: the dear hour is the last one in which it can still start and finish in time.
    snap = snapshot([job("train", hours=2, deadline_s=T0 + 2 * HOUR, admitted=True)], prices=[500, 500, 1])
    assert started(PriceAwarePolicy().decide(snap)) == {"train": (("n0", 1),)}


def test_a_due_job_preempts_a_flexible_one_but_never_a_late_or_capped_one() -> None:
    # One GPU. "flex" could wait a day; "urgent" must start now to make its deadline.
    urgent = job("urgent", hours=1, deadline_s=T0 + HOUR, admitted=True)
    flex = running("flex", (("n0", 1),), hours=1, deadline_s=T0 + 24 * HOUR)
    decisions = PriceAwarePolicy().decide(snapshot([urgent, flex], [50] * 30, nodes={"n0": 1}))
    assert started(decisions) == {"urgent": (("n0", 1),)} and set(paused(decisions)) == {"flex"}
    # A job paused as often as the day allows keeps running: the plan holds it, so nobody is due over it.
    capped = replace(flex, pauses_today=3)
    decisions = PriceAwarePolicy().decide(snapshot([capped, job("later", hours=1, deadline_s=T0 + 3 * HOUR)],
                                                   [50] * 30, nodes={"n0": 1}))
    assert paused(decisions) == {} and "later" in waiting(decisions)


def test_a_due_job_preempts_a_job_with_slack_even_when_another_running_job_has_none() -> None:
    # Two GPUs, 1 h resumes. "tight" would be late if paused now (1.3 h left + 1 h resume > 1.8 h); "slack"
    # has a day. "due" (1.5 h, deadline in 1.75 h) must start now: the plan pauses "slack" for it and keeps
    # "tight", rather than judging "due" late because pausing every running job would make "tight" late.
    tight = running("tight", (("n0", 1),), hours=1.3, deadline_s=T0 + 1.8 * HOUR)
    slack = running("slack", (("n0", 1),), hours=5, deadline_s=T0 + 48 * HOUR)
    due = job("due", hours=1.5, deadline_s=T0 + 1.75 * HOUR, admitted=True)
    snap = replace(snapshot([tight, slack, due], [50] * 60, nodes={"n0": 2}), preempt_overhead_s=HOUR)
    decisions = PriceAwarePolicy().decide(snap)
    assert set(started(decisions)) == {"due"} and set(paused(decisions)) == {"slack"}


def test_a_newcomer_that_cannot_make_it_is_told_its_earliest_finish_at_admission() -> None:
    # One GPU held for 2 more hours by an unbroken job; a 1 h newcomer due in 90 min cannot make it.
    busy = running("busy", (("n0", 1),), hours=2, deadline_s=T0 + 5 * HOUR, preemptible=False)
    late = job("late", hours=1, deadline_s=T0 + 1.5 * HOUR)
    decisions = PriceAwarePolicy().decide(snapshot([busy, late], [50] * 8, nodes={"n0": 1}))
    assert dict(decisions.infeasible) == {
        "late": f"cannot finish before {utc_label(T0 + 1.5 * HOUR)}: earliest finish {utc_label(T0 + 3 * HOUR)}"}


def test_a_newcomer_is_not_promised_room_an_admitted_job_left_short_needs() -> None:
    # One GPU held for 1 more hour by an unbroken job. "kept", admitted earlier, needs 1 h by 1.75 h: the plan
    # finds it no room (it will be late), but it runs first, from 1 h. "new" (1 h by 2 h) would fit in that
    # very hour: admitting it would push "kept" later still, breaking a promise to keep a new one, so "new"
    # is told it cannot make it, with the finish the room after "kept" gives it.
    busy = running("busy", (("n0", 1),), hours=1, deadline_s=T0 + 5 * HOUR, preemptible=False)
    kept = Booking(job("kept", hours=1, admitted=True), HOUR, T0 + 1.75 * HOUR, True, 0.0)
    new = Booking(job("new", hours=1), HOUR, T0 + 2 * HOUR, False, 0.0)
    plan = reserve(outlook([50] * 8), T0, 1, None, [(busy, HOUR)], [kept, new], 0.0)
    assert plan.short == {"kept"}
    assert plan.infeasible == {"new": T0 + 3 * HOUR}


QUARTER = HOUR / 4


def _quarters(name: str, gpus: int, work_q: int, slack_q: int, admitted: bool) -> Booking:
    """A queued job of `work_q` quarter-hours due `work_q + slack_q` quarter-hours from T0, as a booking."""
    deadline_s = T0 + (work_q + slack_q) * QUARTER
    return Booking(job(name, gpus=gpus, hours=work_q / 4, deadline_s=deadline_s, admitted=admitted),
                   work_q * QUARTER, deadline_s, admitted, 0.0)


Spec = tuple[int, int, int]  # (GPUs, quarter-hours of work, quarter-hours of slack)


def _small_plan(gpus: int, admitted_specs: list[Spec], newcomer_specs: list[Spec]
                ) -> tuple[list[Booking], list[Booking], Reservation]:
    """Admitted jobs and newcomers (`Spec`s) on `gpus` GPUs (none wider than the cluster), and their plan
    over 8 flat hours from T0."""
    admitted = [_quarters(f"a{k}", min(g, gpus), w, s, True) for k, (g, w, s) in enumerate(admitted_specs)]
    newcomers = [_quarters(f"n{k}", min(g, gpus), w, s, False) for k, (g, w, s) in enumerate(newcomer_specs)]
    return admitted, newcomers, reserve(outlook([50] * 8), T0, gpus, None, [], [*admitted, *newcomers], 0.0)


def _admitted_now(booking: Booking) -> Booking:
    return booking._replace(job=replace(booking.job, admitted=True), admitted=True)


def test_a_newcomer_whose_promise_would_put_an_earlier_one_at_risk_is_not_promised() -> None:
    # Two GPUs. "wide" (both GPUs, 30 min by 1.5 h) takes the last half hour; "a" (30 min) and "b" (45 min),
    # both due at 1.25 h, fit before it, and "new" (30 min by 1.25 h) in the half hour "a" leaves free.
    # But the next decision plans every admitted job latest deadline first: "a" and "new" (tied) take the
    # hour before "wide", and "b" finds no room: admitting "new" would break the promise made to "b".
    admitted = [_quarters("a", 1, 2, 3, True), _quarters("b", 1, 3, 2, True),
                _quarters("wide", 2, 2, 4, True)]
    new = _quarters("new", 1, 2, 3, False)
    plan = reserve(outlook([50] * 8), T0, 2, None, [], [*admitted, new], 0.0)
    assert plan.short == set() and plan.puts_at_risk == {"new"} and "new" in plan.infeasible
    next_plan = reserve(outlook([50] * 8), T0, 2, None, [], [*admitted, _admitted_now(new)], 0.0)
    assert next_plan.short == {"b"}  # what a promise to "new" would have cost
    # The user is told why, and when the job may finish (it runs as soon as the promises leave room).
    jobs = [b.job for b in [*admitted, new]]
    decisions = PriceAwarePolicy().decide(snapshot(jobs, [50] * 8, nodes={"n0": 2}))
    assert dict(decisions.infeasible)["new"].startswith(
        f"cannot be promised to finish before {utc_label(new.deadline_s)} without putting an earlier "
        "promise at risk: earliest finish ")


@settings(max_examples=300, deadline=None)
@example(gpus=2, admitted_specs=[(1, 2, 3), (1, 3, 2), (2, 2, 4)], newcomer_specs=[(1, 2, 3)])
@example(gpus=3, admitted_specs=[],  # 13 newcomers: some turned away, by bisection
         newcomer_specs=[(1, 3, 5), (2, 4, 8), (1, 4, 5), (2, 3, 4), (2, 1, 4), (1, 4, 8), (2, 1, 2),
                         (2, 2, 1), (2, 3, 2), (2, 3, 2), (2, 1, 3), (2, 1, 6), (2, 2, 2)])
@given(gpus=st.integers(1, 3),
       admitted_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               min_size=1, max_size=4),
       newcomer_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               min_size=1, max_size=3))
def test_the_newcomers_a_plan_admits_leave_no_earlier_promise_short_when_planned_again(
        gpus: int, admitted_specs: list[tuple[int, int, int]],
        newcomer_specs: list[tuple[int, int, int]]) -> None:
    """A plan that keeps every admitted job is still kept when planned again with its newcomers admitted."""
    admitted, newcomers, plan = _small_plan(gpus, admitted_specs, newcomer_specs)
    if plan.short:
        return  # an admitted job is short already: which one may change with the order (nothing promised)
    accepted = [_admitted_now(b) for b in newcomers if b.job.job_id not in plan.infeasible]
    assert reserve(outlook([50] * 8), T0, gpus, None, [], [*admitted, *accepted], 0.0).short == set()


@settings(max_examples=200, deadline=None)
# Rescues are rare among queued jobs alone (the plan has tried each short job first already, and only one
# with no slack is due now alone): two found.
@example(gpus=2, admitted_specs=[(1, 3, 8), (1, 2, 0), (2, 5, 2), (2, 7, 0), (2, 6, 8)], newcomer_specs=[])
@example(gpus=2, admitted_specs=[(1, 3, 0), (1, 7, 1), (1, 5, 2), (2, 2, 3), (2, 6, 1)],
         newcomer_specs=[(1, 6, 8), (1, 3, 7)])
@given(gpus=st.integers(1, 3),
       admitted_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               min_size=1, max_size=5),
       newcomer_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               max_size=2))
def test_short_jobs_started_as_rescuable_leave_no_other_promise_short(
        gpus: int, admitted_specs: list[tuple[int, int, int]],
        newcomer_specs: list[tuple[int, int, int]]) -> None:
    """The short jobs a plan finds `rescuable`, started now, leave no job short that the plan did not."""
    admitted, newcomers, plan = _small_plan(gpus, admitted_specs, newcomer_specs)
    assert plan.rescuable <= plan.short
    if not plan.rescuable:
        return
    started_now = [(b.job, b.needed_s) for b in admitted if b.job.job_id in plan.rescuable]
    promised = [b for b in admitted if b.job.job_id not in plan.rescuable] + \
        [_admitted_now(b) for b in newcomers if b.job.job_id not in plan.infeasible]
    assert reserve(outlook([50] * 8), T0, gpus, None, started_now, promised, 0.0).short <= plan.short


def test_a_late_unbroken_job_is_counted_once_when_running_jobs_are_weighed_for_a_pause() -> None:
    # Five GPUs: one held by an unbroken job, two by running jobs with an hour of slack, two free now. "a"
    # (admitted) is booked in the second hour. "late", a non-preemptible newcomer that cannot make its
    # deadline, may start now on one free GPU. Both running jobs may then be paused: the second hour has
    # room for both to resume. (Counted twice, "late" took the other free GPU as well, and the second
    # hour had room for one.)
    fixed = running("fixed", (("n0", 1),), hours=4, deadline_s=T0 + 10 * HOUR, preemptible=False)
    first, second = (running(name, (("n0", 1),), hours=1, deadline_s=T0 + 2 * HOUR) for name in ("r1", "r2"))
    a = Booking(job("a", hours=1, admitted=True), HOUR, T0 + 2 * HOUR, True, 0.0)
    late_job = job("late", hours=3, deadline_s=T0 + HOUR, preemptible=False)
    late = Booking(late_job, 3 * HOUR, T0 + HOUR, False)
    plan = reserve(outlook([50] * 8), T0, 5, None, [(fixed, 4 * HOUR)], [a, late], 0.0,
                   unbroken=[(late_job, 3 * HOUR)],
                   running=[Booking(r, HOUR, T0 + 2 * HOUR, True, 0.0) for r in (first, second)])
    assert "late" in plan.infeasible and plan.unbroken_now == {"late"}
    assert plan.pausable == {"r1", "r2"}


def test_the_plan_finds_room_for_every_admitted_job_when_an_order_exists() -> None:
    # Two GPUs, everything due within 5.5 h. Latest deadline first, "c" (3 h, due 5 h) and "a" take the late
    # hours, and "b" or "d" (both due 3.5 h) find no room; placed first, the ones left short fit, and so do
    # the others. A job the plan leaves short is treated as late, so the order is searched, not given up.
    specs = {"a": (2.5, 5.5), "b": (1.5, 3.5), "c": (3.0, 5.0), "d": (2.5, 3.5)}
    bookings = [Booking(job(name, hours=hours, admitted=True), hours * HOUR, T0 + due_h * HOUR, True, 0.0)
                for name, (hours, due_h) in specs.items()]
    plan = reserve(outlook([50] * 8), T0, 2, None, [], bookings, 0.0)
    assert plan.short == set()
    assert all(plan.latest_start_s[b.job.job_id] + b.needed_s <= b.deadline_s for b in bookings)


def test_one_plan_places_a_bounded_number_of_bookings_however_many_jobs_are_short(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,500 admitted 1-hour jobs due within 3 h on 8 GPUs: nearly all are short, and every further round plans
    # all of them again (a rescue check too). Unbounded that was 95,000 bookings placed (2.5 s here; a queue
    # just under `EXACT_JOBS` took seconds per decision). Past the budget only the rounds a plan cannot do
    # without are made, and a short job due now that is not checked is not rescuable: it may not preempt.
    placed: list[str] = []
    place = reservation._place
    monkeypatch.setattr(reservation, "_place", lambda book, booking, *rest: (
        placed.append(booking.job.job_id), place(book, booking, *rest))[1])
    bookings = [Booking(job(f"j{k:04d}", hours=1, admitted=True), HOUR, T0 + HOUR + (k % 9) * QUARTER, True,
                        0.0) for k in range(1500)]
    plan = reserve(outlook([50] * 8), T0, 8, None, [], bookings, 0.0)
    assert len(placed) <= reservation.PLAN_BUDGET_PLACEMENTS + 4 * len(bookings)
    assert 1400 < len(plan.short) < 1500
    # 167 of them are due now (each must start now to finish alone). Unbounded, the plan checked the first
    # `RESCUE_CHECKS` for a rescue, refused them all, and let the other 159 preempt unchecked. Here the budget
    # stops the checks: none is rescuable, so none of them takes room from a promise.
    assert sum(b.deadline_s == T0 + HOUR for b in bookings) == 167 and plan.rescuable == set()


@settings(max_examples=150, deadline=None)
@example(gpus=2, budget=0, admitted_specs=[(1, 2, 3), (1, 3, 2), (2, 2, 4)], newcomer_specs=[(1, 2, 3)])
@given(gpus=st.integers(1, 3), budget=st.sampled_from([0, 10, 30]),
       admitted_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               min_size=1, max_size=4),
       newcomer_specs=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 8), st.integers(0, 8)),
                               min_size=1, max_size=3))
def test_past_the_work_budget_the_newcomers_admitted_still_leave_no_earlier_promise_short(
        gpus: int, budget: int, admitted_specs: list[tuple[int, int, int]],
        newcomer_specs: list[tuple[int, int, int]]) -> None:
    """Past `PLAN_BUDGET_PLACEMENTS` (from the start, or crossed midway) a plan makes no further round and
    checks its newcomers no harder: those it admits are still kept by the next decision's plan."""
    with mock.patch.object(reservation, "PLAN_BUDGET_PLACEMENTS", budget):
        admitted, newcomers, plan = _small_plan(gpus, admitted_specs, newcomer_specs)
    if plan.short:
        return  # an admitted job is short already: which one may change with the order (nothing promised)
    accepted = [_admitted_now(b) for b in newcomers if b.job.job_id not in plan.infeasible]
    assert reserve(outlook([50] * 8), T0, gpus, None, [], [*admitted, *accepted], 0.0).short == set()


def test_a_job_the_plan_leaves_short_preempts_at_its_latest_start_and_still_makes_its_deadline() -> None:
    # Three GPUs, all busy. "q1" (3 h, due in 3.25 h) finds no room in the plan, but can still make it if it
    # starts within 15 min: rather than wait as a late job for room the plan promised to others, it pauses
    # "r1", which has 4 h of slack, as "q0" (2 h, due in 4 h) still finds room beside it (a rescue that
    # would leave another promise short is refused: the test below). It does so at its latest start, asked
    # for, not at once: paused later, a job has less left to run (see SHORT_JOB_STARTED_AT_THE_HOURS_START
    # in the invariants).
    def jobs(elapsed_s: float) -> list:
        return [running("r0", (("n0", 1),), hours=4 - elapsed_s / HOUR, deadline_s=T0 + 6 * HOUR),
                running("r1", (("n0", 1),), hours=3 - elapsed_s / HOUR, deadline_s=T0 + 7 * HOUR),
                running("r2", (("n0", 1),), hours=4 - elapsed_s / HOUR, deadline_s=T0 + 4.5 * HOUR),
                job("q0", hours=2, deadline_s=T0 + 4 * HOUR, admitted=True),
                job("q1", hours=3, deadline_s=T0 + 3.25 * HOUR, admitted=True)]

    prices = [10, 50, 50, 10, 10, 100] + [50] * 24
    decisions = PriceAwarePolicy().decide(snapshot(jobs(0.0), prices, nodes={"n0": 3}))
    assert started(decisions) == {} and paused(decisions) == {}
    start_by_s = T0 + 0.25 * HOUR
    assert decisions.decide_again_s == start_by_s
    assert detail(decisions, "q1").endswith(f"latest safe start {utc_label(T0 + 0.25 * HOUR)}")
    # "q0" may wait two hours: it is told so, by a start that still meets its deadline.
    assert detail(decisions, "q0").endswith(f"latest safe start {utc_label(T0 + 2 * HOUR)}")

    then = start_by_s + 1.0  # the live scheduler wakes a little after the time asked: still due, not late
    in_the_hour = replace(snapshot(jobs(then - T0), nodes={"n0": 3}, now_s=then), prices=outlook(prices, T0))
    decisions = PriceAwarePolicy().decide(in_the_hour)
    assert "q1" in started(decisions) and "r1" in paused(decisions)
    # Asked ten minutes after its latest start, it is late whatever happens: it takes nobody's GPUs.
    late = T0 + 0.25 * HOUR + 600.0
    in_the_hour = replace(snapshot(jobs(late - T0), nodes={"n0": 3}, now_s=late), prices=outlook(prices, T0))
    decisions = PriceAwarePolicy().decide(in_the_hour)
    assert "q1" not in started(decisions) and "r1" not in paused(decisions)
    assert "r2" not in paused(decisions)  # due at 4.5 h with 3.75 h left: no slack to give


def test_a_job_the_plan_leaves_short_takes_no_room_whose_loss_would_make_another_promise_late() -> None:
    # One node of two GPUs, both busy for 2 h. The gang "g" (both GPUs, 3 h, due in 3 h) finds no room in the
    # plan, which books it after "q" (3 h, due in 5 h): so "r1" (2 h left, due in 4.5 h) may be paused now
    # and resumed in time. Started now for its own deadline, "g" would hold both GPUs for 3 h: "r1" and "q"
    # late, a job already late by the plan making promised ones late too (in the matrix, an 8-GPU job paused
    # eight 1-GPU jobs for 16 h). It waits in the room the promises leave. (The test above has a rescue that
    # keeps every promise: "q1" pauses "r1".)
    jobs = [running("r1", (("n0", 1),), hours=2, deadline_s=T0 + 4.5 * HOUR),
            running("r2", (("n0", 1),), hours=2, deadline_s=T0 + 8 * HOUR),
            job("g", gpus=2, hours=3, deadline_s=T0 + 3 * HOUR, admitted=True, gpus_per_worker=2),
            job("q", hours=3, deadline_s=T0 + 5 * HOUR, admitted=True)]
    snap = snapshot(jobs, [50] * 30, nodes={"n0": 2})
    decisions = PriceAwarePolicy().decide(snap)
    assert started(decisions) == {} and paused(decisions) == {}
    assert "g" in waiting(decisions)


def _pause_decision(overhead_s: float, now_price: float = 50.0, pauses_today: int = 0,
                    margin: float = 1.0) -> bool:
    train = running("train", (("n0", 1),), hours=3, deadline_s=T0 + 8 * HOUR, pauses_today=pauses_today)
    prices = [now_price, 100, 100, 10, 10, 10, 50, 50, 50, 50]
    snap = replace(snapshot([train], prices), preempt_overhead_s=overhead_s)
    return "train" in paused(PriceAwarePolicy(pause_margin=margin).decide(snap))


def test_a_pause_must_save_more_than_its_resume_costs() -> None:
    # 3 h to run. Kept: now and two 10/MWh hours. Paused: the three 10/MWh hours plus the resume overhead
    # as extra run time, which must also beat `pause_margin` x the overhead's energy at the plan's mean price.
    assert _pause_decision(0.0)                                # a free resume: any saving pays
    assert _pause_decision(600.0)                              # 10 min of resume: saves 31.7 h x price
    assert not _pause_decision(3600.0, now_price=50)           # 1 h more at 50 costs more than it saves
    assert _pause_decision(3600.0, now_price=200)              # saves 140 h x price, twice the resume: pays
    assert not _pause_decision(3600.0, now_price=200, margin=2.0)  # ... but not three times
    assert not _pause_decision(float("inf"), now_price=10**6)  # a resume that never ends: never


def test_a_pause_for_price_leaves_its_resume_an_interval_to_slip() -> None:
    # "train" (3 h) runs at 100/MWh; the next three hours cost 10. With its deadline at T0+5h, paused now it
    # could resume as late as T0+2h, an hour after the cheap hours begin: it is paused. With its deadline at
    # T0+4h its one resume is at T0+1h, and one slipped hour (a newcomer or a gang that takes the room) makes
    # it late: it runs on through the dear hour. Without the guard it was paused.
    def paused_for_price(deadline_h: float, guard: float = 1.0) -> bool:
        train = running("train", (("n0", 1),), hours=3, deadline_s=T0 + deadline_h * HOUR)
        snap = snapshot([train], [100, 10, 10, 10, 100, 100, 100, 100])
        return "train" in paused(PriceAwarePolicy(pause_guard_intervals=guard).decide(snap))

    assert paused_for_price(5.0)
    assert not paused_for_price(4.0)
    assert paused_for_price(4.0, guard=0.0)
    assert PriceAwarePolicy().pause_guard_intervals == 1.0


def test_a_job_paused_max_pauses_per_day_is_not_paused_again_that_day() -> None:
    assert _pause_decision(0.0, pauses_today=2)
    assert not _pause_decision(0.0, pauses_today=3)
    assert PriceAwarePolicy().max_pauses_per_day == 3


# -- properties over random traces ---------------------------------------------------------------------------


def _first_starts_and_latest(recording: Recording) -> tuple[dict[str, float], dict[str, float]]:
    """Each job's first start, and the last latest safe start it was told while waiting before that."""
    first: dict[str, float] = {}
    promised: dict[str, float] = {}
    for snap, decisions in recording.calls:
        for start in decisions.starts:
            first.setdefault(start.job_id, snap.now_s)
        for wait in decisions.waits:
            if wait.job_id not in first and wait.latest_safe_start_s is not None:
                promised[wait.job_id] = wait.latest_safe_start_s
    return first, promised


def _held_past_their_promise(scenario: Scenario) -> dict[str, str]:
    """Jobs admitted as feasible that started after the last latest safe start they were told, by how much.

    With an exact forecast: that promise is what users read in `factory job` while the job waits.
    """
    outcome, recording = scenario.run("price-aware", forecast_hours=scenario.days * 24 + 24)
    first, promised = _first_starts_and_latest(recording)
    infeasible = {str(scenario.trace.job_id[i]) for i in np.flatnonzero(outcome.infeasible)}
    return {job_id: f"{(first.get(job_id, np.inf) - latest_s) / 60:.1f} min after"
            for job_id, latest_s in promised.items()
            if job_id not in infeasible and first.get(job_id, np.inf) > latest_s + 1e-3}


@EXAMPLES
@given(scenario=scenarios(one_node=True, overhead=False, quotas=False))
def test_no_admitted_job_starts_after_its_latest_safe_start(scenario: Scenario) -> None:
    held_past = _held_past_their_promise(scenario)
    assert not held_past, held_past


def test_a_job_booked_after_a_run_that_is_paused_instead_still_starts_by_its_latest_safe_start() -> None:
    # 5 GPUs. At 12:00 (a dear hour) "job-1" (all 5, unbroken, 3.5 h) is booked from 12:45, after the run of
    # "job-2" ends at 12:39. But "job-2" is paused for the price, so no run ends then: the policy must ask
    # to decide again at 12:45 (found by hypothesis: it started at 13:00, 15 min after its promise).
    rows = [(0, 8640, 5, 86400, False), (13020, 12660, 5, 50640, False), (20280, 12240, 5, 48960, True),
            (0, 19860, 5, 198600, False)]
    prices = days_at_zero_but(HOUR, {10: 1.0, 11: 1.0, 13: 1.0})
    scenario = scenario_of(Cluster({"node-0": 5}), job_trace(rows), prices, days=2)
    assert _held_past_their_promise(scenario) == {}


def test_a_job_with_one_pause_left_takes_the_cheapest_plan_that_needs_no_more() -> None:
    # 3 h left, 1 pause left today. The three 10/MWh hours lie apart (two more pauses after this one), so
    # paused it runs them in one unbroken block, 10 + 50 + 10, which still beats staying on at 100/MWh.
    train = running("train", (("n0", 1),), hours=3, deadline_s=T0 + 10 * HOUR, pauses_today=2)
    prices = [100, 100, 100, 10, 50, 10, 50, 10, 100, 100]
    decisions = PriceAwarePolicy().decide(snapshot([train], prices))
    assert "train" in paused(decisions)
    # With no pause left, it runs on.
    assert paused(PriceAwarePolicy().decide(snapshot([replace(train, pauses_today=3)], prices))) == {}


def test_a_plan_in_fewer_runs_covers_the_work_in_at_most_that_many_runs() -> None:
    from factory.scheduling.plan import Planner
    from factory.scheduling.runs import count_runs
    from tests.unit.test_scheduling_policies import outlook

    prices = [30, 10, 40, 10, 40, 10, 60, 10, 40, 10, 90, 90]
    planner = Planner(outlook(prices, T0), T0, 1, None)
    train = job("train", hours=5)
    scattered = planner.cheapest(train, 5 * HOUR, T0 + 12 * HOUR)
    assert count_runs(scattered.intervals) == 5
    for runs in (1, 2, 3):
        plan = planner.within_runs(train, scattered, 5 * HOUR, T0 + 12 * HOUR, runs)
        assert plan is not None and plan.covered and count_runs(plan.intervals) <= runs
        assert float(plan.seconds.sum()) == 5 * HOUR and plan.cost_index >= scattered.cost_index
        assert int(plan.intervals[-1]) < 10  # never into the 90/MWh hours


def test_no_pause_for_price_adds_a_resume_while_a_job_must_start_now() -> None:
    # 10-minute resumes. Alone, "train" is paused through the dear hours (see the resume-cost test). With a
    # job due now in the plan, a pause would add its resume to a crowded plan: it runs on.
    train = running("train", (("n0", 1),), hours=3, deadline_s=T0 + 8 * HOUR)
    prices = [200, 100, 100, 10, 10, 10, 50, 50, 50, 50]
    alone = replace(snapshot([train], prices, nodes={"n0": 2}), preempt_overhead_s=600.0)
    assert "train" in paused(PriceAwarePolicy().decide(alone))
    due = job("due", hours=1, deadline_s=T0 + HOUR, admitted=True)
    crowded = replace(alone, jobs=[train, due])
    decisions = PriceAwarePolicy().decide(crowded)
    assert paused(decisions) == {} and set(started(decisions)) == {"due"}


def test_a_queued_job_waits_for_one_cheap_run_when_resumes_would_eat_the_scattered_hours() -> None:
    # 3 h of work due in 10 h; the three 10/MWh hours lie apart. Free to pause, it starts now and runs them
    # in three runs. With 2 h resumes, started now it would be paused only where that pays, so it would run
    # on through the dear hours: it waits for the cheapest unbroken run instead (10 + 30 + 30, from 4 h).
    train = job("train", hours=3, deadline_s=T0 + 10 * HOUR)
    prices = [10, 100, 10, 100, 10, 30, 30, 30, 100, 100, 100, 100]
    free = snapshot([train], prices)
    assert set(started(PriceAwarePolicy().decide(free))) == {"train"}
    costly = replace(free, preempt_overhead_s=2 * HOUR)
    decisions = PriceAwarePolicy().decide(costly)
    assert started(decisions) == {} and waiting(decisions) == {"train": WaitReason.PRICE}
    assert detail(decisions, "train").startswith(f"cheap window at {utc_label(T0 + 4 * HOUR)}")


def _mid_hour_decision(now_min: int, gpus: int, running_jobs: list[tuple[float, float]],
                       newcomers: list[tuple[float, float]]) -> tuple[float, Decisions]:
    """A decision `now_min` minutes into an hour of flat prices: 1-GPU running jobs (minutes left, minutes
    of slack) on GPUs of their own, and newcomers (minutes of work, minutes of slack) submitted now."""
    now_s = T0 + now_min * 60
    jobs = [running(f"run-{k}", ((f"n{k}", 1),), hours=left / 60, submit_s=now_s - 600,
                    deadline_s=now_s + (left + slack) * 60) for k, (left, slack) in enumerate(running_jobs)]
    jobs += [job(f"new-{k}", hours=work / 60, submit_s=now_s, deadline_s=now_s + (work + slack) * 60)
             for k, (work, slack) in enumerate(newcomers)]
    nodes = {f"n{k}": 1 for k in range(gpus)}
    return now_s, PriceAwarePolicy().decide(Snapshot(now_s, nodes, jobs, prices=outlook([50.0] * 48, T0)))


def _admitted_but_waiting_past_their_start(now_s: float, decisions: Decisions) -> dict[str, float]:
    """Newcomers admitted as feasible whose latest safe start is now, yet left waiting."""
    infeasible = {job_id for job_id, _ in decisions.infeasible}
    return {wait.job_id: wait.latest_safe_start_s for wait in decisions.waits
            if wait.job_id.startswith("new-") and wait.job_id not in infeasible
            and wait.latest_safe_start_s is not None and wait.latest_safe_start_s <= now_s + 1.0}


def test_a_newcomer_due_now_is_promised_the_room_of_the_one_running_job_a_pause_frees() -> None:
    # 2 GPUs, 22 minutes into the hour, both busy for 3 more hours with 37 minutes of slack; "new-0" needs 4
    # minutes within 8. A plan with the running jobs movable found it room now by pausing both until later
    # this hour; asked one by one whether each may be paused, each found the other's GPU free to restart on
    # at once, so neither could be paused, and "new-0" was told at admission that it could not make it. The
    # first one asked is now held, and the second may be paused: it resumes when "new-0" ends (a decision),
    # well within its slack. (Found by hypothesis; the property test below checks the promise is kept.)
    now_s, decisions = _mid_hour_decision(22, 2, [(176, 37), (176, 37)], [(4, 4), (4, 94)])
    assert _admitted_but_waiting_past_their_start(now_s, decisions) == {}
    assert decisions.infeasible == ()
    assert started(decisions) == {"new-0": (("n1", 1),)} and set(paused(decisions)) == {"run-1"}


def test_a_plan_that_moved_more_running_jobs_than_a_due_job_needs_pauses_the_one_it_needs() -> None:
    # Three GPUs at the top of the hour, each running a job with 30 min left and 54 min to its deadline:
    # paused now, each would be resumed a quarter past. "q" (7.5 min, due in 10) must start now, and one
    # pause makes its room. The plan with running jobs movable moved all three; asked one by one whether
    # each may be paused, each found room to restart at once (the others' GPUs, free in that plan) and none
    # was, so all three were held and "q", promised a minute before, was left short (PJM 2013 rand24's
    # pai-0860, promised at 21:58 and short at 22:00).
    movers = [running(f"r{i}", (("n0", 1),), hours=0.5, deadline_s=T0 + 0.9 * HOUR) for i in range(3)]
    due = Booking(job("q", hours=7.5 / 60, deadline_s=T0 + 600, admitted=True), 450.0, T0 + 600, True, 0.0)
    plan = reserve(outlook([50] * 4), T0, 3, None, [], [due], 0.0,
                   running=[Booking(r, 0.5 * HOUR, T0 + 0.9 * HOUR, True, 0.0) for r in movers])
    assert plan.short == set() and plan.urgent == {"q"}
    assert len(plan.pausable) == 1  # the one "q" preempts; the other two keep running
    decisions = PriceAwarePolicy().decide(snapshot([*movers, due.job], [50] * 4, nodes={"n0": 3}))
    assert set(started(decisions)) == {"q"} and set(paused(decisions)) == plan.pausable


@pytest.mark.parametrize(("resume_h", "may_start_now"),
                         [(0.0, True), (1.0, True), (1.5, False), (2.0, False)])
def test_a_job_started_before_its_reservation_must_have_room_to_resume_after_a_pause(
        resume_h: float, may_start_now: bool) -> None:
    # One GPU. "d" (1 h, due at 2:15) is booked from 1:15, "f" (3 h, due at 5:15) from 2:15: the GPU is idle
    # until 1:15, and a cheap hour now may start "f" early. At 1:15 "d" pauses it, and it resumes with 1:45
    # left plus its resume overhead, in the 3 h before its deadline: with a 1.5 h overhead that is 3:15, and
    # a promise (the plan's "f" from 2:15) breaks. With a 2 h overhead it has less left than a resume: it is
    # never paused, and runs on into the hour promised to "d". With no overhead an early start only
    # finishes work sooner. (In the matrix, a flexible job started early and paused for a due one made PJM
    # 2015 rand22's pai-0193 and pai-0334 late, with 1 h resumes.)
    f = Booking(job("f", hours=3, deadline_s=T0 + 5.25 * HOUR, admitted=True), 3 * HOUR, T0 + 5.25 * HOUR,
                True, resume_h * HOUR)
    d = Booking(job("d", hours=1, deadline_s=T0 + 2.25 * HOUR, admitted=True), HOUR, T0 + 2.25 * HOUR, True,
                resume_h * HOUR)
    plan = reserve(outlook([50] * 8), T0, 1, None, [], [f, d], 0.0)
    assert plan.latest_start_s == {"f": T0 + 2.25 * HOUR, "d": T0 + 1.25 * HOUR} and plan.due == set()
    assert plan.early_starts is not None
    assert plan.early_starts.may_start("f") == may_start_now
    # The answers hold together: where "f" starts early, "d" finds no room now (one GPU); else "d", started
    # now, ends before "f" needs the GPU.
    assert plan.early_starts.may_start("d") == (resume_h != 1.0)
    assert plan.early_starts.refused == ({"f"} if resume_h == 1.5 else set())  # (else: too short to pause)
    assert plan.early_starts.crowded == ({"d"} if resume_h == 1.0 else set())


@settings(max_examples=300, deadline=None)
@example(now_min=32, gpus=2, running_jobs=[(83, 17), (83, 17)], newcomers=[(44, 104), (120, 111), (9, 68)])
@example(now_min=32, gpus=2, running_jobs=[(180, 13), (180, 13)], newcomers=[(10, 69), (68, 108)])
@given(now_min=st.integers(0, 59), gpus=st.integers(1, 3),
       running_jobs=st.lists(st.tuples(st.integers(5, 180), st.integers(0, 240)), min_size=1, max_size=3),
       newcomers=st.lists(st.tuples(st.integers(3, 120), st.integers(0, 120)), min_size=1, max_size=3))
def test_a_newcomer_admitted_as_feasible_starts_by_its_latest_safe_start(
        now_min: int, gpus: int, running_jobs: list[tuple[float, float]],
        newcomers: list[tuple[float, float]]) -> None:
    """At admission, a newcomer whose latest safe start is now runs now, or was told it cannot make it."""
    now_s, decisions = _mid_hour_decision(now_min, gpus, running_jobs[:gpus], newcomers)
    assert _admitted_but_waiting_past_their_start(now_s, decisions) == {}


def test_a_short_job_is_due_alone_only_near_its_latest_start_or_in_the_intervals_last_slice() -> None:
    """`due_alone`, the one rule for which short jobs are checked for a rescue and made due: at its latest
    start alone (up to `SHORT_START_LAG_S` after it: the decision asked for may come late), or in the
    interval's last slice (no decision can be asked for there); late before that, not yet due after."""
    hour_end_s = T0 + HOUR
    due = functools.partial(due_alone, now_s=T0 + 600, interval_start_s=T0, interval_end_s=hour_end_s)
    assert due(T0 + 600) and due(T0 + 600 - SHORT_START_LAG_S)
    assert not due(T0 + 600 - SHORT_START_LAG_S - 1)  # late: it waits as late jobs do
    assert not due(T0 + 1200)  # later in the interval: a decision is asked for then
    assert due(hour_end_s - 0.5) and not due(hour_end_s)  # the last slice; the next interval


def test_a_job_without_room_to_resume_after_an_early_start_waits_for_its_reservation_and_says_why() -> None:
    # One GPU, 2 h resumes. "j1" (2 h, due at 4:00) waits for the cheap hours at 1:00-3:00, where the
    # reservation plan books it, and "j0" (3 h, due at 6:00) from 3:00. The price plan would run "j0" now:
    # "j1" would pause it at 1:00, and it would resume at 3:00 with 2 h left plus a 2 h resume, ending at
    # 7:00, past its deadline. It waits for its reservation instead, told why (found by a seeded search).
    # (Planned one by one: planned together, with each resume charged, "j0" is never planned to start now.)
    jobs = [job("j0", hours=3, deadline_s=T0 + 6 * HOUR, admitted=True),
            job("j1", hours=2, deadline_s=T0 + 4 * HOUR, admitted=True)]
    snap = replace(snapshot(jobs, [50, 5, -20, 10, 50, 50, -20, -20], nodes={"n0": 1}),
                   preempt_overhead_s=2 * HOUR)
    decisions = PriceAwarePolicy(joint_margin=None).decide(snap)
    assert started(decisions) == {}
    assert waiting(decisions) == {"j0": WaitReason.CAPACITY, "j1": WaitReason.PRICE}
    assert detail(decisions, "j0").startswith("run now, it could be paused for a job due before its "
                                              "reservation, and its resume would find no room")
    assert detail(decisions, "j0").endswith(f"latest safe start {utc_label(T0 + 3 * HOUR)}")


def test_a_job_too_short_to_pause_by_the_time_its_room_is_promised_does_not_start_early() -> None:
    # One GPU, 1 h resumes, a cheap start. "d" (1 h, due at 3:00) is booked from 2:00, "f" (2.5 h, due at
    # 7:00) from 4:30. Started now, "f" would have 0.5 h left at 2:00: less than a resume, so it is never
    # paused, runs on into the hour promised to "d", and "d" ends late. It waits instead (a reviewer's case).
    jobs = [job("f", hours=2.5, deadline_s=T0 + 7 * HOUR, admitted=True),
            job("d", hours=1, deadline_s=T0 + 3 * HOUR, admitted=True)]
    snap = replace(snapshot(jobs, [10, 10, 5, 100, 100, 100, 100, 50], nodes={"n0": 1}),
                   preempt_overhead_s=HOUR)
    # Planned together, each resume charged, "d" runs now and "f" unbroken after it, from 1:00, before the
    # dear hours; planned one by one (below), "d" waits for the cheapest hour, and "f" with it.
    assert started(PriceAwarePolicy().decide(snap)) == {"d": (("n0", 1),)}
    decisions = PriceAwarePolicy(joint_margin=None).decide(snap)
    assert started(decisions) == {}
    assert detail(decisions, "f").startswith("an unbroken run from now would take GPUs promised")
