"""Scheduling policies on hand-made snapshots: what each one starts, pauses or holds, and why."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from factory.errors import FactoryError
from factory.prices.series import utc_label
from factory.scheduling import FifoPolicy, PriceAwarePolicy, PriorityPolicy
from factory.scheduling.model import Decisions, JobView, Phase, PriceOutlook, Snapshot, WaitReason

HOUR = 3600.0
T0 = 1_700_002_800.0  # 2023-11-14 23:00 UTC, on the hour
POLICIES = [FifoPolicy(), PriorityPolicy(), PriceAwarePolicy()]
POLICY_IDS = [policy.name for policy in POLICIES]


def outlook(prices: list[float], start_s: float = T0) -> PriceOutlook:
    values = np.asarray(prices, dtype=float)
    return PriceOutlook(start_s + HOUR * np.arange(len(values)), HOUR, values, np.ones(len(values), bool))


def job(job_id: str, gpus: int = 1, hours: float = 1.0, **fields: object) -> JobView:
    fields.setdefault("submit_s", T0)
    fields.setdefault("power_w", 500.0)
    return JobView(job_id, gpus, remaining_s=hours * HOUR, **fields)  # type: ignore[arg-type]


def running(job_id: str, placement: tuple[tuple[str, int], ...], hours: float = 1.0,
            **fields: object) -> JobView:
    fields.setdefault("admitted", True)
    return job(job_id, sum(g for _, g in placement), hours, phase=Phase.RUNNING, placement=placement,
               **fields)


def snapshot(jobs: list[JobView], prices: list[float] | None = None, *, now_s: float = T0,
             nodes: dict[str, int] | None = None, **fields: object) -> Snapshot:
    # The outlook starts at now (the tests' decisions are on the hour).
    return Snapshot(now_s, nodes or {"n0": 8}, jobs,
                    prices=None if prices is None else outlook(prices, now_s), **fields)  # type: ignore[arg-type]


def started(decisions: Decisions) -> dict[str, tuple[tuple[str, int], ...]]:
    return {start.job_id: start.placement for start in decisions.starts}


def paused(decisions: Decisions) -> dict[str, WaitReason]:
    return {pause.job_id: pause.reason for pause in decisions.pauses}


def waiting(decisions: Decisions) -> dict[str, WaitReason]:
    return {wait.job_id: wait.reason for wait in decisions.waits}


def detail(decisions: Decisions, job_id: str) -> str:
    return next(w.detail for w in (*decisions.waits, *decisions.pauses) if w.job_id == job_id)


# -- price-aware: when to run --------------------------------------------------------------------


def test_a_cheap_window_ahead_holds_the_job_under_price_aware_but_not_under_fifo() -> None:
    snap = snapshot([job("train", hours=2, deadline_s=T0 + 6 * HOUR)], prices=[50, 50, 10, 10, 50, 50])

    decisions = PriceAwarePolicy().decide(snap)
    assert started(decisions) == {}
    assert waiting(decisions) == {"train": WaitReason.PRICE}
    assert utc_label(T0 + 2 * HOUR) in detail(decisions, "train")

    assert started(FifoPolicy().decide(snap)) == {"train": (("n0", 1),)}


def test_a_deadline_that_forbids_waiting_starts_the_job_now_despite_a_cheaper_window_after_it() -> None:
    # The hours at 10 begin only after the deadline (T0 + 3 h): the job must run 2 of the 3 hours before.
    snap = snapshot([job("train", hours=2, deadline_s=T0 + 3 * HOUR)], prices=[50, 50, 50, 10, 10, 50])
    decisions = PriceAwarePolicy().decide(snap)
    assert started(decisions) == {"train": (("n0", 1),)}
    assert decisions.infeasible == ()


def test_a_job_that_must_run_now_to_be_in_time_starts_even_if_now_is_the_dearest_hour() -> None:
    snap = snapshot([job("train", hours=3, deadline_s=T0 + 3 * HOUR)], prices=[90, 10, 10, 10, 10, 10])
    decisions = PriceAwarePolicy().decide(snap)
    assert started(decisions) == {"train": (("n0", 1),)}


def test_negative_prices_are_used_first() -> None:
    # Two hours to run: the two negative hours, the first of them an hour from now.
    snap = snapshot([job("train", hours=2, deadline_s=T0 + 6 * HOUR)], prices=[50, -5, 50, 10, -1, 50])
    decisions = PriceAwarePolicy().decide(snap)
    assert waiting(decisions) == {"train": WaitReason.PRICE}
    assert utc_label(T0 + HOUR) in detail(decisions, "train")
    # An hour later the negative hour is now: it runs.
    later = snapshot([job("train", hours=2, deadline_s=T0 + 6 * HOUR, admitted=True)],
                     prices=[-5, 50, 10, -1, 50], now_s=T0 + HOUR)
    assert started(PriceAwarePolicy().decide(later)) == {"train": (("n0", 1),)}


def test_a_negative_hour_beats_a_zero_hour() -> None:
    snap = snapshot([job("train", hours=1, deadline_s=T0 + 4 * HOUR)], prices=[0, 0, -1, 0])
    decisions = PriceAwarePolicy().decide(snap)
    assert utc_label(T0 + 2 * HOUR) in detail(decisions, "train")


EXPENSIVE_NEXT = [50, 100, 100, 10, 10, 50]  # now 50, then two dear hours, then two cheap ones


def test_a_running_preemptible_job_is_paused_through_expensive_hours_when_pausing_is_free() -> None:
    snap = snapshot([running("train", (("n0", 1),), hours=2, deadline_s=T0 + 6 * HOUR)], EXPENSIVE_NEXT)
    decisions = PriceAwarePolicy().decide(snap)
    assert paused(decisions) == {"train": WaitReason.PRICE}
    assert utc_label(T0 + 3 * HOUR) in detail(decisions, "train")


@pytest.mark.parametrize(("started_s", "pauses"), [(T0 + 600, False), (T0, False), (T0 - 0.5, False),
                                                   (T0 - 600, True), (None, True)])
def test_a_job_started_in_the_current_price_interval_is_not_paused_for_price_in_it(
        started_s: float | None, pauses: bool) -> None:
    # The same job as above, 20 minutes into the hour: started in this hour, it ran on these very prices
    # (another job's place in the plan, not the price, would stop it), as in the last second before it (a
    # decision then plans on this hour); started in an earlier hour, or when the start is unknown, it is
    # paused through the dear hours.
    now_s = T0 + 1200
    train = running("train", (("n0", 1),), hours=2, deadline_s=T0 + 6 * HOUR, started_s=started_s)
    prices = PriceOutlook(T0 + HOUR * np.arange(6), HOUR, np.array(EXPENSIVE_NEXT, float), np.ones(6, bool))
    decisions = PriceAwarePolicy().decide(Snapshot(now_s, {"n0": 8}, [train], prices=prices))
    assert paused(decisions) == ({"train": WaitReason.PRICE} if pauses else {})


def test_a_running_job_keeps_running_when_the_resume_overhead_makes_pausing_dearer() -> None:
    # Paused, it needs 3 h at 10 + 10 + 50 = 70; kept, 2 h at 50 (now) + 10 = 60.
    snap = snapshot([running("train", (("n0", 1),), hours=2, deadline_s=T0 + 6 * HOUR)], EXPENSIVE_NEXT,
                    preempt_overhead_s=HOUR)
    decisions = PriceAwarePolicy().decide(snap)
    assert decisions.pauses == () and decisions.starts == () and decisions.waits == ()


def test_a_small_resume_overhead_still_pays_for_pausing() -> None:
    # Paused: 2.25 h at 10 + 10 + 0.25 x 50 = 32.5, kept: 60.
    snap = snapshot([running("train", (("n0", 1),), hours=2, deadline_s=T0 + 6 * HOUR)], EXPENSIVE_NEXT,
                    preempt_overhead_s=HOUR / 4)
    assert paused(PriceAwarePolicy().decide(snap)) == {"train": WaitReason.PRICE}


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_non_preemptible_running_job_is_never_paused(policy) -> None:
    fixed = running("fixed", (("n0", 4),), hours=2, deadline_s=T0 + 6 * HOUR, preemptible=False)
    # A dear hour, an urgent higher-priority job that needs its GPUs, a power budget it exceeds alone.
    urgent = job("urgent", gpus=8, hours=1, deadline_s=T0 + HOUR, priority=5, submit_s=T0 - 10 * HOUR)
    snap = snapshot([fixed, urgent], EXPENSIVE_NEXT, power_budget_w=1000.0)
    decisions = policy.decide(snap)
    assert "fixed" not in paused(decisions)
    assert "urgent" not in started(decisions)


# -- dispatch constraints --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_power_budget_starts_only_the_jobs_it_can_feed_and_backfills_a_small_one(policy) -> None:
    # Each 4-GPU job draws 2 kW: both fit on the 8 GPUs but not in the 3 kW budget; the 0.5 kW one does.
    # (Deadlines inside the outlook, so that price-aware plans all the work in it; flat prices.)
    due = {"deadline_s": T0 + 4 * HOUR}
    jobs = [job("a", gpus=4, submit_s=T0 - 3, **due), job("b", gpus=4, submit_s=T0 - 2, **due),
            job("small", gpus=1, submit_s=T0 - 1, **due)]
    decisions = policy.decide(snapshot(jobs, [50] * 4, power_budget_w=3000.0))
    assert set(started(decisions)) == {"a", "small"}
    assert waiting(decisions) == {"b": WaitReason.POWER_BUDGET}
    if policy.name == "price-aware":  # it plans "b" for when "a" is done, and says when
        assert utc_label(T0 + HOUR) in detail(decisions, "b")
    else:
        assert "3.0 kW" in detail(decisions, "b")


def test_a_power_budget_that_shrank_pauses_preemptible_jobs_until_it_is_met() -> None:
    jobs = [running("old", (("n0", 4),), submit_s=T0 - 20), running("new", (("n0", 4),), submit_s=T0 - 10)]
    decisions = FifoPolicy().decide(snapshot(jobs, power_budget_w=2000.0))
    assert paused(decisions) == {"new": WaitReason.POWER_BUDGET}
    assert decisions.starts == ()


TEAMS = {"A": 4}  # of 8 GPUs: A is guaranteed 4, the other 4 nobody


def b_borrows_everything() -> list[JobView]:
    return [running(f"b{i}", (("n0", 1),), team="B", submit_s=T0 - 100 + i) for i in range(8)]


@pytest.mark.parametrize("policy", [FifoPolicy(), PriorityPolicy()], ids=["fifo", "priority"])
def test_a_team_reclaims_its_guarantee_from_borrowers(policy) -> None:
    a = job("a", gpus=4, team="A")
    decisions = policy.decide(snapshot([*b_borrows_everything(), a], quotas=TEAMS))
    assert started(decisions) == {"a": (("n0", 4),)}
    # Exactly as many borrowers as A needs, the latest first; each says why.
    assert paused(decisions) == {f"b{i}": WaitReason.QUOTA for i in range(4, 8)}
    assert all("team 'A'" in pause.detail for pause in decisions.pauses)


def test_an_urgent_job_of_a_team_displaces_borrowers_under_price_aware() -> None:
    a = job("a", gpus=4, team="A", deadline_s=T0 + HOUR)  # must run now
    b_jobs = [running(f"b{i}", (("n0", 1),), team="B", deadline_s=T0 + 20 * HOUR, submit_s=T0 - 100 + i)
              for i in range(8)]
    decisions = PriceAwarePolicy().decide(snapshot([*b_jobs, a], [50] * 24, quotas=TEAMS))
    assert started(decisions) == {"a": (("n0", 4),)}
    # The borrowers are paused because their GPUs were reclaimed, not for a price: they are told so.
    assert paused(decisions) == {f"b{i}": WaitReason.QUOTA for i in range(4, 8)}
    assert all("reclaimed" in pause.detail and "cheaper" not in pause.detail for pause in decisions.pauses)


def test_price_aware_lets_a_team_reclaim_its_guarantee_from_borrowers_that_could_wait() -> None:
    # Flat prices, everyone has 20 h of slack: nothing is gained by keeping B on A's GPUs.
    a = job("a", gpus=4, team="A", deadline_s=T0 + 21 * HOUR)
    b_jobs = [running(f"b{i}", (("n0", 1),), team="B", deadline_s=T0 + 20 * HOUR, submit_s=T0 - 100 + i)
              for i in range(8)]
    decisions = PriceAwarePolicy().decide(snapshot([*b_jobs, a], [50] * 24, quotas=TEAMS))
    assert started(decisions) == {"a": (("n0", 4),)}
    assert paused(decisions) == {f"b{i}": WaitReason.QUOTA for i in range(4, 8)}


def test_a_team_beyond_its_guarantee_does_not_reclaim() -> None:
    # A already uses its 4 guaranteed GPUs; a fifth job of A waits instead of pausing B's borrowers.
    jobs = [running("a0", (("n0", 4),), team="A"),
            *[running(f"b{i}", (("n0", 1),), team="B") for i in range(4)], job("a1", gpus=1, team="A")]
    decisions = FifoPolicy().decide(snapshot(jobs, quotas=TEAMS))
    assert decisions.pauses == () and decisions.starts == ()
    assert waiting(decisions) == {"a1": WaitReason.CAPACITY}


def test_a_non_preemptible_job_beyond_its_guarantee_may_only_use_unguaranteed_gpus() -> None:
    fits = job("b-fixed", gpus=4, team="B", preemptible=False)
    too_big = job("b-fixed", gpus=5, team="B", preemptible=False)
    assert started(FifoPolicy().decide(snapshot([fits], quotas=TEAMS))) == {"b-fixed": (("n0", 4),)}
    decisions = FifoPolicy().decide(snapshot([too_big], quotas=TEAMS))
    assert started(decisions) == {}
    assert waiting(decisions) == {"b-fixed": WaitReason.QUOTA}
    # Once B's fixed job holds the 4 unguaranteed GPUs, even one more fixed GPU is refused ...
    jobs = [running("b-fixed", (("n0", 4),), team="B", preemptible=False),
            job("b-more", gpus=1, team="B", preemptible=False), job("b-flexible", gpus=1, team="B")]
    decisions = FifoPolicy().decide(snapshot(jobs, quotas=TEAMS))
    assert waiting(decisions) == {"b-more": WaitReason.QUOTA}
    # ... while a preemptible one may still borrow A's idle GPUs.
    assert set(started(decisions)) == {"b-flexible"}


def test_without_quotas_a_non_preemptible_job_uses_any_gpu() -> None:
    decisions = FifoPolicy().decide(snapshot([job("fixed", gpus=8, preemptible=False)]))
    assert started(decisions) == {"fixed": (("n0", 8),)}


# -- gang placement ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_does_not_start_on_scattered_gpus(policy) -> None:
    gang = job("gang", gpus=4, gpus_per_worker=2, deadline_s=T0 + HOUR)
    decisions = policy.decide(snapshot([gang], [50], nodes={"n0": 1, "n1": 1, "n2": 2}))
    assert started(decisions) == {}
    assert waiting(decisions) == {"gang": WaitReason.CAPACITY}


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_gang_starts_across_nodes_that_hold_whole_workers(policy) -> None:
    gang = job("gang", gpus=4, gpus_per_worker=2, deadline_s=T0 + HOUR)
    decisions = policy.decide(snapshot([gang], [50], nodes={"n0": 2, "n1": 2}))
    assert started(decisions) == {"gang": (("n0", 2), ("n1", 2))}


def test_a_gang_fits_around_running_jobs_only_where_whole_workers_are_free() -> None:
    # 4 + 4 GPUs, 3 of n0 and 1 of n1 busy: 1 + 3 free, so no 2-GPU worker fits on n0.
    jobs = [running("r0", (("n0", 3),)), running("r1", (("n1", 1),)),
            job("gang", gpus=4, gpus_per_worker=2), job("pair", gpus=2, gpus_per_worker=2)]
    decisions = FifoPolicy().decide(snapshot(jobs, nodes={"n0": 4, "n1": 4}))
    assert started(decisions) == {"pair": (("n1", 2),)}
    assert waiting(decisions) == {"gang": WaitReason.CAPACITY}


@pytest.mark.parametrize("free", list(itertools.product(range(5), repeat=3)))
def test_a_gang_is_placed_whole_exactly_when_its_workers_fit(free: tuple[int, int, int]) -> None:
    nodes = {"n0": 4, "n1": 4, "n2": 4}
    busy = [running(f"busy{i}", ((node, 4 - f),)) for i, (node, f) in enumerate(zip(nodes, free, strict=True))
            if f < 4]
    for gpus, per_worker in [(4, 2), (6, 3), (4, 1), (3, 3), (8, 4)]:
        gang = job("gang", gpus=gpus, gpus_per_worker=per_worker)
        placement = started(FifoPolicy().decide(snapshot([*busy, gang], nodes=nodes))).get("gang")
        workers_fit = sum(f // per_worker for f in free) >= gpus // per_worker
        assert (placement is not None) == workers_fit, (gpus, per_worker)
        if placement is not None:
            assert sum(g for _, g in placement) == gpus
            assert all(g % per_worker == 0 and g <= free[int(node[1])] for node, g in placement)


# -- fifo and priority order ---------------------------------------------------------------------------


def test_fifo_backfills_a_small_job_around_a_big_head_that_does_not_fit() -> None:
    jobs = [running("r", (("n0", 4),), submit_s=T0 - 30), job("big", gpus=8, submit_s=T0 - 20),
            job("small", gpus=2, submit_s=T0 - 10)]
    decisions = FifoPolicy().decide(snapshot(jobs))
    assert started(decisions) == {"small": (("n0", 2),)}
    assert waiting(decisions) == {"big": WaitReason.CAPACITY}
    assert "needs 8 GPUs" in detail(decisions, "big")


def test_fifo_starts_in_arrival_order_when_not_all_fit() -> None:
    jobs = [job("late", gpus=4, submit_s=T0 - 10), job("early", gpus=4, submit_s=T0 - 20),
            job("mid", gpus=4, submit_s=T0 - 15)]
    decisions = FifoPolicy().decide(snapshot(jobs))
    assert set(started(decisions)) == {"early", "mid"}
    assert waiting(decisions) == {"late": WaitReason.CAPACITY}


def test_fifo_never_pauses_a_running_job_for_an_earlier_arrival() -> None:
    jobs = [running("r", (("n0", 8),), submit_s=T0 - 10), job("older", gpus=8, submit_s=T0 - 1000)]
    decisions = FifoPolicy().decide(snapshot(jobs))
    assert decisions.pauses == () and decisions.starts == ()


def test_priority_starts_the_higher_class_first() -> None:
    jobs = [job("low", gpus=8, priority=0, submit_s=T0 - 60), job("high", gpus=8, priority=1, submit_s=T0)]
    decisions = PriorityPolicy().decide(snapshot(jobs))
    assert set(started(decisions)) == {"high"}
    assert waiting(decisions) == {"low": WaitReason.CAPACITY}


def test_aging_lets_an_old_low_priority_job_overtake_a_new_high_one() -> None:
    # After 2 h of aging (1 class per hour) the class-0 job counts as 2, above the new class-1 job.
    jobs = [job("old", gpus=8, priority=0, submit_s=T0 - 2 * HOUR), job("new", gpus=8, priority=1)]
    assert set(started(PriorityPolicy().decide(snapshot(jobs)))) == {"old"}
    # With slower aging it has not caught up yet.
    assert set(started(PriorityPolicy(aging_s=4 * HOUR).decide(snapshot(jobs)))) == {"new"}


def test_priority_preempts_a_job_a_whole_class_below() -> None:
    jobs = [running("low", (("n0", 8),), priority=0), job("high", gpus=8, priority=1)]
    decisions = PriorityPolicy().decide(snapshot(jobs))
    assert paused(decisions) == {"low": WaitReason.PRIORITY}
    assert started(decisions) == {"high": (("n0", 8),)}


def test_priority_does_not_preempt_within_a_class() -> None:
    # The running job has aged half a class: the newcomer is only half a class above it.
    jobs = [running("low", (("n0", 8),), priority=0, submit_s=T0 - HOUR / 2), job("high", gpus=8, priority=1)]
    decisions = PriorityPolicy().decide(snapshot(jobs))
    assert decisions.pauses == () and decisions.starts == ()
    assert waiting(decisions) == {"high": WaitReason.CAPACITY}


def test_priority_preempts_only_as_many_jobs_as_needed_lowest_first() -> None:
    jobs = [running("mid", (("n0", 4),), priority=1), running("low", (("n0", 4),), priority=0),
            job("top", gpus=4, priority=3)]
    decisions = PriorityPolicy().decide(snapshot(jobs))
    assert paused(decisions) == {"low": WaitReason.PRIORITY}
    assert started(decisions) == {"top": (("n0", 4),)}


def test_priority_never_preempts_a_non_preemptible_job() -> None:
    jobs = [running("low", (("n0", 8),), priority=0, preemptible=False), job("high", gpus=8, priority=5)]
    decisions = PriorityPolicy().decide(snapshot(jobs))
    assert decisions.pauses == () and decisions.starts == ()


# -- admission ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_deadline_shorter_than_the_run_time_is_reported_at_the_first_decision_only(policy) -> None:
    late = job("late", hours=2, deadline_s=T0 + HOUR)
    fine = job("fine", hours=1, deadline_s=T0 + 5 * HOUR)
    decisions = policy.decide(snapshot([late, fine], [50] * 6))
    assert set(decisions.admitted) == {"late", "fine"}
    assert [job_id for job_id, _ in decisions.infeasible] == ["late"]
    why = decisions.infeasible[0][1]
    assert "7200 s of run time" in why if policy.name != "price-aware" else \
        f"cannot finish before {utc_label(T0 + HOUR)}: earliest finish {utc_label(T0 + 2 * HOUR)}" == why
    # Admitted (and marked at risk), it is not reported again; it still runs as soon as possible.
    again = snapshot([job("late", hours=2, deadline_s=T0 + HOUR, admitted=True, at_risk=True),
                      job("fine", hours=1, deadline_s=T0 + 5 * HOUR, admitted=True)], [50] * 6)
    decisions = policy.decide(again)
    assert decisions.admitted == () and decisions.infeasible == ()
    assert "late" in started(decisions)


def test_price_aware_reports_a_newcomer_whose_capacity_is_planned_for_earlier_jobs() -> None:
    # The admitted job needs the whole node for the next 3 h to meet its deadline; the newcomer must
    # finish within 2 h, which only the same GPUs could give it.
    admitted = job("first", gpus=8, hours=3, deadline_s=T0 + 3 * HOUR, admitted=True)
    newcomer = job("second", gpus=8, hours=1, deadline_s=T0 + 2 * HOUR)
    decisions = PriceAwarePolicy().decide(snapshot([admitted, newcomer], [50] * 6))
    assert decisions.admitted == ("second",)
    assert [job_id for job_id, _ in decisions.infeasible] == ["second"]
    assert started(decisions) == {"first": (("n0", 8),)}


def test_price_aware_admits_a_newcomer_that_fits_after_the_earlier_job() -> None:
    admitted = job("first", gpus=8, hours=1, deadline_s=T0 + 3 * HOUR, admitted=True)
    newcomer = job("second", gpus=8, hours=1, deadline_s=T0 + 3 * HOUR)
    decisions = PriceAwarePolicy().decide(snapshot([admitted, newcomer], [50] * 6))
    assert decisions.admitted == ("second",) and decisions.infeasible == ()


def test_an_admitted_job_past_its_deadline_still_runs_at_once() -> None:
    # It was admitted feasible but lost its room; with the deadline gone it runs as soon as possible.
    overdue = job("overdue", hours=1 / 60, deadline_s=T0 - 120, admitted=True, phase=Phase.PAUSED)
    decisions = PriceAwarePolicy().decide(snapshot([overdue], [50, 0, 0, 0]))
    assert started(decisions) == {"overdue": (("n0", 1),)}


def test_a_late_non_preemptible_job_does_not_start_a_run_that_would_take_a_feasible_jobs_room() -> None:
    # One GPU, 20 min left in the hour. "flex" needs 1 min of the cheap next hour before its deadline at
    # 01:02; "late" (reported infeasible, cannot stop once started) needs 22 min: started now, it would
    # hold the GPU until 01:02 and make "flex" miss its deadline.
    now_s = T0 + 40 * 60
    flex = job("flex", hours=1 / 60, deadline_s=T0 + HOUR + 120, admitted=True)
    late = job("late", hours=22 / 60, deadline_s=T0, admitted=True, at_risk=True, preemptible=False)
    prices = outlook([0, -1] + [0] * 10)
    decisions = PriceAwarePolicy().decide(Snapshot(now_s, {"n0": 1}, [flex, late], prices=prices))
    assert started(decisions) == {}
    assert waiting(decisions) == {"flex": WaitReason.PRICE, "late": WaitReason.CAPACITY}
    assert "promised to admitted jobs" in detail(decisions, "late")


def test_a_non_preemptible_job_is_priced_on_the_part_of_its_last_hour_it_uses() -> None:
    # 2.1 h unbroken: from now it costs 1 + 0 + 0.1 x 0 = 1, from 01:00 0 + 0 + 0.1 x 5 = 0.5.
    # (Counting the last hour whole, the second run would seem to cost 5.)
    snap = snapshot([job("fixed", hours=2.1, deadline_s=T0 + 4 * HOUR, preemptible=False)], [1, 0, 0, 5, 0])
    decisions = PriceAwarePolicy().decide(snap)
    assert waiting(decisions) == {"fixed": WaitReason.PRICE}
    assert utc_label(T0 + HOUR) in detail(decisions, "fixed")


def test_a_newcomer_is_reported_rather_than_pushing_admitted_jobs_past_their_deadlines() -> None:
    # One GPU, 15-minute prices, -1 from 04:00 to 05:00 UTC. "quick" needs 1 min by 04:10 and is planned
    # in the cheap 04:00 quarter; "long" (unbroken, 5.25 h) must start by 04:15. "rush" arrives at 03:53
    # needing 25 min by 04:25: giving it room would make one of the two admitted jobs late.
    quarter = HOUR / 4
    prices = np.array([0.0] * 20 + [-1.0] * 4 + [0.0] * 40)
    outlook_now = PriceOutlook(T0 + 19 * quarter + quarter * np.arange(len(prices) - 19), quarter,
                               prices[19:], np.ones(len(prices) - 19, bool))
    now_s = T0 + 17580
    long = job("long", hours=18900 / HOUR, deadline_s=T0 + 37800, preemptible=False, admitted=True)
    quick = job("quick", hours=60 / HOUR, deadline_s=T0 + 18600, admitted=True, phase=Phase.PAUSED)
    rush = job("rush", hours=1500 / HOUR, submit_s=now_s, deadline_s=now_s + 1920, preemptible=False)
    decisions = PriceAwarePolicy().decide(Snapshot(now_s, {"n0": 1}, [long, quick, rush], prices=outlook_now))
    assert [job_id for job_id, _ in decisions.infeasible] == ["rush"]
    assert waiting(decisions)["quick"] is WaitReason.PRICE
    assert utc_label(T0 + 20 * quarter) in detail(decisions, "quick")
    assert "long" not in started(decisions)  # it would hold the GPU past "quick"'s deadline


@pytest.mark.parametrize("policy", POLICIES, ids=POLICY_IDS)
def test_a_decision_leaves_the_garbage_collector_as_it_found_it(policy: object) -> None:
    import gc

    snap = snapshot([job("a")], [10, 20])
    assert gc.isenabled()
    policy.decide(snap)  # type: ignore[attr-defined]
    assert gc.isenabled()
    if isinstance(policy, PriceAwarePolicy):  # it raises without prices: the collector is back anyway
        with pytest.raises(FactoryError):
            policy.decide(snapshot([job("a")]))
        assert gc.isenabled()


def _known_day_then_estimates(known_cheap_hour: int, estimated_cheap_hour: int) -> PriceOutlook:
    """48 hours: the first 24 published (50, one hour at 30), the next 24 estimated (50, one hour at 25)."""
    values = np.full(48, 50.0)
    values[known_cheap_hour], values[estimated_cheap_hour] = 30.0, 25.0
    return PriceOutlook(T0 + HOUR * np.arange(48), HOUR, values, np.arange(48) < 24)


@pytest.mark.parametrize(("shrink", "window_hour"), [(0.0, 27), (0.5, 3), (1.0, 3)])
def test_a_published_cheap_hour_beats_an_estimate_only_a_little_cheaper(shrink: float,
                                                                        window_hour: int) -> None:
    # The estimate past the published day (25) is only a little under the published cheap hour (30): taken
    # as it is (shrink 0) the job waits a day for it; pulled toward the published mean it waits for 03:00.
    snap = Snapshot(T0, {"n0": 1}, [job("train", deadline_s=T0 + 40 * HOUR)],
                    prices=_known_day_then_estimates(3, 27))
    decisions = PriceAwarePolicy(forecast_shrink=shrink).decide(snap)
    assert started(decisions) == {}
    assert f"cheap window at {utc_label(T0 + window_hour * HOUR)}" in detail(decisions, "train")


def test_an_estimate_far_below_the_published_prices_still_draws_the_job() -> None:
    snap = Snapshot(T0, {"n0": 1}, [job("train", deadline_s=T0 + 40 * HOUR)],
                    prices=_known_day_then_estimates(3, 27))
    assert snap.prices is not None
    snap.prices.price_per_mwh[27] = -100.0  # shrunk halfway it is still far under 30
    decisions = PriceAwarePolicy(forecast_shrink=0.5).decide(snap)
    assert f"cheap window at {utc_label(T0 + 27 * HOUR)}" in detail(decisions, "train")


def test_shrinking_moves_only_the_estimates_and_leaves_the_callers_outlook_alone() -> None:
    from factory.scheduling.price_aware import _shrink_forecast

    prices = PriceOutlook(T0 + HOUR * np.arange(4), HOUR, np.array([10.0, 30.0, 0.0, 60.0]),
                          np.array([True, True, False, False]), market_price_per_mwh=np.full(4, 5.0),
                          carbon_g_per_kwh=np.full(4, 300.0))
    snap = Snapshot(T0, {"n0": 1}, [], prices=prices)
    shrunk = _shrink_forecast(snap, 0.5).prices
    assert shrunk is not None
    assert shrunk.price_per_mwh.tolist() == [10.0, 30.0, 10.0, 40.0]  # the known mean is 20
    assert _shrink_forecast(snap, 1.0).prices.price_per_mwh.tolist() == [10.0, 30.0, 20.0, 20.0]
    assert prices.price_per_mwh.tolist() == [10.0, 30.0, 0.0, 60.0]  # outlooks are shared: not written
    assert shrunk.market_price_per_mwh is prices.market_price_per_mwh
    assert shrunk.carbon_g_per_kwh is prices.carbon_g_per_kwh and shrunk.known is prices.known
    for known in (np.ones(4, bool), np.zeros(4, bool)):  # nothing to shrink, or nothing to shrink toward
        whole = replace(snap, prices=replace(prices, known=known))
        assert _shrink_forecast(whole, 1.0) is whole


@pytest.mark.parametrize("pressed", [False, True])
def test_gangs_with_room_beside_them_wait_without_slack_unless_a_promise_is_pressed(pressed: bool) -> None:
    # Two 2-GPU jobs on 16 GPUs, due in 8 h, prices falling for 10 h: the cheapest 4 h start at T0 + 4 h.
    # Twelve GPUs stay free beside them, so neither keeps the arrival slack. A job that must start now
    # presses the promises: then both keep it and plan to finish 0.8 h early, from T0 + 3 h.
    prices = [100.0 - 10 * h for h in range(10)] + [0.0] * 38
    jobs = [job(f"gang{i}", gpus=2, hours=4, deadline_s=T0 + 8 * HOUR, admitted=True) for i in range(2)]
    if pressed:
        jobs.append(job("due-now", hours=1, deadline_s=T0 + HOUR, admitted=True))
    decisions = PriceAwarePolicy().decide(snapshot(jobs, prices, nodes={"n0": 16}))
    waits = {wait.job_id: wait.detail for wait in decisions.waits}
    start_s = T0 + (3 if pressed else 4) * HOUR
    assert all(waits[f"gang{i}"].startswith(f"cheap window at {utc_label(start_s)};") for i in range(2))
    assert ("due-now" in started(decisions)) is pressed


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
@pytest.mark.parametrize("name", ["forecast_shrink", "gang_arrival_room"])
def test_a_share_outside_zero_to_one_is_refused(name: str, share: float) -> None:
    # The message says what the ends mean (for forecast_shrink: "0: estimates as forecast, ...").
    with pytest.raises(FactoryError, match=rf"{name} must be between 0 and 1 \(.*1: .*\), got"):
        PriceAwarePolicy(**{name: share})


def test_a_decision_just_before_a_price_boundary_does_not_pause_running_jobs() -> None:
    # Half a second of the hour is left (a job finished just then): at flat prices nothing is gained
    # by pausing, and with a resume overhead it would cost 300 s and, here, the deadline.
    now_s = T0 + HOUR - 0.5
    work = running("work", (("n0", 1),), hours=2.0, deadline_s=now_s + 2 * HOUR + 200)
    prices = PriceOutlook(T0 + HOUR * np.arange(6), HOUR, np.full(6, 50.0), np.ones(6, bool))
    decisions = PriceAwarePolicy().decide(Snapshot(now_s, {"n0": 1}, [work], prices=prices,
                                                   preempt_overhead_s=300))
    assert decisions.pauses == ()


def test_every_policy_is_a_policy_the_simulator_and_the_live_scheduler_can_call() -> None:
    from factory.scheduling import POLICY_NAMES, Policy, make_policy

    for name in POLICY_NAMES:
        policy = make_policy(name)
        assert isinstance(policy, Policy) and policy.name == name
        assert policy.needs_prices == (name == "price-aware")


def test_a_preempting_gang_pauses_only_the_jobs_on_the_node_it_takes() -> None:
    # A due 4-GPU gang on two 4-GPU nodes. The lowest ranked running jobs are on n0 (ranked last), but
    # n1 has 2 GPUs free: pausing its two jobs is enough, and the jobs on n0 keep running.
    from factory.scheduling.dispatch import dispatch

    on_n0 = [running(f"a{i}", (("n0", 1),), hours=5) for i in range(4)]
    on_n1 = [running(f"b{i}", (("n1", 1),), hours=5) for i in range(2)]
    gang = job("gang", gpus=4, gpus_per_worker=4, admitted=True)
    snap = snapshot([*on_n0, *on_n1, gang], nodes={"n0": 4, "n1": 4})
    decisions = dispatch(snap, [gang, *on_n1, *on_n0], {}, may_preempt=lambda j, v: j.job_id == "gang")
    assert started(decisions) == {"gang": (("n1", 4),)}
    assert set(paused(decisions)) == {"b0", "b1"}


def test_a_preempting_gang_leaves_running_a_low_ranked_job_whose_gpus_it_cannot_use() -> None:
    # Two workers of 4 GPUs: n1 is free, and "y" holds n0. "x" is ranked lowest, but its node is full of
    # jobs that may not be preempted: pausing it frees one GPU no worker can use. Only "y" is paused.
    from factory.scheduling.dispatch import dispatch

    x = running("x", (("n2", 1),), hours=5)
    fixed = running("fixed", (("n2", 3),), hours=5, preemptible=False)
    y = running("y", (("n0", 4),), hours=5)
    gang = job("gang", gpus=8, gpus_per_worker=4, admitted=True)
    snap = snapshot([x, fixed, y, gang], nodes={"n0": 4, "n1": 4, "n2": 4})
    decisions = dispatch(snap, [gang, fixed, y, x], {}, may_preempt=lambda j, v: j.job_id == "gang")
    assert started(decisions) == {"gang": (("n0", 4), ("n1", 4))}
    assert set(paused(decisions)) == {"y"}


# -- moves: a node for a job of one worker -------------------------------------------------------------


def _scattered(gang_hours: float, gang_deadline_h: float, running_deadline_h: float = 24.0) -> list[JobView]:
    """Two nodes of 8 with 8 GPUs free in all but not on one: 7 single-GPU jobs on n0 leave 1, one on n1
    leaves 7 (each with 4 h left); an admitted 8-GPU job of one worker waits."""
    deadline_s = T0 + running_deadline_h * HOUR
    return [*(running(f"r{i}", (("n0", 1),), hours=4, deadline_s=deadline_s) for i in range(7)),
            running("lone", (("n1", 1),), hours=4, deadline_s=deadline_s),
            job("gang", gpus=8, hours=gang_hours, deadline_s=T0 + gang_deadline_h * HOUR, admitted=True)]


def test_a_due_gang_gets_a_node_by_moving_a_running_job_not_by_waiting_on_scattered_gpus() -> None:
    # Due now (8 h of work, 8 h to its deadline), the gang fits only if `lone` moves to n0's free GPU.
    decisions = PriceAwarePolicy().decide(snapshot(_scattered(8, 8), [50] * 24, nodes={"n0": 8, "n1": 8}))
    assert started(decisions) == {"gang": (("n1", 8),), "lone": (("n0", 1),)}
    assert paused(decisions) == {"lone": WaitReason.CAPACITY}  # paused at a checkpoint, resumed on n0
    assert "moved to n0 to make room for job gang" in detail(decisions, "lone")
    # fifo moves nobody: the gang waits for a node to empty.
    fifo = FifoPolicy().decide(snapshot(_scattered(8, 8), nodes={"n0": 8, "n1": 8}))
    assert "gang" not in started(fifo) and paused(fifo) == {}


def test_a_job_is_not_moved_when_its_resume_would_make_it_late() -> None:
    # With a 1 h resume, every running job (4 h left, 4.5 h to its deadline) would finish late if moved.
    decisions = PriceAwarePolicy().decide(snapshot(_scattered(8, 8, running_deadline_h=4.5), [50] * 24,
                                                   nodes={"n0": 8, "n1": 8}, preempt_overhead_s=HOUR))
    assert paused(decisions) == {}
    assert "gang" not in started(decisions)


@pytest.mark.parametrize("overhead_h", [0.0, 1.0])
def test_moves_that_cost_a_resume_are_made_only_for_a_job_due_now(overhead_h: float) -> None:
    # The gang has a day of slack and now is the cheapest hour: it would run now, but need not.
    jobs = _scattered(2, 26)
    decisions = PriceAwarePolicy().decide(snapshot(jobs, [10] + [90] * 27, nodes={"n0": 8, "n1": 8},
                                                   preempt_overhead_s=overhead_h * HOUR))
    moved = "lone" in paused(decisions)
    assert moved == (overhead_h == 0.0)
    assert ("gang" in started(decisions)) == moved


@settings(max_examples=200, deadline=None)
@example([8, 8], [(0, 1)] * 7 + [(1, 1)], [8])  # one move: the job on n1 to n0's free GPU
@given(st.lists(st.sampled_from([4, 8]), min_size=2, max_size=4),
       st.lists(st.tuples(st.integers(0, 3), st.sampled_from([1, 1, 2, 4])), max_size=12),
       st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=3))
def test_moves_keep_every_node_within_its_gpus_and_every_moved_job_running(
        node_sizes: list[int], running_specs: list[tuple[int, int]], queued_gpus: list[int]) -> None:
    nodes = {f"n{i}": size for i, size in enumerate(node_sizes)}
    used = dict.fromkeys(nodes, 0)
    jobs: list[JobView] = []
    for i, (node_index, gpus) in enumerate(running_specs):
        node = f"n{node_index % len(nodes)}"
        if used[node] + gpus <= nodes[node]:
            used[node] += gpus
            jobs.append(running(f"r{i}", ((node, gpus),), hours=4, deadline_s=T0 + 24 * HOUR))
    jobs += [job(f"q{i}", gpus=gpus, hours=8, deadline_s=T0 + 8 * HOUR, admitted=True)
             for i, gpus in enumerate(queued_gpus)]
    snap = snapshot(jobs, [50] * 24, nodes=nodes)
    decisions = PriceAwarePolicy().decide(snap)
    views = {view.job_id: view for view in jobs}
    load = dict.fromkeys(nodes, 0)
    pauses = paused(decisions)
    for view in jobs:
        if view.phase is Phase.RUNNING and view.job_id not in pauses:
            for node, gpus in view.placement:
                load[node] += gpus
    for job_id, placement in started(decisions).items():
        assert sum(g for _, g in placement) == views[job_id].num_gpus
        for node, gpus in placement:
            load[node] += gpus
    assert all(load[node] <= nodes[node] for node in nodes), (load, nodes)
    starts = started(decisions)
    queued_nodes = {node for job_id, placement in starts.items() if views[job_id].phase is Phase.QUEUED
                    for node, _ in placement}
    moves = {p.job_id for p in decisions.pauses if p.detail.startswith("moved to")}
    assert moves == pauses.keys() & starts.keys()  # every moved job is started again, and only those
    for job_id in moves:  # to another node, for a job started where it was
        (old_node, _), = views[job_id].placement
        assert old_node not in dict(starts[job_id])
        assert old_node in queued_nodes
