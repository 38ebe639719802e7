"""The interval planner behind `price-aware`: who runs in which price interval, from now to the deadlines.

Nomenclature:
  interval k -- the k-th interval of the price outlook; interval 0 contains now and has only
                `usable[0] = its end - now` seconds left.
  plan       -- the intervals a job is given: for a preemptible job the cheapest intervals in its
                window with room left, for a non-preemptible one the cheapest contiguous run.
  reserve    -- a planned job holds its GPUs and power for the whole of each of its intervals
                (conservative: a job that needs a fraction of its last interval still holds it).
  laxity     -- time before the deadline that the job may spend not running:
                `deadline - now - needed_s`.

Order (each job is planned in what the earlier ones left):
  1. running non-preemptible jobs, pinned from now;
  2. admitted jobs and jobs not yet admitted, least laxity first: a job that must run now gets now,
     the flexible ones get the cheap intervals that remain. A new job whose plan covers its run time
     is admitted feasible, otherwise it is reported infeasible at admission;
  3. infeasible (at-risk) jobs, as soon as possible in what remains.
  If a plan leaves an admitted job short (a newcomer with less laxity took its room, or the greedy
  choice is not exact), the short admitted jobs are moved to the front and the plan redone, so a job
  admitted as feasible is not crowded out by later arrivals: they are the ones reported infeasible.

Invariants:
  * Pure numpy on the outlook; no I/O, deterministic (stable sorts, ties to the earlier interval,
    so a job that is indifferent runs now).
  * Per job O(intervals) vectorised work: about 10 array operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from factory.scheduling.model import JobView, Phase, PriceOutlook

EPS_S = 1e-6
MAX_REPLANS = 3
PINNED, ADMITTED, NEW, AT_RISK = 0, 1, 2, 3  # planning tiers, in order


@dataclass(frozen=True, slots=True)
class JobPlan:
    """A job's intervals (indices into the outlook, ascending) and whether they cover its run time."""

    job_id: str
    intervals: np.ndarray
    covered: bool
    cost_index: float  # sum of price x seconds over the plan (a relative cost, for comparisons)

    @property
    def runs_now(self) -> bool:
        """Whether the plan includes the current interval."""
        return bool(len(self.intervals)) and int(self.intervals[0]) == 0


@dataclass(frozen=True)
class PlanRequest:
    """A job to plan: which tier it belongs to, how long it needs and until when."""

    job: JobView
    needed_s: float
    deadline_s: float
    tier: int
    pause_option_s: float | None = None  # running and preemptible: needed if paused now (with overhead)


class Planner:
    """Reserves GPUs and power per interval of one price outlook, job after job."""

    def __init__(self, outlook: PriceOutlook, now_s: float, total_gpus: int,
                 power_budget_w: float | None) -> None:
        self.outlook = outlook
        starts = np.asarray(outlook.starts_s, dtype=float)
        self.effective_start_s = np.maximum(starts, now_s)
        self.usable_s = np.maximum(0.0, starts + outlook.interval_s - self.effective_start_s)
        self.price = np.asarray(outlook.price_per_mwh, dtype=float)
        self.order = np.argsort(self.price, kind="stable")  # cheapest first, earlier on ties
        self.sorted_start_s = self.effective_start_s[self.order]
        self.sorted_usable_s = self.usable_s[self.order]
        self.sorted_price = self.price[self.order]
        self.free_gpus = np.full(len(starts), float(total_gpus))
        self.free_power_w = np.full(len(starts), math.inf if power_budget_w is None else power_budget_w)

    # -- one job -------------------------------------------------------------------------------

    def _usable_before(self, deadline_s: float, sorted_: bool) -> np.ndarray:
        start = self.sorted_start_s if sorted_ else self.effective_start_s
        usable = self.sorted_usable_s if sorted_ else self.usable_s
        return np.minimum(usable, deadline_s - start)

    def cheapest(self, job: JobView, needed_s: float, deadline_s: float, *,
                 without_now: bool = False, with_now: bool = False) -> JobPlan:
        """The cheapest intervals with room before `deadline_s` that add up to `needed_s`."""
        usable = self._usable_before(deadline_s, sorted_=True)
        room = (usable > EPS_S) & (self.free_gpus[self.order] >= job.num_gpus) & \
            (self.free_power_w[self.order] >= job.draw_w - EPS_S)
        candidates = np.flatnonzero(room)
        if without_now or with_now:
            is_now = self.order[candidates] == 0
            if with_now and is_now.any():
                candidates = np.concatenate([candidates[is_now], candidates[~is_now]])
            elif without_now:
                candidates = candidates[~is_now]
        seconds = np.cumsum(usable[candidates])
        count = int(np.searchsorted(seconds, needed_s - EPS_S)) + 1
        covered = count <= len(candidates)
        chosen = candidates[:count]
        used = usable[chosen].copy()
        if covered and len(used):
            used[-1] -= seconds[count - 1] - needed_s  # the last interval is used only in part
        cost = float(np.dot(self.sorted_price[chosen], used))
        return JobPlan(job.job_id, np.sort(self.order[chosen]), covered, cost)

    def earliest(self, job: JobView, needed_s: float) -> JobPlan:
        """Intervals with room from now on, until `needed_s` is covered (no deadline: as soon as possible)."""
        room = (self.usable_s > EPS_S) & (self.free_gpus >= job.num_gpus) & \
            (self.free_power_w >= job.draw_w - EPS_S)
        candidates = np.flatnonzero(room)
        seconds = np.cumsum(self.usable_s[candidates])
        count = int(np.searchsorted(seconds, needed_s - EPS_S)) + 1
        chosen = candidates[:count]
        return JobPlan(job.job_id, chosen, count <= len(candidates),
                       float(np.dot(self.price[chosen], self.usable_s[chosen])))

    def contiguous(self, job: JobView, needed_s: float, deadline_s: float, *, pinned: bool) -> JobPlan:
        """The cheapest unbroken run that finishes by `deadline_s` (from now if `pinned`)."""
        usable = self._usable_before(math.inf, sorted_=False)
        count_all = len(usable)
        room = (self.free_gpus >= job.num_gpus) & (self.free_power_w >= job.draw_w - EPS_S) & (usable > EPS_S)
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
        # Whole-interval cost (the last interval's part is a small, equal-length tail for all starts).
        cost = price_s[ends[starts]] - price_s[starts]
        best = int(starts[np.argmin(cost)])
        return JobPlan(job.job_id, np.arange(best, ends[best]), bool(feasible[best]), float(cost.min()))

    def reserve(self, job: JobView, plan: JobPlan) -> None:
        """Hold the job's GPUs and power in each planned interval."""
        self.free_gpus[plan.intervals] -= job.num_gpus
        self.free_power_w[plan.intervals] -= job.draw_w

    # -- a request -----------------------------------------------------------------------------

    def plan(self, request: PlanRequest) -> JobPlan:
        """Plan one request (by its tier's rule) and reserve what it gets."""
        job = request.job
        if request.needed_s <= EPS_S:
            return JobPlan(job.job_id, np.empty(0, dtype=np.int64), True, 0.0)
        if request.tier == PINNED:
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=True)
        elif request.tier == AT_RISK:
            plan = self.earliest(job, request.needed_s)
        elif not job.preemptible and job.phase is not Phase.RUNNING:
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=False)
        elif request.pause_option_s is not None:
            plan = self._run_or_pause(request)
        else:
            plan = self.cheapest(job, request.needed_s, request.deadline_s)
        self.reserve(job, plan)
        return plan

    def _run_or_pause(self, request: PlanRequest) -> JobPlan:
        """A running preemptible job: pause it only if that is cheaper even after the resume overhead."""
        job = request.job
        free_plan = self.cheapest(job, request.needed_s, request.deadline_s)
        if free_plan.runs_now or not free_plan.covered:
            return self.cheapest(job, request.needed_s, request.deadline_s, with_now=True) \
                if not free_plan.runs_now else free_plan
        assert request.pause_option_s is not None
        paused = self.cheapest(job, request.pause_option_s, request.deadline_s, without_now=True)
        if not paused.covered:
            return self.cheapest(job, request.needed_s, request.deadline_s, with_now=True)
        keep = self.cheapest(job, request.needed_s, request.deadline_s, with_now=True)
        return paused if paused.cost_index < keep.cost_index - EPS_S else keep
