"""`price-aware` (the default policy): the least energy cost that meets every deadline.

Each decision plans every job over the price outlook (`plan.Planner`: cheapest intervals per job,
least laxity first, admitted jobs before new ones) and runs now exactly the jobs whose plan includes
the current interval. So a job waits for a cheaper window when its deadline allows it, a running
job is paused through expensive hours when that is cheaper even after paying the resume overhead
(`Snapshot.preempt_overhead_s` of extra run time), negative prices are used first, and a job that
cannot meet its deadline is reported at admission (`Decisions.infeasible`) and then run as soon as
possible without taking anything from jobs admitted as feasible. A job planned for later waits for
`price` only if it had room now; one whose room now went to more urgent jobs waits for `capacity`
(or `power budget`), so the reason users see is the true one.

A job keeps some slack for jobs yet to arrive: when other jobs are planned in its window, it plans to
finish `arrival_slack` of its run time before its deadline, and uses that slack only when it cannot
otherwise finish. Alone (or on an idle cluster) it takes the cheapest room its deadline allows.

A job without a deadline is planned as if due `no_deadline_window_s` after its submission (the
cheapest hours of the next day by default), and as soon as possible once that has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from factory.errors import FactoryError
from factory.prices.series import utc_label
from factory.scheduling.dispatch import dispatch
from factory.scheduling.gc_pause import cyclic_gc_paused
from factory.scheduling.model import (
    Decisions,
    JobView,
    Phase,
    PriceOutlook,
    Snapshot,
    WaitReason,
    deadline_infeasible,
)
from factory.scheduling.plan import (
    ADMITTED,
    AT_RISK,
    MAX_REPLANS,
    MIN_SLICE_S,
    NEW,
    PINNED,
    RESCUE,
    JobPlan,
    Planner,
    PlanRequest,
)

_NO_INTERVALS = np.empty(0, dtype=np.int64)
FULL_PLAN_JOBS = 5000  # queues up to this long are planned in full at every decision
# A job sharing its window with others plans to finish this fraction of its run time before its deadline
# (`Planner.plan`). Without it every job waits for the cheap hours until it has no slack left, and on a
# busy cluster a burst of such jobs fills every GPU just when a newcomer with a short deadline arrives:
# on the PJM weeks of bench/scheduler.py that cost 2 misses a week; 0.05 still left 5 of the 6, 0.1
# none, at 0.95-0.98 of the optimal savings instead of 0.97-0.99.
ARRIVAL_SLACK = 0.1
_NOT_PLANNED = JobPlan("", _NO_INTERVALS, True, 0.0, crowded_now="gpus")
_CROWDED_OUT = (WaitReason.CAPACITY, "the GPUs are planned for more urgent jobs now")
_RECLAIMED = (WaitReason.QUOTA, "its borrowed GPUs were reclaimed for a team within its guarantee")


@dataclass(frozen=True)
class PriceAwarePolicy:
    """Plans the cheapest intervals before each deadline; runs what the plan puts now."""

    no_deadline_window_s: float = 86400.0
    arrival_slack: float = ARRIVAL_SLACK
    name: str = "price-aware"
    needs_prices: bool = True

    @cyclic_gc_paused
    def decide(self, snapshot: Snapshot) -> Decisions:
        """Plan every job over the outlook; run the ones planned for the current interval."""
        if snapshot.prices is None:
            raise FactoryError("the price-aware policy needs a price outlook in the snapshot")
        snapshot = _past_a_sliver(snapshot)
        now_s = snapshot.now_s
        requests = [self._request(job, snapshot) for job in snapshot.jobs]  # late jobs are AT_RISK already
        trivially_late = {job.job_id: why for job in snapshot.jobs if not job.admitted
                          and (why := deadline_infeasible(job, now_s, snapshot.preempt_overhead_s))}
        ordered, plans, borrowing = self._plan(snapshot, requests)

        # Ranked in planning order: the most urgent first, so that dispatch serves them first.
        ranked: list[JobView] = []
        held: dict[str, tuple[WaitReason, str]] = {}
        infeasible = dict(trivially_late)
        for request in ordered:
            job, plan = request.job, plans[request.job.job_id]
            if request.tier == NEW and not plan.covered:
                infeasible[job.job_id] = ("the capacity before its deadline is already planned for jobs "
                                          "admitted earlier")
            if plan.runs_now:
                ranked.append(job)
            elif job.job_id in borrowing and plan.crowded_now == "gpus" and job.phase is Phase.RUNNING:
                held[job.job_id] = _RECLAIMED
            elif plan is _NOT_PLANNED:
                held[job.job_id] = _CROWDED_OUT
            else:
                held[job.job_id] = _held(plan, snapshot)
        admitted = [job.job_id for job in snapshot.jobs if not job.admitted]
        return dispatch(snapshot, ranked, held, admitted=admitted,
                        infeasible=[(job_id, infeasible[job_id])
                                    for job_id in admitted if job_id in infeasible])

    def _request(self, job: JobView, snapshot: Snapshot) -> PlanRequest:
        now_s, overhead_s = snapshot.now_s, snapshot.preempt_overhead_s
        # job.needed_s(overhead_s), inlined: this runs for every job of the queue
        needed_s = job.remaining_s + overhead_s if job.phase is Phase.PAUSED else job.remaining_s
        deadline_s = job.deadline_s
        if deadline_s is None or math.isinf(deadline_s):
            deadline_s = max(job.submit_s + self.no_deadline_window_s, now_s + needed_s)
        if job.phase is Phase.RUNNING and not job.preemptible:
            tier = PINNED
        elif job.at_risk or now_s + needed_s > deadline_s + 1e-6:  # as `deadline_infeasible`, inlined
            # Judged infeasible, or admitted but now too late whatever happens: as soon as possible
            # (planned within its passed deadline, it would never be given room again).
            tier = AT_RISK
        else:
            tier = ADMITTED if job.admitted else NEW
        pause_option_s = job.remaining_s + overhead_s \
            if job.phase is Phase.RUNNING and job.preemptible else None
        return PlanRequest(job, needed_s, deadline_s, tier, pause_option_s)

    def _plan(self, snapshot: Snapshot,
              requests: list[PlanRequest]) -> tuple[list[PlanRequest], dict[str, JobPlan], set[str]]:
        """Plan every request; re-plan with the admitted jobs left short first, while that helps.

        Also returns the jobs that borrow beyond their team's guarantee (empty without quotas).
        """
        best: tuple[int, tuple[list[PlanRequest], dict[str, JobPlan]]] | None = None
        promoted: set[str] = set()
        # (group, laxity, deadline, id) of each request, computed once for every round's sort.
        keys = [(_group(r.tier), *_urgency(r)) for r in requests]
        if snapshot.quotas:
            keys = _guaranteed_first(requests, keys, snapshot.quotas)
            borrowing = {key[-1] for key in keys if key[1]}
        else:
            borrowing = set()
        for _ in range(MAX_REPLANS + 1):
            ordered, plans = self._plan_round(snapshot, requests, keys, promoted)
            short = {r.job.job_id for r in requests if r.tier == ADMITTED and not plans[r.job.job_id].covered}
            if best is None or len(short) < best[0]:
                best = (len(short), (ordered, plans))
            if not short or short <= promoted or len(short) > best[0]:
                break
            promoted |= short
        assert best is not None
        if best[0]:
            # Cheapest-first rounds left admitted jobs short; the greedy choice can do that where a
            # schedule meeting them all exists. Try the admitted ones as soon as possible, earliest
            # deadline first (newcomers after them), and keep that plan if it leaves fewer of them short,
            # even if it turns more newcomers away: an admission is a promise, and a newcomer turned
            # away is told so now (`NEWCOMER_OVER_AN_ADMITTED_JOB` in the simulation invariants).
            rescue = [r._replace(tier=RESCUE) if r.tier == ADMITTED else r for r in requests]
            rescue_keys = [(_rescue_rank(r.tier), r.deadline_s if r.tier == RESCUE else key[-3], key[-1])
                           for r, key in zip(rescue, keys, strict=True)]
            ordered, plans = self._plan_round(snapshot, rescue, rescue_keys, set())
            short = sum(r.tier == RESCUE and not plans[r.job.job_id].covered for r in rescue)
            if short < best[0]:
                best = (short, (ordered, plans))
        return (*best[1], borrowing)

    def _plan_round(self, snapshot: Snapshot, requests: list[PlanRequest], keys: list[tuple],
                    promoted: set[str]) -> tuple[list[PlanRequest], dict[str, JobPlan]]:
        assert snapshot.prices is not None
        outlook_end_s = snapshot.prices.end_s
        planner = Planner(snapshot.prices, snapshot.now_s, snapshot.total_gpus, snapshot.power_budget_w,
                          self.arrival_slack)
        # Admitted and new jobs compete by laxity; admitted ones found short go first next round,
        # among themselves by laxity too (the order they were found in would let one found short
        # early take the room of a more urgent one found later).
        if promoted:
            round_keys = [(key[0], key[-1] not in promoted, *key[1:]) for key in keys]
        else:
            round_keys = keys
        ordered = [requests[i] for i in sorted(range(len(requests)), key=round_keys.__getitem__)]
        plans: dict[str, JobPlan] = {}
        for position, request in enumerate(ordered):
            if position >= FULL_PLAN_JOBS and request.tier != NEW and request.tier != PINNED and \
                    planner.now_exhausted():
                # A very long queue: nothing is left now for this job, and planning its later intervals
                # changes nothing for the jobs before it, so it is not re-planned in this decision (a
                # queue of 100,000 costs what the GPUs can start). The price of that: a shortage of an
                # admitted job this far down the queue is not seen, so it is not moved up.
                plans[request.job.job_id] = _NOT_PLANNED
                continue
            plans[request.job.job_id] = planner.plan(_within(request, outlook_end_s))
        return ordered, plans


def _guaranteed_first(requests: list[PlanRequest], keys: list[tuple],
                      quotas: Mapping[str, int]) -> list[tuple]:
    """Within each group, jobs inside their team's guarantee before jobs that borrow.

    A team's guaranteed GPUs are its own: its most urgent jobs up to its quota are planned before any
    other team's borrowing jobs, whatever their laxity, so that dispatch reclaims borrowed GPUs for
    them (`dispatch` pauses the borrowers). Borrowers then share what is left, least laxity first.
    """
    used: dict[str, int] = {}
    within = [False] * len(requests)
    for i in sorted(range(len(requests)), key=keys.__getitem__):
        job = requests[i].job
        total = used.get(job.team, 0) + job.num_gpus
        if total <= quotas.get(job.team, 0):
            used[job.team] = total
            within[i] = True
    return [(key[0], not inside, *key[1:]) for key, inside in zip(keys, within, strict=True)]


def _past_a_sliver(snapshot: Snapshot) -> Snapshot:
    """The snapshot as of the next interval when at most `MIN_SLICE_S` of the current one is left.

    A decision a fraction of a second before a boundary (a job finishing just then) would otherwise
    see no room now and pause running jobs for nothing (paying the resume overhead): the plan starts
    at the boundary instead, which moves every time by under a second.
    """
    outlook = snapshot.prices
    assert outlook is not None
    first_end_s = float(outlook.starts_s[0]) + outlook.interval_s
    if first_end_s - snapshot.now_s > MIN_SLICE_S or len(outlook.starts_s) < 2:  # as `room > MIN_SLICE_S`
        return snapshot
    rest = PriceOutlook(outlook.starts_s[1:], outlook.interval_s, outlook.price_per_mwh[1:],
                        outlook.known[1:])
    return replace(snapshot, now_s=first_end_s, prices=rest)


def _new_short(requests: list[PlanRequest], plans: dict[str, JobPlan]) -> int:
    """How many newcomers a plan leaves short (they would be reported infeasible at admission)."""
    return sum(r.tier == NEW and not plans[r.job.job_id].covered for r in requests)


def _rescue_rank(tier: int) -> int:
    """The order of tiers in the rescue round: pinned, admitted (as RESCUE), new, at risk."""
    return {PINNED: 0, RESCUE: 1, NEW: 2, AT_RISK: 3}[tier]


def _group(tier: int) -> int:
    return ADMITTED if tier == NEW else tier


def _urgency(request: PlanRequest) -> tuple[float, float, str]:
    """(laxity, deadline, id): least laxity first; at-risk jobs by how long they have been due."""
    laxity_s = request.deadline_s - request.job.submit_s if request.tier == AT_RISK else \
        request.deadline_s - request.needed_s
    return (laxity_s, request.deadline_s, request.job.job_id)


def _within(request: PlanRequest, outlook_end_s: float) -> PlanRequest:
    """Only the part of the work that must happen inside the outlook is planned in it."""
    if request.deadline_s <= outlook_end_s:
        return request
    after_s = request.deadline_s - outlook_end_s
    pause_s = None if request.pause_option_s is None else max(0.0, request.pause_option_s - after_s)
    return PlanRequest(request.job, max(0.0, request.needed_s - after_s), outlook_end_s, request.tier,
                       pause_s)


def _held(plan: JobPlan, snapshot: Snapshot) -> tuple[WaitReason, str]:
    """Why a job planned for later is not running now: the price, or room taken by more urgent jobs."""
    assert snapshot.prices is not None
    reason = {None: WaitReason.PRICE, "power": WaitReason.POWER_BUDGET}.get(plan.crowded_now,
                                                                            WaitReason.CAPACITY)
    what = "power budget is" if reason is WaitReason.POWER_BUDGET else "GPUs are"
    if not len(plan.intervals):
        if reason is WaitReason.PRICE:
            return reason, "no room is planned for it before its deadline"
        return reason, f"the {what} planned for more urgent jobs now"
    start_s = max(snapshot.now_s, float(snapshot.prices.starts_s[int(plan.intervals[0])])) + \
        (plan.later_start_s or 0.0)
    if reason is WaitReason.PRICE:
        return reason, f"planned to run from {utc_label(start_s)}, when the energy is cheaper"
    return reason, f"the {what} planned for more urgent jobs now; planned to run from {utc_label(start_s)}"
