"""`price-aware` (the default policy): the least energy cost that meets every deadline.

Each decision plans every job over the price outlook (`plan.Planner`: cheapest intervals per job,
least laxity first, admitted jobs before new ones) and runs now exactly the jobs whose plan includes
the current interval. So a job waits for a cheaper window when its deadline allows it, a running
job is paused through expensive hours when that is cheaper even after paying the resume overhead
(`Snapshot.preempt_overhead_s` of extra run time), negative prices are used first, and a job that
cannot meet its deadline is reported at admission (`Decisions.infeasible`) and then run as soon as
possible without taking anything from jobs admitted as feasible.

A job without a deadline is planned as if due `no_deadline_window_s` after its submission (the
cheapest hours of the next day by default), and as soon as possible once that has passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from factory.errors import FactoryError
from factory.prices.series import utc_label
from factory.scheduling.dispatch import dispatch
from factory.scheduling.model import (
    Decisions,
    JobView,
    Phase,
    Snapshot,
    WaitReason,
    deadline_infeasible,
)
from factory.scheduling.plan import ADMITTED, AT_RISK, MAX_REPLANS, NEW, PINNED, JobPlan, Planner, PlanRequest


@dataclass(frozen=True)
class PriceAwarePolicy:
    """Plans the cheapest intervals before each deadline; runs what the plan puts now."""

    no_deadline_window_s: float = 86400.0
    name: str = "price-aware"
    needs_prices: bool = True

    def decide(self, snapshot: Snapshot) -> Decisions:
        """Plan every job over the outlook; run the ones planned for the current interval."""
        if snapshot.prices is None:
            raise FactoryError("the price-aware policy needs a price outlook in the snapshot")
        now_s = snapshot.now_s
        requests = [self._request(job, snapshot) for job in snapshot.jobs]
        trivially_late = {job.job_id: why for job in snapshot.jobs if not job.admitted
                          and (why := deadline_infeasible(job, now_s, snapshot.preempt_overhead_s))}
        requests = [r if r.job.job_id not in trivially_late else _as_tier(r, AT_RISK) for r in requests]
        plans = self._plan(snapshot, requests)

        ranked: list[JobView] = []
        held: dict[str, tuple[WaitReason, str]] = {}
        infeasible = dict(trivially_late)
        for request in requests:
            job, plan = request.job, plans[request.job.job_id]
            if request.tier == NEW and not plan.covered:
                infeasible[job.job_id] = ("the capacity before its deadline is already planned for jobs "
                                          "admitted earlier")
            if plan.runs_now:
                ranked.append(job)
            else:
                held[job.job_id] = (WaitReason.PRICE, _later(plan, snapshot))
        order = {r.job.job_id: i for i, r in enumerate(sorted(requests, key=_urgency))}
        ranked.sort(key=lambda job: order[job.job_id])
        admitted = [job.job_id for job in snapshot.jobs if not job.admitted]
        return dispatch(snapshot, ranked, held, admitted=admitted,
                        infeasible=[(job_id, infeasible[job_id])
                                    for job_id in admitted if job_id in infeasible])

    def _request(self, job: JobView, snapshot: Snapshot) -> PlanRequest:
        now_s, overhead_s = snapshot.now_s, snapshot.preempt_overhead_s
        needed_s = job.needed_s(overhead_s)
        deadline_s = job.deadline_s
        if deadline_s is None or math.isinf(deadline_s):
            deadline_s = max(job.submit_s + self.no_deadline_window_s, now_s + needed_s)
        if job.phase is Phase.RUNNING and not job.preemptible:
            tier = PINNED
        elif job.at_risk:
            tier = AT_RISK
        else:
            tier = ADMITTED if job.admitted else NEW
        pause_option_s = job.remaining_s + overhead_s \
            if job.phase is Phase.RUNNING and job.preemptible else None
        return PlanRequest(job, needed_s, deadline_s, tier, pause_option_s)

    def _plan(self, snapshot: Snapshot, requests: list[PlanRequest]) -> dict[str, JobPlan]:
        assert snapshot.prices is not None
        outlook_end_s = snapshot.prices.end_s
        first: list[str] = []  # admitted jobs that came out short, planned first next round
        for _ in range(MAX_REPLANS + 1):
            planner = Planner(snapshot.prices, snapshot.now_s, snapshot.total_gpus, snapshot.power_budget_w)
            plans: dict[str, JobPlan] = {}
            promoted = {job_id: i for i, job_id in enumerate(first)}
            # Admitted and new jobs compete by laxity; admitted ones found short go first next round.
            ordered = sorted(requests, key=lambda r: (_group(r.tier),
                                                      promoted.get(r.job.job_id, len(promoted)),
                                                      *_urgency(r)[1:]))
            for request in ordered:
                plans[request.job.job_id] = planner.plan(_within(request, outlook_end_s))
            short = [r.job.job_id for r in ordered if r.tier == ADMITTED and not plans[r.job.job_id].covered]
            if not short or all(job_id in promoted for job_id in short):
                return plans
            first += [job_id for job_id in short if job_id not in promoted]
        return plans


def _group(tier: int) -> int:
    return ADMITTED if tier == NEW else tier


def _urgency(request: PlanRequest) -> tuple[int, float, float, str]:
    laxity_s = request.deadline_s - request.job.submit_s if request.tier == AT_RISK else \
        request.deadline_s - request.needed_s
    return (request.tier, laxity_s, request.deadline_s, request.job.job_id)


def _as_tier(request: PlanRequest, tier: int) -> PlanRequest:
    return PlanRequest(request.job, request.needed_s, request.deadline_s, tier, request.pause_option_s)


def _within(request: PlanRequest, outlook_end_s: float) -> PlanRequest:
    """Only the part of the work that must happen inside the outlook is planned in it."""
    if request.deadline_s <= outlook_end_s:
        return request
    after_s = request.deadline_s - outlook_end_s
    pause_s = None if request.pause_option_s is None else max(0.0, request.pause_option_s - after_s)
    return PlanRequest(request.job, max(0.0, request.needed_s - after_s), outlook_end_s, request.tier,
                       pause_s)


def _later(plan: JobPlan, snapshot: Snapshot) -> str:
    assert snapshot.prices is not None
    if not len(plan.intervals):
        return "no room is planned for it before its deadline"
    start_s = max(snapshot.now_s, float(snapshot.prices.starts_s[int(plan.intervals[0])]))
    return f"planned to run from {utc_label(start_s)}, when the energy is cheaper"
