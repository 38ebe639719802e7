"""`price-aware` (the default policy): the least energy cost that keeps every deadline it promised.

Each decision has two parts:

1. **The promise** (`reservation.reserve`). A reservation plan over future capacity (admitted jobs as late
   as they can still finish, latest deadline first; gangs' GPUs and the power budget included) gives each
   admitted job its *latest safe start*. A job whose latest safe start is in the current interval is *due*:
   it runs now, before anything else, and may preempt flexible jobs to get its GPUs. A newcomer is admitted
   only if the plan has room for it before its deadline given every job already admitted; otherwise it is
   told at once ("cannot finish before 09:00: earliest finish 11:20"), reported in `Decisions.infeasible`,
   and runs as soon as it can without taking anything from the admitted jobs. So is a newcomer that fits
   only where the next plan might not find room for an earlier promise ("cannot be promised to finish
   before 09:00 without putting an earlier promise at risk": `Reservation.puts_at_risk`). The plan
   finishes each job `reserve_margin` x its run time early when it can, which keeps room for jobs not yet
   arrived.
2. **The price** (`plan.Planner`). Jobs that are not due are planned into the cheapest intervals before
   their deadline (least laxity first) and run now exactly when their plan includes the current interval
   (prices past the known horizon are estimates; `forecast_shrink`, off by default, pulls them toward the
   known prices' mean: `_shrink_forecast`); so waiting for a cheap hour happens only inside a job's slack.
   Where the flexible jobs compete for room, they are planned together instead, by one linear program
   (`joint_plan`, keeping `joint_margin` of each later interval for jobs not yet arrived where that is at
   least one of the cluster's GPUs), so that a cheap hour goes to the job that needs it most. A running job
   is kept running ahead of queued ones (a queued job that is not due never displaces it) and is paused
   only when the saving on published prices beats its resume overhead by `pause_margin`
   (`Planner._run_or_pause`), at most `max_pauses_per_day` times a day for price, never in the price
   interval it (re)started in (it ran on these very prices), only with `pause_guard_intervals` of slack to
   spare after a resume past the current interval (`Reservation.price_pausable`: a resume that slips one
   interval, its room taken by a newcomer or a gang, must not make it late), and (with a resume overhead)
   never while the plan is short of room: a resume redoes work, which late or due jobs need the GPUs for.

The plan counts GPUs, not nodes: a job of one worker that the free GPUs hold in total but no node does
gets a node by moving running jobs elsewhere (`dispatch`'s `may_move`: paused and resumed elsewhere in the
same decisions), if each moved job still meets its deadline with the resume, and where a resume costs only
for a job due now. (Live, a moved job is PAUSING until its checkpoint is written; the next step decides it
again, as a paused job.)

A job planned for later waits for `price` only if it had room now; one whose room went to more urgent jobs
waits for `capacity` (or `power budget`), so the reason users see is the true one; each waiting admitted
job's reason names its cheap window, its latest safe start and its deadline.

A job without a deadline is planned as if due `no_deadline_window_s` after its submission (the cheapest
hours of the next day by default), and as soon as possible once that has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from factory.errors import FactoryError
from factory.scheduling.dispatch import dispatch
from factory.scheduling.gc_pause import cyclic_gc_paused
from factory.scheduling.joint_plan import joint_applies, plan_jointly
from factory.scheduling.model import (
    Decisions,
    JobView,
    Phase,
    PriceOutlook,
    Snapshot,
    WaitReason,
)
from factory.scheduling.plan import (
    AT_RISK,
    DUE,
    DUE_SOON,
    FLEXIBLE,
    MIN_SLICE_S,
    PINNED,
    RUNNING,
    JobPlan,
    Planner,
    PlanRequest,
)
from factory.scheduling.reservation import SHORT_START_LAG_S, Booking, Reservation, reserve
from factory.scheduling.wait_reasons import (
    CROWDED_OUT,
    NO_RESUME_ROOM,
    RECLAIMED,
    UNBROKEN,
    cannot_finish,
    held_reason,
    with_latest_starts,
)

_NO_INTERVALS = np.empty(0, dtype=np.int64)
FULL_PLAN_JOBS = 5000  # queues up to this long are planned in full at every decision
# Defaults of the tunable parameters, chosen on PJM COMED day-ahead 2013-2015 only (the tuning half of
# bench/scheduler_matrix.py, which reports on 2016-2018, ERCOT and CAISO); see bench/README.md.
ARRIVAL_SLACK = 0.2     # price plan: finish this fraction of the run time early when sharing a window
RESERVE_MARGIN = 0.05   # reservation plan: the same, for the latest safe starts
GANG_ARRIVAL_ROOM = 0.3  # a gang keeps no slack where this share of GPUs stays free beside it (1: always)
PAUSE_MARGIN = 0.5      # a pause must save this many times its resume overhead's cost, beyond paying it
MAX_PAUSES_PER_DAY = 3  # price pauses of one job in any 24 h
PAUSE_GUARD_INTERVALS = 1.0  # slack a price pause must leave after a resume past the current interval
# How far estimates past the known horizon are pulled toward the known mean (0: as forecast, 1: flat). The
# tuning half chose 1.0 (bench/README.md); the reported half broke more promises with it, so it stays off.
FORECAST_SHRINK = 0.0
# Joint plan of the flexible jobs: share of each later interval's room kept for arrivals (none on a cluster
# where it is under one GPU). `--tune` chose 0.15 on the tuning half; with 0 it missed 1,169, not 1,079.
JOINT_MARGIN = 0.15
DAY_S = 86400.0
_NOT_PLANNED = JobPlan("", _NO_INTERVALS, True, 0.0, crowded_now="gpus")
_HELD_UNBROKEN = JobPlan("", _NO_INTERVALS, True, 0.0, crowded_now="gpus")


@dataclass(frozen=True)
class PriceAwarePolicy:
    """Keeps the reservation plan's promises; within them, runs each job in its cheapest intervals."""

    no_deadline_window_s: float = DAY_S
    arrival_slack: float = ARRIVAL_SLACK
    gang_arrival_room: float = GANG_ARRIVAL_ROOM  # 1: a gang keeps the arrival slack wherever it applies
    reserve_margin: float = RESERVE_MARGIN
    pause_margin: float = PAUSE_MARGIN
    max_pauses_per_day: int = MAX_PAUSES_PER_DAY
    pause_guard_intervals: float = PAUSE_GUARD_INTERVALS
    forecast_shrink: float = FORECAST_SHRINK
    joint_margin: float | None = JOINT_MARGIN  # None: the flexible jobs are planned one by one (greedily)
    name: str = "price-aware"
    needs_prices: bool = True

    def __post_init__(self) -> None:
        if self.joint_margin is not None and not 0.0 <= self.joint_margin < 1.0:  # also refuses NaN
            raise FactoryError(f"joint_margin must be at least 0 and below 1 (the share of each later "
                               f"interval kept for jobs not yet arrived), or None, got {self.joint_margin}")
        for name, ends in (("forecast_shrink", "0: estimates as forecast, 1: the known prices' mean"),
                           ("gang_arrival_room", "a share of the GPUs; 1: a gang always keeps the slack")):
            if not 0.0 <= getattr(self, name) <= 1.0:  # also refuses NaN
                raise FactoryError(f"{name} must be between 0 and 1 ({ends}), got {getattr(self, name)}")

    @cyclic_gc_paused
    def decide(self, snapshot: Snapshot) -> Decisions:
        """Reserve the promises, plan the rest over the outlook, run what is due or planned now."""
        if snapshot.prices is None:
            raise FactoryError("the price-aware policy needs a price outlook in the snapshot")
        snapshot = _shrink_forecast(_past_a_sliver(snapshot), self.forecast_shrink)
        now_s = snapshot.now_s
        overhead_s = snapshot.preempt_overhead_s
        inf = math.inf  # (a finite deadline read inline: this runs for every job of a long queue)
        deadlines = {job.job_id: deadline_s if (deadline_s := job.deadline_s) is not None and
                     -inf < deadline_s < inf else self._deadline_s(job, now_s, overhead_s)
                     for job in snapshot.jobs}
        promise = self._reserve(snapshot, deadlines)
        requests, held_unbroken = self._requests(snapshot, deadlines, promise)
        ordered, plans, borrowing, not_planned = self._plan(snapshot, requests, promise)

        # Ranked in planning order: the most urgent first, so that dispatch serves them first.
        ranked: list[JobView] = []
        held: dict[str, tuple[WaitReason, str]] = dict.fromkeys(held_unbroken, UNBROKEN)
        held.update(dict.fromkeys(not_planned, CROWDED_OUT))
        early_starts = promise.early_starts
        for request in ordered:
            job, plan = request.job, plans[request.job.job_id]
            if plan is _NOT_PLANNED:  # (with quotas, jobs of a long queue's tail: looked at first)
                held[job.job_id] = CROWDED_OUT
            elif plan is _HELD_UNBROKEN:
                held[job.job_id] = UNBROKEN if early_starts is None else \
                    NO_RESUME_ROOM if job.job_id in early_starts.refused else \
                    CROWDED_OUT if job.job_id in early_starts.crowded else UNBROKEN
            elif plan.runs_now:
                ranked.append(job)
            elif job.job_id in borrowing and plan.crowded_now == "gpus" and job.phase is Phase.RUNNING:
                held[job.job_id] = RECLAIMED
            else:
                held[job.job_id] = held_reason(plan, snapshot)
        newcomers = [job.job_id for job in snapshot.jobs if not job.admitted]
        infeasible = [(job_id, cannot_finish(deadlines[job_id], promise.infeasible[job_id],
                                             job_id in promise.puts_at_risk))
                      for job_id in newcomers if job_id in promise.infeasible]
        due = {r.job.job_id for r in requests if r.tier <= DUE}  # kept running, or must start now

        def may_preempt(job: JobView, victim: JobView) -> bool:  # monotone: pinned and due jobs rank first
            return job.job_id in due and victim.job_id not in due

        def may_move(job: JobView, mover: JobView) -> bool:  # a move costs the mover one resume
            resume_s = mover.overhead_s(overhead_s)
            in_time = mover.deadline_s is None or now_s + mover.remaining_s + resume_s <= mover.deadline_s
            return in_time and (resume_s <= 0.0 or job.job_id in due)

        decisions = dispatch(snapshot, ranked, held, may_preempt=may_preempt, admitted=newcomers,
                             infeasible=infeasible, may_cap=lambda job: job.job_id not in due,
                             may_move=may_move)
        waits = with_latest_starts(decisions.waits, promise, deadlines)
        # A job paused now must be resumed by its latest safe start too (`Reservation.pausable`).
        resumes = [promise.latest_start_s.get(pause.job_id) for pause in decisions.pauses]
        return replace(decisions, waits=waits, decide_again_s=_decide_again_s(
            [*(wait.latest_safe_start_s for wait in waits), *resumes], snapshot))

    def _deadline_s(self, job: JobView, now_s: float, overhead_s: float) -> float:
        """The job's deadline, or for a job without one, the end of its window for cheap hours."""
        if job.deadline_s is not None and not math.isinf(job.deadline_s):
            return job.deadline_s
        return max(job.submit_s + self.no_deadline_window_s, now_s + job.needed_s(overhead_s))

    def _reserve(self, snapshot: Snapshot, deadlines: Mapping[str, float]) -> Reservation:
        """The reservation plan (`reservation.reserve`) of every job with a promise to keep or to judge."""
        assert snapshot.prices is not None
        now_s, overhead_s = snapshot.now_s, snapshot.preempt_overhead_s
        outlook_end_s = snapshot.prices.end_s
        pinned: list[tuple[JobView, float]] = []
        running: list[Booking] = []
        unbroken: list[tuple[JobView, float]] = []
        bookings: list[Booking] = []
        running_phase, paused_phase = Phase.RUNNING, Phase.PAUSED
        for job in snapshot.jobs:  # (inlined helpers: this runs for every job of a long queue)
            deadline_s = deadlines[job.job_id]
            resume_s = overhead_s if job.resume_overhead_s is None else job.resume_overhead_s
            if job.phase is running_phase:
                if self._kept_running(job, overhead_s):
                    pinned.append((job, job.remaining_s))
                    continue
                # Held from now too; the plan checks whether it may be paused and resumed in time.
                needed_s = job.remaining_s + resume_s
                slack_past_s = 0.0  # slack past the outlook's end that booking only part of it left
                if deadline_s > outlook_end_s:
                    booked_s = max(job.remaining_s, needed_s - (deadline_s - outlook_end_s))
                    slack_past_s = deadline_s - outlook_end_s - (needed_s - booked_s)
                    needed_s, deadline_s = booked_s, outlook_end_s
                running.append(Booking(job, needed_s, deadline_s, True, resume_s, slack_past_s))
                continue
            needed_s = job.remaining_s + resume_s if job.phase is paused_phase else job.remaining_s
            # One that will not be paused once started, or one judged late already (never paused either),
            # may start only where it takes nobody's room.
            if job.at_risk or not job.preemptible or job.remaining_s < resume_s:
                unbroken.append((job, needed_s))
            if job.at_risk:
                continue
            if deadline_s > outlook_end_s:  # only the part that must run inside the outlook is booked
                needed_s -= deadline_s - outlook_end_s
                deadline_s = outlook_end_s
                if needed_s <= 0:
                    continue
            bookings.append(Booking(job, needed_s, deadline_s, job.admitted, resume_s))
        return reserve(snapshot.prices, now_s, snapshot.total_gpus, snapshot.budget_per_interval_w(), pinned,
                       bookings, self.reserve_margin, unbroken, running,
                       price_pause_guard_s=self.pause_guard_intervals * float(snapshot.prices.interval_s))

    def _runs_unbroken(self, job: JobView, default_overhead_s: float) -> bool:
        """Whether a job, once started, will not be paused until it ends (see `_kept_running`)."""
        return not job.preemptible or job.remaining_s < job.overhead_s(default_overhead_s)

    def _kept_running(self, job: JobView, default_overhead_s: float) -> bool:
        """Whether a running job is never paused (but for the power budget or a team's guarantee).

        It cannot stop; it is late already (a pause would add its resume to a late job); or it has less
        left to run than a resume would add. It may still be moved to another node for a job due now
        (`decide`'s `may_move`), at the cost of one resume: a promise kept outweighs a late job's resume.
        (Measured on the tuning half: refusing such moves broke one more promise, PJM 2014 rand17.)
        """
        return job.at_risk or self._runs_unbroken(job, default_overhead_s)

    def _requests(self, snapshot: Snapshot, deadlines: Mapping[str, float],
                  promise: Reservation) -> tuple[list[PlanRequest], list[str]]:
        """Each job's request to the planner (its tier, what it needs by when, whether it may be paused), and
        the jobs held unbroken that need none.

        A job held unbroken (it may not start now, below) takes no room now, so it needs no plan and no place
        in the order: a long queue of late jobs is not sorted. Where teams have quotas every job counts
        towards its team's guarantee in order: there each has a request (`held_unbroken`), planned as
        `_HELD_UNBROKEN`. (One loop with the decision's constants bound once, not a call per job: this runs
        for every job of a long queue.)
        """
        assert snapshot.prices is not None
        now_s, default_overhead_s = snapshot.now_s, snapshot.preempt_overhead_s
        interval_start_s = float(snapshot.prices.starts_s[0])
        running_phase, paused_phase = Phase.RUNNING, Phase.PAUSED
        infeasible, short, urgent, due = promise.infeasible, promise.short, promise.urgent, promise.due
        pausable, price_pausable = promise.pausable, promise.price_pausable
        unbroken_now = promise.unbroken_now
        short_starts_late_s = max(interval_start_s, now_s - SHORT_START_LAG_S) - 1e-6
        # A resume redoes work: while the plan is short of room (a job is late, or must start now), a pause
        # for price would take GPU time those jobs need, so none is made (with a resume overhead).
        plan_short = bool(short or urgent)
        requests: list[PlanRequest] = []
        held: list[str] = []
        quotas = bool(snapshot.quotas)
        for job in snapshot.jobs:
            job_id = job.job_id
            deadline_s = deadlines[job_id]
            overhead_s = default_overhead_s if job.resume_overhead_s is None else job.resume_overhead_s
            needed_s = job.remaining_s + overhead_s if job.phase is paused_phase else job.remaining_s
            if job.phase is running_phase:
                # Only a job the reservation plan found pausable may be paused (for price, or to make room
                # for a job that must start now); any other keeps running, since each pause adds its resume
                # to the work left (see `_kept_running`, and `Reservation.pausable`).
                tier = RUNNING if job_id in pausable else PINNED
            elif job.at_risk or job_id in infeasible:
                tier = AT_RISK  # late whatever happens: as soon as possible, in what the promises leave
            elif job_id in short:
                # The plan found it no room, but it may still finish if it runs from now: the plan's order
                # is a heuristic (several GPUs, unbroken bookings), so rather than being written off as late
                # the job runs ahead of jobs not yet due, and preempts flexible ones once it must start: at
                # its latest start alone, asked for (`_decide_again_s`), not at the start of the interval
                # that holds it. The plan counts whole intervals, so it cannot see that a job paused later
                # for it, with less left to run, still makes its own deadline where one paused at the
                # interval's start may not.
                # Late once that start passed more than `SHORT_START_LAG_S` ago (`reservation.due_alone`).
                # Due only if its start now keeps the other promises (`Reservation.rescuable`, a subset of the
                # short jobs `reservation.due_alone` finds due now); else it runs in the room they leave, a
                # job late by the plan not making others late too.
                latest_alone_s = deadline_s - needed_s  # its `latest_start_s`: a wait asks to decide then
                if promise.fluid or latest_alone_s < short_starts_late_s:
                    tier = AT_RISK
                elif job_id in promise.rescuable:
                    tier = DUE
                else:
                    tier = DUE_SOON
            elif job_id in urgent:
                tier = DUE
            elif job_id in due:
                tier = DUE_SOON
            elif now_s + needed_s > deadline_s + 1e-6:
                tier = AT_RISK  # too late whatever happens: as soon as possible
            else:
                tier = FLEXIBLE
            if tier >= AT_RISK and job_id not in unbroken_now and \
                    (tier == AT_RISK or not job.preemptible or job.remaining_s < overhead_s):
                # Started now it would run unbroken (a late job is never paused; `_runs_unbroken` inline) over
                # room promised to admitted jobs: it waits, until it is due or that room is free.
                if quotas:
                    requests.append(PlanRequest(job, needed_s, deadline_s, tier, None, True))
                else:
                    held.append(job_id)
                continue
            # A job started in the current price interval ran on these very prices: it is not paused for
            # price before the next one (else the order jobs are planned in makes it start and stop on one
            # price). One started in the last sliver before it was planned on it too (`_past_a_sliver`).
            finite = math.isfinite(overhead_s)
            pause_option_s = None
            if tier == RUNNING and job_id in price_pausable and job.pauses_today < self.max_pauses_per_day \
                    and (job.started_s is None or job.started_s < interval_start_s - MIN_SLICE_S) and finite \
                    and not (overhead_s > 0 and plan_short):
                pause_option_s = job.remaining_s + overhead_s
            # A flexible job's plan weighs its runs by their resumes (it may wait for an unbroken run: see
            # `Planner.fewer_runs`) unless the plan has jobs short of room: waiting spends slack they need.
            resume_s = overhead_s if finite and not short else 0.0
            requests.append(PlanRequest(job, needed_s, deadline_s, tier, pause_option_s, False, resume_s))
        return requests, held

    def _plan(self, snapshot: Snapshot, requests: list[PlanRequest],
              promise: Reservation) -> tuple[list[PlanRequest], dict[str, JobPlan], set[str], list[str]]:
        """Plan every request in tier order: the requests planned, in planning order, their plans, the jobs
        that borrow beyond their team's guarantee, and the jobs of a long queue's tail, not planned (none
        is left room now: `_NOT_PLANNED`; with quotas they stay in the order, each with that plan)."""
        assert snapshot.prices is not None
        keys = _urgency_keys(requests, promise)
        if snapshot.quotas:
            # A team's guarantee outranks keeping another team's borrowing job running: running and
            # flexible jobs form one group, inside which jobs within their team's guarantee go first.
            keys = [(RUNNING if key[0] == FLEXIBLE else key[0], key[0], *key[1:]) for key in keys]
            keys = _guaranteed_first(requests, keys, snapshot.quotas)
            borrowing = {key[-1] for key in keys if key[1]}
        else:
            borrowing = set()
        outlook_end_s = snapshot.prices.end_s
        # While the promises are pressed (a job is short of room, or must start now), gangs keep their arrival
        # slack too (without it they broke more promises) and the flexible jobs are planned one by one, least
        # laxity first, the tightest ahead (the joint plan missed more there): bench/README.md.
        pressed = bool(promise.short or promise.urgent)
        planner = Planner(snapshot.prices, snapshot.now_s, snapshot.total_gpus,
                          snapshot.budget_per_interval_w(), self.arrival_slack, self.pause_margin,
                          self.max_pauses_per_day, 1.0 if pressed else self.gang_arrival_room)
        ordered = [requests[i] for i in sorted(range(len(requests)), key=keys.__getitem__)]
        plans: dict[str, JobPlan] = {}
        early_starts = promise.early_starts
        # The flexible jobs (last in the order without quotas) are planned together where the program says
        # what the cluster will do (`joint_plan`): after every other job, in the order it starts them.
        flexible = [] if snapshot.quotas or self.joint_margin is None or len(ordered) > FULL_PLAN_JOBS else \
            [r for r in ordered if r.tier == FLEXIBLE]
        joint = not pressed and joint_applies(planner, flexible, snapshot.preempt_overhead_s, snapshot.jobs)
        if joint:
            ordered = [r for r in ordered if r.tier != FLEXIBLE]
        position = 0  # among the jobs that may start now
        exhausted = False  # once nothing is left now, nothing will be (plans only take room)
        not_planned: list[str] = []
        for at, request in enumerate(ordered):
            if request.held_unbroken:  # it may not start now (see `_requests`), so it takes no room now
                plans[request.job.job_id] = _HELD_UNBROKEN
                continue
            position += 1
            if position > FULL_PLAN_JOBS and request.tier >= AT_RISK and \
                    (exhausted or planner.now_exhausted()):
                exhausted = True
                # A very long queue: nothing is left now for this job, and planning its later intervals
                # changes nothing for the jobs before it, so it is not planned in this decision (a queue
                # of 100,000 costs what the GPUs can start). Its promise is the reservation plan's.
                if not snapshot.quotas:  # ordered by tier: so is every job after it (the queue's tail)
                    not_planned = [r.job.job_id for r in ordered[at:]]
                    ordered = ordered[:at]
                    break
                plans[request.job.job_id] = _NOT_PLANNED
                continue
            # A flexible job the plan runs before its reservation needs room to resume if a due job pauses
            # it (`early_starts`): asked here, in the order dispatch starts jobs, for those that run now.
            job_id = request.job.job_id
            asked = early_starts is not None and request.tier == FLEXIBLE and early_starts.asks(job_id)
            may_start_now = early_starts.may_start if asked else None
            plan = planner.plan(_within(request, outlook_end_s), may_start_now)
            plans[job_id] = _HELD_UNBROKEN if plan is None else plan
        if joint:  # in what the other tiers left, in the program's order (most of the current interval first)
            assert self.joint_margin is not None
            within = [_within(r, outlook_end_s) for r in flexible]
            pairs = plan_jointly(planner, within, self.joint_margin) or [(r, None) for r in within]
            by_id = {r.job.job_id: r for r in flexible}
            for request, joint_plan in pairs:  # (a solver that failed leaves them to the greedy plan)
                job_id = request.job.job_id
                asked = early_starts is not None and early_starts.asks(job_id)
                may_start_now = early_starts.may_start if asked else None
                plan = planner.plan(request, may_start_now) if joint_plan is None else \
                    planner.place(request, joint_plan, may_start_now)
                plans[job_id] = _HELD_UNBROKEN if plan is None else plan
                ordered.append(by_id[job_id])
        return ordered, plans, borrowing, not_planned


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
    def later(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[1:]

    # Every per-interval series moves on with the prices: the events' caps, the market price, the carbon.
    rest = PriceOutlook(outlook.starts_s[1:], outlook.interval_s, outlook.price_per_mwh[1:],
                        outlook.known[1:], market_price_per_mwh=later(outlook.market_price_per_mwh),
                        carbon_g_per_kwh=later(outlook.carbon_g_per_kwh))
    return replace(snapshot, now_s=first_end_s, prices=rest,
                   grid_cap_w=_caps_from_boundary(snapshot.grid_cap_w))


def _shrink_forecast(snapshot: Snapshot, shrink: float) -> Snapshot:
    """The snapshot with the outlook's estimated (not known) values pulled `shrink` of the way toward the
    mean of its known ones: `mean + (1 - shrink) * (estimate - mean)`.

    An estimate past the known horizon repeats recent days' shape (`factory.prices.forecast`), and on a
    market the policy has not seen that shape is often wrong by more than its swing: planned on as if it
    were published, a job with a long window waits for an estimated cheap hour that never comes and ends
    in a dear one. Shrinking toward the known mean keeps the estimate's ordering (cheap nights stay
    cheaper) and weakens how much it pulls work past the prices that are certain. Known values, the
    market price and the carbon series used for per-job limits are left as they are; an outlook with
    nothing known, or nothing estimated, is returned unchanged.
    """
    outlook = snapshot.prices
    assert outlook is not None
    if shrink == 0.0:
        return snapshot
    known = outlook.known.astype(bool, copy=False)
    if known.all() or not known.any():
        return snapshot
    values = np.array(outlook.price_per_mwh, dtype=np.float64)  # a copy: outlooks are shared and cached
    known_values = values[known]
    mean = float(np.nanmean(known_values)) if np.isfinite(known_values).any() else math.nan
    if not math.isfinite(mean):  # no finite known value to shrink toward
        return snapshot
    estimated = ~known
    values[estimated] = mean + (1.0 - shrink) * (values[estimated] - mean)
    return replace(snapshot, prices=replace(outlook, price_per_mwh=values))


def _caps_from_boundary(caps_w: np.ndarray | None) -> np.ndarray | None:
    """The events' caps per interval as seen from the end of the current one.

    The next interval's cap counts an event that starts anywhere within it, which is not under way at the
    boundary yet: the interval from the boundary keeps the looser of the two, and the decision due at the
    event's start (the simulator and the live scheduler both decide then) applies it. Nothing is paused
    before an event starts.
    """
    if caps_w is None or len(caps_w) < 2:
        return None if caps_w is None else caps_w[1:]
    rest = np.array(caps_w[1:], dtype=float)
    rest[0] = max(float(caps_w[0]), float(caps_w[1]))
    return rest


def _urgency_keys(requests: list[PlanRequest], promise: Reservation) -> list[tuple[int, float, float, str]]:
    """Each request's planning key (tier, laxity, deadline, id): least laxity first within a tier; due jobs by
    their latest safe start (the order their reservations begin in, so that one started early never takes
    the room of one due before it); at-risk jobs by how long they have been due.
    """
    latest_start_s = promise.latest_start_s
    keys = []
    for request in requests:  # (one loop, not a call per request: this runs for every job of the queue)
        tier, deadline_s, job = request.tier, request.deadline_s, request.job
        if tier == DUE or tier == DUE_SOON:
            keys.append((tier, latest_start_s.get(job.job_id, -math.inf), deadline_s, job.job_id))
        elif tier == AT_RISK:
            keys.append((tier, deadline_s - job.submit_s, deadline_s, job.job_id))
        else:
            keys.append((tier, deadline_s - request.needed_s, deadline_s, job.job_id))
    return keys


def _within(request: PlanRequest, outlook_end_s: float) -> PlanRequest:
    """Only the part of the work that must happen inside the outlook is planned in it."""
    if request.deadline_s <= outlook_end_s:
        return request
    after_s = request.deadline_s - outlook_end_s
    pause_s = None if request.pause_option_s is None else max(0.0, request.pause_option_s - after_s)
    return request._replace(needed_s=max(0.0, request.needed_s - after_s), deadline_s=outlook_end_s,
                            pause_option_s=pause_s)


def _decide_again_s(latest_starts: list[float | None], snapshot: Snapshot) -> float | None:
    """The earliest of the latest safe starts (of jobs not running) before the current interval ends.

    A job booked later in this interval counts on a decision by then: a run ending first, as planned. That
    run's job may have been paused by this very decision, so the release never comes; a job paused now
    may have to resume before the interval ends. The policy asks to be asked again at the booked start,
    where the job is due from now and starts whatever the price.
    """
    assert snapshot.prices is not None
    interval_end_s = float(snapshot.prices.starts_s[0]) + snapshot.prices.interval_s
    starts = [start_s for start_s in latest_starts if start_s is not None
              and snapshot.now_s + MIN_SLICE_S < start_s < interval_end_s - MIN_SLICE_S]
    return min(starts) if starts else None
