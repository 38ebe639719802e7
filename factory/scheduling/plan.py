"""The interval planner behind `price-aware`: who runs in which price interval, from now to the deadlines.

Nomenclature:
  interval k -- the k-th interval of the price outlook; interval 0 contains now and has only
                `usable[0] = its end - now` seconds left.
  plan       -- the intervals a job is given: for a preemptible job the cheapest intervals in its
                window with room left, in no more unbroken runs than its pause cap leaves it
                (`within_runs`), for a non-preemptible one the cheapest contiguous run.
  room       -- whole GPUs per interval, as the cluster runs them: decisions come at interval starts
                and when a run ends, so a job planned in an interval starts at its start and holds
                its GPUs to its end, unless it finishes in it (the end of a run is a decision: its
                GPUs are free from then). A job that does not fit at an interval's start may still
                be planned later in it, from when jobs finishing in it have freed enough GPUs; so two
                short jobs share an hour of one GPU, one after the other, as they will in the cluster.
                Power is counted the same way, in watts held from the interval's start (a job that does
                not fit at the start of an interval is not planned later in it under a power budget).
  laxity     -- time before the deadline that the job may spend not running:
                `deadline - now - needed_s`.

Order (each job is planned in what the earlier ones left):
  1. running non-preemptible jobs, pinned from now;
  2. admitted jobs and jobs not yet admitted, least laxity first: a job that must run now gets now,
     the flexible ones get the cheap intervals that remain (where they compete for room, `price_aware`
     plans them together instead, by `joint_plan`, and reserves each plan with `place`). A job whose
     window other jobs already use is planned to finish `arrival_slack` x its run time early, if it can
     (that slack is room for jobs not yet arrived), else to its deadline; a gang whose plan to its deadline
     leaves `gang_arrival_room` of the GPUs free beside it in every interval of that plan keeps that plan
     (`price_aware` passes 1, the slack always, while a promise is pressed). A new job whose plan covers
     its run time before its deadline is admitted feasible, otherwise it is reported infeasible at
     admission;
  3. infeasible (at-risk) jobs, and jobs whose deadline can no longer be met, as soon as possible in
     what remains (a non-preemptible one in the earliest unbroken run: once started it cannot stop).
  If a plan leaves an admitted job short (a newcomer with less laxity took its room, or the greedy
  choice is not exact), the short admitted jobs are moved to the front and the plan redone, so a job
  admitted as feasible is not crowded out by later arrivals: they are the ones reported infeasible.

Invariants:
  * Pure numpy on the outlook; no I/O, deterministic (stable sorts, ties to the earlier interval,
    so a job that is indifferent runs now).
  * A plan is realisable as the cluster runs it: in every interval, the GPUs (and watts) of the jobs
    planned in it never exceed the cluster's at any moment, given that a job holds its GPUs from its
    start in the interval to the interval's end or its finish.
  * Per job O(intervals) vectorised work (about 10 array operations), plus, for the intervals full at
    their start where jobs finish, a look at their events (cached per interval and job width).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from factory.scheduling.model import JobView, Phase, PriceOutlook, budget_array_w
from factory.scheduling.runs import count_runs, run_bounds

EPS_S = 1e-6
MIN_SLICE_S = 1.0  # less room than this in an interval is no room (no plans of dust)
MIN_DRAW_W = 1.0
DAY_S = 86400.0
MAX_INTERVAL_EVENTS = 64  # releases and later starts within one interval that are looked at
# Planning tiers, in order: running jobs that are not to be paused (from now); jobs that must start now
# by the reservation plan (as soon as possible, preempting flexible jobs if need be); running preemptible
# jobs (kept, or paused if that pays: a queued job that is not urgent never displaces one, which would cost
# a resume); jobs due later in the current price interval (in the room left now, else at the release their
# reservation counts on); jobs reported infeasible (as soon as possible in what is left); flexible jobs
# (the cheapest room before their deadline, least laxity first).
PINNED, DUE, RUNNING, DUE_SOON, AT_RISK, FLEXIBLE = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job's intervals (indices into the outlook, ascending) and whether they cover its run time."""

    job_id: str
    intervals: np.ndarray
    covered: bool
    cost_index: float  # sum of price x seconds over the plan (a relative cost, for comparisons)
    seconds: np.ndarray | None = None  # run time planned in each of `intervals`
    # What the jobs planned before this one had left it: "gpus" or "power" if too little to start now
    # (for a non-preemptible job: to run unbroken from now), None if enough (running later is then a
    # price choice).
    crowded_now: str | None = None
    # Seconds after now at which the job can start within the current interval, when its plan uses
    # the current interval only after jobs planned now have finished and freed enough GPUs.
    later_start_s: float | None = None

    @property
    def runs_now(self) -> bool:
        """Whether the plan starts the job now (it includes the current interval, from now)."""
        return bool(len(self.intervals)) and int(self.intervals[0]) == 0 and self.later_start_s is None


class PlanRequest(NamedTuple):
    """A job to plan: which tier it belongs to, how long it needs and until when."""

    job: JobView
    needed_s: float
    deadline_s: float
    tier: int
    pause_option_s: float | None = None  # running and may be paused for price: needed if paused now
    held_unbroken: bool = False  # a queued non-preemptible job that may not start before it is due
    resume_s: float = 0.0  # what each resume would cost it (a flexible job's plan weighs its runs by it)


class Planner:
    """Reserves GPU-seconds and watt-seconds per interval of one price outlook, job after job."""

    def __init__(self, outlook: PriceOutlook, now_s: float, total_gpus: int,
                 power_budget_w: float | np.ndarray | None, arrival_slack: float = 0.0,
                 pause_margin: float = 0.0,
                 max_pauses_per_day: int = 10**9, gang_arrival_room: float = 1.0) -> None:
        self.outlook = outlook
        starts = np.asarray(outlook.starts_s, dtype=float)
        self.effective_start_s = np.maximum(starts, now_s)
        self.usable_s = np.maximum(0.0, starts + outlook.interval_s - self.effective_start_s)
        self.price = np.asarray(outlook.price_per_mwh, dtype=float)
        self.order = np.argsort(self.price, kind="stable")  # cheapest first, earlier on ties
        self.sorted_start_s = self.effective_start_s[self.order]
        self.sorted_usable_s = self.usable_s[self.order]
        self.sorted_price = self.price[self.order]
        self.now_position = int((self.order == 0).nonzero()[0][0])  # the current interval's, in `order`
        self.total_gpus = total_gpus
        self.free_gpu_s = total_gpus * self.usable_s  # GPU-seconds, for what is planned where
        self.capacity_gpu_s = self.free_gpu_s.copy()
        # The first interval where a job planned so far holds GPU-seconds (len: none), kept by `reserve`:
        # `free_gpu_s < capacity_gpu_s - EPS_S` there and nowhere before it.
        self.first_shared = len(starts)
        self.arrival_slack, self.gang_arrival_room = arrival_slack, gang_arrival_room
        self.pause_margin = pause_margin
        self.max_pauses_per_day = max_pauses_per_day
        self.intervals = np.arange(len(starts))
        # GPUs free at each interval's start (now, for the current interval): a job planned in an
        # interval holds its GPUs from there.
        self.free_gpus_at_start = np.full(len(starts), float(total_gpus))
        # Watts of the power budget free at each interval's start (now, for the current interval).
        self.free_power_at_start_w = budget_array_w(power_budget_w, len(starts))
        # Within an interval, in seconds after its (effective) start: GPUs freed by jobs planned to finish
        # in it, and GPUs taken after such a release by jobs that could not start at its start. Only
        # without a power budget, and for a few events per interval (see `_later_s`).
        self.releases: dict[int, list[tuple[float, int]]] = {}
        self.later_starts: dict[int, list[tuple[float, int]]] = {}
        self.has_releases = np.zeros(len(starts), dtype=bool)
        self.power_budget_w = power_budget_w
        self.later_allowed = power_budget_w is None
        self._later_cache: dict[int, dict[int, float | None]] = {}

    # -- room ------------------------------------------------------------------------------------

    def _room_s(self, job: JobView, index: np.ndarray | slice, usable_s: np.ndarray) -> np.ndarray:
        """Seconds `job` can run in each interval: from when its GPUs are free, within the power left.

        Returns `usable_s` itself where nothing is blocked (callers must not write into the result).
        """
        fits = self.free_gpus_at_start[index] >= job.num_gpus
        if job.draw_w > 0 and self.power_budget_w is not None:
            fits &= self.free_power_at_start_w[index] >= job.draw_w - EPS_S
        if fits.all():
            return usable_s
        blocked = (~fits).nonzero()[0]
        room = usable_s.copy()
        room[blocked] = 0.0
        if self.later_allowed:
            intervals = self.intervals[index][blocked]
            with_releases = self.has_releases[intervals]
            for position, interval in zip(blocked[with_releases].tolist(), intervals[with_releases].tolist(),
                                          strict=True):
                later_s = self._later_s(interval, job.num_gpus)
                if later_s is not None:
                    room[position] = min(max(0.0, usable_s[position] - later_s),
                                         self.free_gpu_s[interval] / job.num_gpus)
        return room

    def _later_s(self, interval: int, num_gpus: int) -> float | None:
        """When, in seconds after the interval's start, `num_gpus` GPUs are free for the rest of it.

        None if never (or not looked at: more than `MAX_INTERVAL_EVENTS` releases and later starts in it,
        where the answer is left to a later decision).
        """
        cached = self._later_cache.setdefault(interval, {})
        if num_gpus in cached:
            return cached[num_gpus]
        releases = self.releases.get(interval, [])
        later = self.later_starts.get(interval, [])
        answer = None
        if len(releases) + len(later) <= MAX_INTERVAL_EVENTS:
            points = sorted({offset for offset, _ in [*releases, *later]})
            free = [self.free_gpus_at_start[interval]
                    + sum(gpus for offset, gpus in releases if offset <= point + EPS_S)
                    - sum(gpus for offset, gpus in later if offset <= point + EPS_S)
                    for point in points]
            lowest_after = list(np.minimum.accumulate(free[::-1]))[::-1]  # free GPUs from each point on
            answer = next((point for point, low in zip(points, lowest_after, strict=True)
                           if low >= num_gpus), None)
        cached[num_gpus] = answer
        return answer

    @property
    def free_gpus_now(self) -> float:
        """GPUs not planned for any job now."""
        return float(self.free_gpus_at_start[0])

    @property
    def free_power_now_w(self) -> float:
        """Watts of the power budget not planned for any job now (inf without a budget)."""
        return float(self.free_power_at_start_w[0])

    def fits_now(self, job: JobView) -> bool:
        """Whether the job's GPUs and power are still free at once in the current interval."""
        return self.free_gpus_now >= job.num_gpus and self.free_power_now_w >= job.draw_w - EPS_S

    def now_exhausted(self) -> bool:
        """Whether not even one GPU (or its power) is left in the current interval."""
        return bool(self.free_gpus_now < 1 or self.free_power_now_w < MIN_DRAW_W)

    # -- one job -------------------------------------------------------------------------------

    def room_before(self, job: JobView, deadline_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Seconds `job` can run in each interval before `deadline_s`, in price order (`self.order`), and the
        positions with room (`cheapest`'s candidates). Valid until the next `reserve`."""
        usable = np.minimum(self.sorted_usable_s, deadline_s - self.sorted_start_s)
        room = self._room_s(job, self.order, usable)
        return room, (room > MIN_SLICE_S).nonzero()[0]

    def cheapest(self, job: JobView, needed_s: float, deadline_s: float, *,
                 without_now: bool = False, with_now: bool = False,
                 room: tuple[np.ndarray, np.ndarray] | None = None) -> JobPlan:
        """The cheapest intervals with room before `deadline_s` that add up to `needed_s`.

        `room`: `room_before(job, deadline_s)`, when the caller has it (nothing reserved since).
        """
        room_s, candidates = room if room is not None else self.room_before(job, deadline_s)
        now = self.now_position
        if (without_now or with_now) and room_s[now] > MIN_SLICE_S:
            others = candidates[candidates != now]
            candidates = np.concatenate(([now], others)) if with_now else others
        return self._take(job, candidates, room_s, self.order, self.sorted_price, needed_s)

    def earliest(self, job: JobView, needed_s: float, deadline_s: float = math.inf) -> JobPlan:
        """Intervals with room from now on, until `needed_s` is covered (as soon as possible).

        Covered only if that happens by `deadline_s`.
        """
        usable = self.usable_s if math.isinf(deadline_s) else \
            np.maximum(0.0, np.minimum(self.usable_s, deadline_s - self.effective_start_s))
        room = self._room_s(job, slice(None), usable)
        candidates = (room > MIN_SLICE_S).nonzero()[0]
        return self._take(job, candidates, room, self.intervals, self.price, needed_s, ascending=True)

    @staticmethod
    def _take(job: JobView, candidates: np.ndarray, room_s: np.ndarray, interval_at: np.ndarray,
              price_at: np.ndarray, needed_s: float, ascending: bool = False) -> JobPlan:
        """The first `candidates` (positions into `room_s`, `interval_at`, `price_at`) that cover `needed_s`.

        In interval order (`ascending`: the candidates' intervals ascend already). Only the positions taken
        are looked up (ndarray methods rather than numpy's functions, too: this runs for every job planned).
        """
        room_taken = room_s[candidates]  # a copy: its last value is cut below
        seconds = room_taken.cumsum()
        count = int(seconds.searchsorted(needed_s - EPS_S)) + 1
        covered = count <= len(candidates)
        taken = candidates[:count]
        used_s = room_taken[:count]
        if covered and len(used_s):
            used_s[-1] -= seconds[count - 1] - needed_s  # the last interval is used only in part
        cost = float(price_at[taken] @ used_s)
        chosen = interval_at[taken]
        if ascending:
            return JobPlan(job.job_id, chosen, covered, cost, seconds=used_s)
        order = chosen.argsort()
        return JobPlan(job.job_id, chosen[order], covered, cost, seconds=used_s[order])

    def contiguous(self, job: JobView, needed_s: float, deadline_s: float, *, pinned: bool,
                   earliest: bool = False) -> JobPlan:
        """The cheapest (or `earliest`) unbroken run that finishes by `deadline_s` (from now if `pinned`).

        Every interval of the run must have the job's GPUs and power free for all of its usable time.
        """
        usable = self.usable_s
        count_all = len(usable)
        room = (self._room_s(job, slice(None), usable) >= usable - EPS_S) & (usable > EPS_S)
        interval_s = self.outlook.interval_s
        # Intervals needed when starting at k: interval 0 is short, the others are whole.
        lengths = np.full(count_all, math.ceil(needed_s / interval_s - EPS_S), dtype=np.int64)
        lengths[0] = 1 + max(0, math.ceil((needed_s - usable[0]) / interval_s - EPS_S))
        ends = np.arange(count_all) + lengths
        finish_s = self.effective_start_s + needed_s
        blocked = np.concatenate([[0], np.cumsum(~room)])
        price_s = np.concatenate([[0.0], np.cumsum(self.price * usable)])
        fits = ends <= count_all
        ok = fits.copy()
        ok[fits] = blocked[ends[fits]] - blocked[np.flatnonzero(fits)] == 0
        if pinned:
            ok[1:] = False
        feasible = ok & (finish_s <= deadline_s + EPS_S)
        pool = feasible if feasible.any() else ok
        if not pool.any():
            return JobPlan(job.job_id, np.empty(0, dtype=np.int64), False, 0.0)
        starts = np.flatnonzero(pool)
        # The whole intervals before the last one, and the last one only up to the finish: counting the
        # last one whole would favour a run that ends just inside a dear interval over one that does not.
        last = ends[starts] - 1
        cost = price_s[last] - price_s[starts] + \
            self.price[last] * (finish_s[starts] - self.effective_start_s[last])
        choice = 0 if earliest else int(np.argmin(cost))
        best = int(starts[choice])
        intervals = np.arange(best, ends[best])
        used_s = usable[intervals].copy()
        used_s[-1] = finish_s[best] - self.effective_start_s[intervals[-1]]
        return JobPlan(job.job_id, intervals, bool(feasible[best]), float(cost[choice]), seconds=used_s)

    def reserve(self, job: JobView, plan: JobPlan) -> None:
        """Hold the job's GPUs, GPU-seconds and watt-seconds in each planned interval.

        Its GPUs are held from each interval's start (or from when they are free, `_later_s`) to its
        end, except in the interval where it finishes: freed from then.
        """
        intervals, seconds = plan.intervals, plan.seconds
        if seconds is None or not len(intervals):
            return
        gpus = job.num_gpus
        first, last = int(intervals[0]), int(intervals[-1])
        self.free_gpu_s[intervals] -= gpus * seconds
        if first < self.first_shared:  # (intervals ascend: no other can move it earlier)
            shared = intervals[self.free_gpu_s[intervals] < self.capacity_gpu_s[intervals] - EPS_S]
            if len(shared):
                self.first_shared = min(self.first_shared, int(shared[0]))
        fits = self.free_gpus_at_start[intervals] >= gpus
        if self.power_budget_w is not None:
            fits &= self.free_power_at_start_w[intervals] >= job.draw_w - EPS_S
        if first == 0:
            fits[0] = plan.later_start_s is None  # (`runs_now`: the plan starts in the current interval)
        # (Most plans fit from each interval's start: then no mask is applied, a plan per job of the queue.)
        all_fit = bool(fits.all())
        held_from_start = intervals if all_fit else intervals[fits]
        self.free_gpus_at_start[held_from_start] -= gpus
        if self.power_budget_w is not None:  # (without one, every interval's free watts stay infinite)
            self.free_power_at_start_w[held_from_start] -= job.draw_w
        held_later = [] if all_fit else intervals[~fits].tolist()
        for interval in held_later:
            later_s = plan.later_start_s if interval == 0 else self._later_s(interval, gpus)
            if later_s is None:  # planned there by GPU-seconds alone (a power budget): from its start
                later_s = 0.0
            self.later_starts.setdefault(interval, []).append((later_s, gpus))
        last_s = float(seconds[-1])
        if plan.covered and last_s < self.usable_s[last] - EPS_S:
            # It finishes within its last interval: that ends a run, so a decision follows.
            start_s = 0.0 if all_fit or fits[-1] else self.later_starts[last][-1][0]
            self.releases.setdefault(last, []).append((start_s + last_s, gpus))
            self.has_releases[last] = True
        if self._later_cache:  # what `_later_s` knew of the intervals this job now holds is stale
            for interval in self._later_cache.keys() & {*held_from_start.tolist(), *held_later}:
                del self._later_cache[interval]

    # -- a request -----------------------------------------------------------------------------

    def plan(self, request: PlanRequest,
             may_start_now: Callable[[str], bool] | None = None) -> JobPlan | None:
        """Plan one request (by its tier's rule) and reserve what it gets.

        `may_start_now(job_id)`, asked only if the plan starts the job now: False leaves it unplanned (None).
        """
        job = request.job
        if request.needed_s <= EPS_S:
            return JobPlan(job.job_id, np.empty(0, dtype=np.int64), True, 0.0)
        plan = None
        if self.arrival_slack > 0 and (request.tier == RUNNING or request.tier == FLEXIBLE):
            early_s = request.deadline_s - self.arrival_slack * request.needed_s
            if early_s >= self.effective_start_s[0] + request.needed_s and self._shared_before(early_s):
                plan = self._with_arrival_slack(request, early_s)
        if plan is None:
            plan = self._choose(request)
        return self.place(request, plan, may_start_now)

    def place(self, request: PlanRequest, plan: JobPlan,
              may_start_now: Callable[[str], bool] | None = None) -> JobPlan | None:
        """Reserve `plan`, chosen for `request` in the room left now (by `plan`, or `joint_plan`).

        `may_start_now(job_id)`, asked only if the plan starts the job now: False leaves it unplanned (None).
        """
        job = request.job
        if len(plan.intervals) and int(plan.intervals[0]) == 0 and not self.fits_now(job):
            later_s = self._later_s(0, job.num_gpus) if self.later_allowed else None
            plan = replace(plan, later_start_s=later_s)  # the current interval, later
        if may_start_now is not None and plan.runs_now and not may_start_now(job.job_id):
            return None
        # Choosing a plan changes no room, so this still sees what the jobs before this one left it.
        crowded_now = None if plan.runs_now else self._crowded_now(job, request.needed_s)
        self.reserve(job, plan)
        return replace(plan, crowded_now=crowded_now) if crowded_now else plan

    def _shared_before(self, deadline_s: float) -> bool:
        """Whether any job planned so far uses GPUs before `deadline_s`."""
        return self.first_shared < int(self.effective_start_s.searchsorted(deadline_s))

    def _with_arrival_slack(self, request: PlanRequest, early_s: float) -> JobPlan | None:
        """The plan to `early_s`, room for jobs not yet arrived; where that cannot cover the run time, None
        (for a gang, its plan to the deadline, already made).

        A gang's plan to its deadline is kept instead where it leaves at least `gang_arrival_room` of the
        cluster's GPUs free beside it at the start of every interval it uses, among the jobs planned so far:
        arrivals find room there without the slack. Not under a power budget (free GPUs may lack the watts).
        """
        job, to_deadline = request.job, None
        if job.num_gpus > 1 and self.gang_arrival_room < 1.0 and self.power_budget_w is None:
            to_deadline = self._choose(request)
            free = self.free_gpus_at_start[to_deadline.intervals] - job.num_gpus
            if len(free) and float(free.min()) >= self.gang_arrival_room * self.total_gpus:
                return to_deadline
        early = self._choose(request._replace(deadline_s=early_s))
        return early if early.covered else to_deadline

    def _choose(self, request: PlanRequest) -> JobPlan:
        """The plan `request`'s tier calls for, in the room left; reserves nothing."""
        job = request.job
        if request.tier == PINNED:  # from now: unbroken, or (a preemptible job kept running) in any room
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=True) \
                if not job.preemptible else self.earliest(job, request.needed_s)
        elif request.tier == DUE or request.tier == DUE_SOON:  # as soon as possible (also when late)
            plan = self.earliest(job, request.needed_s) if job.preemptible else \
                self.contiguous(job, request.needed_s, math.inf, pinned=False, earliest=True)
        elif request.tier == AT_RISK:
            plan = self.earliest(job, request.needed_s) if job.preemptible else \
                self.contiguous(job, request.needed_s, math.inf, pinned=False, earliest=True)
        elif not job.preemptible and job.phase is not Phase.RUNNING:
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=False)
        elif request.tier == RUNNING:  # kept, unless pausing pays (and it may be paused)
            plan = self._run_or_pause(request)
        else:
            plan = self.cheapest(job, request.needed_s, request.deadline_s)
            if job.preemptible and len(plan.intervals) and plan.intervals[0] == 0:
                # As many runs as it may be paused, plus one. (Only for a plan that starts now: fewer runs
                # never start a job that would have waited, and a long queue's waiting jobs skip the cost.)
                plan = self.within_runs(job, plan, request.needed_s, request.deadline_s,
                                        self.pauses_left(job, request.deadline_s) + 1) or plan
                if request.resume_s > 0 and count_runs(plan.intervals) > 1:
                    plan = self.fewer_runs(request, plan)
        return plan

    def fewer_runs(self, request: PlanRequest, plan: JobPlan) -> JobPlan:
        """A flexible job's plan in the number of runs that costs least once each resume is paid for.

        Started now, the job will be paused later only where that pays for its resume (`_run_or_pause`),
        so a plan that starts it now for its cheap hours in scattered runs may leave it running through the
        dear ones between them. Each run after the first is charged a resume (its energy at the plan's mean
        price) plus `pause_margin` of one, as a pause must save; fewer runs (one: the cheapest unbroken run,
        which may start later, so the job waits) are kept unless more of them save that much.
        """
        job = request.job
        run_cost = request.resume_s * _mean_price(plan) * (1.0 + self.pause_margin)
        best, best_cost = plan, plan.cost_index + (count_runs(plan.intervals) - 1) * run_cost
        for runs in range(count_runs(plan.intervals) - 1, 0, -1):
            fewer = self.within_runs(job, plan, request.needed_s, request.deadline_s, runs)
            if fewer is None or not fewer.covered:
                break
            cost = fewer.cost_index + (count_runs(fewer.intervals) - 1) * run_cost
            if cost <= best_cost + EPS_S:
                best, best_cost = fewer, cost
        return best

    def _crowded_now(self, job: JobView, needed_s: float) -> str | None:
        """What the jobs planned so far left too little of for `job` to start now: "gpus", "power", None."""
        if self.free_gpus_now < job.num_gpus:
            return "gpus"
        if self.free_power_now_w < job.draw_w - EPS_S:
            return "power"
        if not job.preemptible and job.phase is not Phase.RUNNING:  # it would run unbroken from now
            span = 1 + max(0, math.ceil((needed_s - self.usable_s[0]) / self.outlook.interval_s - EPS_S))
            if (self.free_gpus_at_start[1:span] < job.num_gpus).any():
                return "gpus"
            if (self.free_power_at_start_w[1:span] < job.draw_w - EPS_S).any():
                return "power"
        return None

    def _run_or_pause(self, request: PlanRequest) -> JobPlan:
        """A running preemptible job: pause it only if that pays for its resumes, with a margin.

        Both plans are held to the pauses the cap leaves (`within_runs`): kept, the job's current run plus
        one run per pause left; paused, one run per pause left, the pause now included. Each run of the
        paused plan carries a resume overhead (its energy at the kept plan's mean price), and its saving
        against keeping the job running must beat `pause_margin` x one overhead's cost on top, so that a
        saving the overheads would eat, or one that an estimate beyond the known prices overstates, is no
        reason to stop a job.
        """
        job = request.job
        room = self.room_before(job, request.deadline_s)  # its plans below share it: none reserves anything
        if request.pause_option_s is None:
            return self.cheapest(job, request.needed_s, request.deadline_s, with_now=True, room=room)
        free_plan = self.cheapest(job, request.needed_s, request.deadline_s, room=room)
        if free_plan.runs_now:
            return free_plan  # its cheapest plan keeps it running anyway (one plan, not three: a long queue)
        pauses_left = self.pauses_left(job, request.deadline_s)
        keep = self.cheapest(job, request.needed_s, request.deadline_s, with_now=True, room=room)
        if not free_plan.covered or not keep.runs_now or pauses_left < 1:
            return keep
        keep = self.within_runs(job, keep, request.needed_s, request.deadline_s, pauses_left + 1,
                                keep_now=True) or keep
        # Without a resume overhead the paused plan is the free one, which left the current interval out.
        paused = free_plan if request.pause_option_s == request.needed_s else \
            self.cheapest(job, request.pause_option_s, request.deadline_s, without_now=True, room=room)
        paused = self.within_runs(job, paused, request.pause_option_s, request.deadline_s, pauses_left)
        if paused is None or not paused.covered:
            return keep  # it could not finish, or not within the pauses the cap leaves
        overhead_s = request.pause_option_s - request.needed_s
        resume_cost = overhead_s * _mean_price(keep)
        # The paused plan pays a resume for each of its runs (its first is in `pause_option_s` already); the
        # kept plan's later runs are not charged theirs, which leans towards keeping a job running.
        paused_cost = paused.cost_index + (count_runs(paused.intervals) - 1) * resume_cost
        return paused if keep.cost_index - paused_cost > self.pause_margin * resume_cost + EPS_S else keep

    def pauses_left(self, job: JobView, deadline_s: float) -> int:
        """Pauses the cap (`max_pauses_per_day` in any 24 h) leaves the job from now to `deadline_s`.

        Today's left, plus a day's worth for each whole day of the window after the first (conservative:
        today's pauses leave the 24 h count one by one within the next day).
        """
        if self.max_pauses_per_day >= 10**6:
            return self.max_pauses_per_day
        days = max(0, int((deadline_s - self.effective_start_s[0]) // DAY_S))
        return max(0, self.max_pauses_per_day - job.pauses_today) + self.max_pauses_per_day * days

    def within_runs(self, job: JobView, plan: JobPlan, needed_s: float, deadline_s: float, max_runs: int,
                    *, keep_now: bool = False) -> JobPlan | None:
        """`plan` in at most `max_runs` unbroken runs (each later one is a pause and a resume); None if none.

        The cheapest intervals are often scattered (an hour a little dearer between two cheap ones), and a
        job paused at each gap would spend its pauses on small savings. So the gaps whose filling costs the
        least over the plan's marginal price are filled (whole intervals, with the room the job has there)
        until `max_runs` remain, and the dearest run ends are trimmed back to `needed_s` (whole intervals,
        the remainder from the last run's end). With `keep_now`, the current interval is never trimmed.
        One run is the exact cheapest unbroken run (`contiguous`, from now with `keep_now`).
        """
        intervals = plan.intervals
        runs = count_runs(intervals)
        if runs <= max_runs or not plan.covered or plan.seconds is None:
            return plan
        if max_runs < 1:
            return None
        if max_runs == 1:  # exactly: the cheapest unbroken run (filling gaps cannot move a run later)
            one = self.contiguous(job, needed_s, deadline_s, pinned=keep_now)
            return one if one.covered else None
        first, last = int(intervals[0]), int(intervals[-1])
        span = np.arange(first, last + 1)
        usable = np.maximum(0.0, np.minimum(self.usable_s[span], deadline_s - self.effective_start_s[span]))
        room = self._room_s(job, span, usable)
        chosen = np.zeros(len(span), dtype=bool)
        chosen[intervals - first] = True
        price = self.price[span]
        marginal = float(price[chosen].max())
        # Gaps between runs: [start, end) positions in `span`, and what filling each costs over the marginal.
        left, right = run_bounds(chosen)
        gap_starts, gap_ends = np.array(right[:-1]) + 1, np.array(left[1:])
        full = room >= usable - EPS_S
        full_before = np.concatenate([[0], np.cumsum(~full)])
        excess_price = np.concatenate([[0.0], np.cumsum((price - marginal) * room)])
        fillable = (full_before[gap_ends] - full_before[gap_starts] == 0) & (usable[gap_starts] > EPS_S)
        fill_cost = excess_price[gap_ends] - excess_price[gap_starts]
        candidates = np.flatnonzero(fillable)
        if len(candidates) < runs - max_runs:
            return None
        for gap in candidates[np.argsort(fill_cost[candidates], kind="stable")[:runs - max_runs]].tolist():
            chosen[gap_starts[gap]:gap_ends[gap]] = True
        seconds = np.where(chosen, room, 0.0)
        # Trim the excess from the run ends, dearest first, whole intervals only.
        excess_s = float(seconds.sum()) - needed_s
        left, right = run_bounds(chosen)
        ends = [(-price[i], i, side) for lo, hi in zip(left, right, strict=True) for i, side in ((lo, -1), (hi, 1))]
        heapq.heapify(ends)
        while ends and excess_s > EPS_S:
            _, i, side = heapq.heappop(ends)
            if not chosen[i] or seconds[i] > excess_s + EPS_S or (keep_now and first + i == 0):
                continue
            excess_s -= seconds[i]
            chosen[i], seconds[i] = False, 0.0
            inward = i - side
            if 0 <= inward < len(span) and chosen[inward]:
                heapq.heappush(ends, (-price[inward], inward, side))
        # The remainder from the end of the last run (the job finishes earlier in its last interval).
        for i in np.flatnonzero(chosen)[::-1].tolist():
            if excess_s <= EPS_S or (keep_now and first + i == 0):
                break
            cut = min(excess_s, float(seconds[i]))
            seconds[i] -= cut
            excess_s -= cut
            if seconds[i] <= EPS_S:
                chosen[i] = False
        picked = np.flatnonzero(chosen)
        if not len(picked):
            return None
        used_s = seconds[picked]
        return JobPlan(job.job_id, span[picked], True, float(np.dot(price[picked], used_s)), seconds=used_s)


def _mean_price(plan: JobPlan) -> float:
    """The plan's mean price over its run time (absolute: a resume costs energy even at negative prices)."""
    seconds = plan.seconds if plan.seconds is not None else np.ones(1)
    return abs(plan.cost_index) / max(float(np.sum(seconds)), EPS_S)
