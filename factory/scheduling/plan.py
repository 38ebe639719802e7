"""The interval planner behind `price-aware`: who runs in which price interval, from now to the deadlines.

Nomenclature:
  interval k -- the k-th interval of the price outlook; interval 0 contains now and has only
                `usable[0] = its end - now` seconds left.
  plan       -- the intervals a job is given: for a preemptible job the cheapest intervals in its
                window with room left, for a non-preemptible one the cheapest contiguous run.
  room       -- GPU-seconds and watt-seconds per interval (the cluster's GPUs x the interval's
                usable time; the power budget likewise). A job planned for `t` seconds of an
                interval takes `num_gpus * t` and `num_gpus * power_w * t` of it, so two short jobs
                can share an hour of one GPU, one after the other, as they will in the cluster.
  now        -- the current interval is counted in whole GPUs: a job started now holds its GPUs until
                the next decision. A job that does not fit now may still be planned later in it, from
                when jobs planned to finish in it have freed enough GPUs (their end is a decision).
  laxity     -- time before the deadline that the job may spend not running:
                `deadline - now - needed_s`.

Order (each job is planned in what the earlier ones left):
  1. running non-preemptible jobs, pinned from now;
  2. admitted jobs and jobs not yet admitted, least laxity first: a job that must run now gets now,
     the flexible ones get the cheap intervals that remain. A job whose window other jobs already
     use is planned to finish `arrival_slack` x its run time early, if it can (that slack is room for
     jobs not yet arrived), else to its deadline. A new job whose plan covers its run time before
     its deadline is admitted feasible, otherwise it is reported infeasible at admission;
  3. infeasible (at-risk) jobs, and jobs whose deadline can no longer be met, as soon as possible in
     what remains (a non-preemptible one in the earliest unbroken run: once started it cannot stop).
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
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from factory.scheduling.model import JobView, Phase, PriceOutlook

EPS_S = 1e-6
MAX_REPLANS = 3
MIN_SLICE_S = 1.0  # less room than this in an interval is no room (no plans of dust)
MIN_DRAW_W = 1.0
MAX_NOW_EVENTS = 64  # releases and later starts within the current interval that are looked at
PINNED, ADMITTED, NEW, AT_RISK = 0, 1, 2, 3  # planning tiers, in order
RESCUE = 4  # an admitted job planned as soon as possible, earliest deadline first (a last resort)


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
    pause_option_s: float | None = None  # running and preemptible: needed if paused now (with overhead)


class Planner:
    """Reserves GPU-seconds and watt-seconds per interval of one price outlook, job after job."""

    def __init__(self, outlook: PriceOutlook, now_s: float, total_gpus: int,
                 power_budget_w: float | None, arrival_slack: float = 0.0) -> None:
        self.outlook = outlook
        starts = np.asarray(outlook.starts_s, dtype=float)
        self.effective_start_s = np.maximum(starts, now_s)
        self.usable_s = np.maximum(0.0, starts + outlook.interval_s - self.effective_start_s)
        self.price = np.asarray(outlook.price_per_mwh, dtype=float)
        self.order = np.argsort(self.price, kind="stable")  # cheapest first, earlier on ties
        self.sorted_start_s = self.effective_start_s[self.order]
        self.sorted_usable_s = self.usable_s[self.order]
        self.sorted_price = self.price[self.order]
        self.free_gpu_s = total_gpus * self.usable_s
        self.capacity_gpu_s = self.free_gpu_s.copy()
        self.arrival_slack = arrival_slack
        # The current interval is different: a job started now holds its GPUs until the next decision,
        # so what limits it is how many GPUs are free at once, not GPU-seconds.
        self.free_gpus_now = float(total_gpus)
        self.free_power_now_w = math.inf if power_budget_w is None else power_budget_w
        self.now_position = int(np.flatnonzero(self.order == 0)[0])
        # Within the current interval: GPUs freed by jobs planned to finish in it, (seconds after now,
        # GPUs), and GPUs taken after such a release by jobs that could not start now (held to the
        # interval's end). Only without a power budget, and for a few events (see `_later_now_s`).
        self.now_releases: list[tuple[float, int]] = []
        self.now_later: list[tuple[float, int]] = []
        self.later_allowed = power_budget_w is None
        budget_w = math.inf if power_budget_w is None else power_budget_w
        self.free_power_ws = budget_w * self.usable_s if math.isfinite(budget_w) else \
            np.full(len(starts), math.inf)

    # -- room ------------------------------------------------------------------------------------

    def _room_s(self, job: JobView, index: np.ndarray | slice, usable_s: np.ndarray,
                now_at: int) -> np.ndarray:
        """Seconds `job` can run in each interval: its usable time, limited by the GPUs and power left.

        `now_at`: where the current interval is in `index`'s order.
        """
        room = np.minimum(usable_s, self.free_gpu_s[index] / job.num_gpus)
        if job.draw_w > 0 and math.isfinite(self.free_power_ws[0]):
            room = np.minimum(room, self.free_power_ws[index] / job.draw_w)
        if self.fits_now(job):
            room[now_at] = usable_s[now_at]
        else:
            later_s = self._later_now_s(job)
            room[now_at] = 0.0 if later_s is None else min(max(0.0, usable_s[now_at] - later_s),
                                                           self.free_gpu_s[0] / job.num_gpus)
        return room

    def _later_now_s(self, job: JobView) -> float | None:
        """When, in seconds after now, the job's GPUs are free for the rest of the current interval.

        None if never (or not looked at: with a power budget, or more than `MAX_NOW_EVENTS`
        releases and later starts, where the answer is left to the next decision).
        """
        events = len(self.now_releases) + len(self.now_later)
        if not self.later_allowed or not self.now_releases or events > MAX_NOW_EVENTS:
            return None
        points = sorted({offset for offset, _ in [*self.now_releases, *self.now_later]})
        free = [self.free_gpus_now
                + sum(gpus for offset, gpus in self.now_releases if offset <= point + EPS_S)
                - sum(gpus for offset, gpus in self.now_later if offset <= point + EPS_S)
                for point in points]
        lowest_after = list(np.minimum.accumulate(free[::-1]))[::-1]  # free GPUs from each point on
        return next((point for point, low in zip(points, lowest_after, strict=True)
                     if low >= job.num_gpus), None)

    def fits_now(self, job: JobView) -> bool:
        """Whether the job's GPUs and power are still free at once in the current interval."""
        return self.free_gpus_now >= job.num_gpus and self.free_power_now_w >= job.draw_w - EPS_S

    def now_exhausted(self) -> bool:
        """Whether not even one GPU (or its power) is left in the current interval."""
        return bool(self.free_gpus_now < 1 or self.free_power_now_w < MIN_DRAW_W)

    # -- one job -------------------------------------------------------------------------------

    def cheapest(self, job: JobView, needed_s: float, deadline_s: float, *,
                 without_now: bool = False, with_now: bool = False) -> JobPlan:
        """The cheapest intervals with room before `deadline_s` that add up to `needed_s`."""
        usable = np.minimum(self.sorted_usable_s, deadline_s - self.sorted_start_s)
        room = self._room_s(job, self.order, usable, self.now_position)
        candidates = np.flatnonzero(room > MIN_SLICE_S)
        if without_now or with_now:
            is_now = self.order[candidates] == 0
            if with_now and is_now.any():
                candidates = np.concatenate([candidates[is_now], candidates[~is_now]])
            elif without_now:
                candidates = candidates[~is_now]
        return self._take(job, self.order[candidates], room[candidates], self.sorted_price[candidates],
                          needed_s)

    def earliest(self, job: JobView, needed_s: float, deadline_s: float = math.inf) -> JobPlan:
        """Intervals with room from now on, until `needed_s` is covered (as soon as possible).

        Covered only if that happens by `deadline_s`.
        """
        usable = self.usable_s if math.isinf(deadline_s) else \
            np.maximum(0.0, np.minimum(self.usable_s, deadline_s - self.effective_start_s))
        room = self._room_s(job, slice(None), usable, 0)
        candidates = np.flatnonzero(room > MIN_SLICE_S)
        return self._take(job, candidates, room[candidates], self.price[candidates], needed_s)

    @staticmethod
    def _take(job: JobView, intervals: np.ndarray, room_s: np.ndarray, price: np.ndarray,
              needed_s: float) -> JobPlan:
        seconds = np.cumsum(room_s)
        count = int(np.searchsorted(seconds, needed_s - EPS_S)) + 1
        covered = count <= len(intervals)
        used_s = room_s[:count].copy()
        if covered and len(used_s):
            used_s[-1] -= seconds[count - 1] - needed_s  # the last interval is used only in part
        cost = float(np.dot(price[:count], used_s))
        chosen = intervals[:count]
        order = np.argsort(chosen)
        return JobPlan(job.job_id, chosen[order], covered, cost, seconds=used_s[order])

    def contiguous(self, job: JobView, needed_s: float, deadline_s: float, *, pinned: bool,
                   earliest: bool = False) -> JobPlan:
        """The cheapest (or `earliest`) unbroken run that finishes by `deadline_s` (from now if `pinned`).

        Every interval of the run must have the job's GPUs and power free for all of its usable time.
        """
        usable = self.usable_s
        count_all = len(usable)
        room = (self._room_s(job, slice(None), usable, 0) >= usable - EPS_S) & (usable > EPS_S)
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
        """Hold the job's GPU-seconds and watt-seconds in each planned interval."""
        if plan.seconds is None or not len(plan.intervals):
            return
        self.free_gpu_s[plan.intervals] -= job.num_gpus * plan.seconds
        self.free_power_ws[plan.intervals] -= job.draw_w * plan.seconds
        if plan.runs_now:
            self.free_gpus_now -= job.num_gpus
            self.free_power_now_w -= job.draw_w
            if len(plan.intervals) == 1 and plan.covered and plan.seconds[0] < self.usable_s[0] - EPS_S:
                # It finishes within the current interval: that ends a run, so a decision follows.
                self.now_releases.append((float(plan.seconds[0]), job.num_gpus))
        elif plan.later_start_s is not None:
            self.now_later.append((plan.later_start_s, job.num_gpus))

    # -- a request -----------------------------------------------------------------------------

    def plan(self, request: PlanRequest) -> JobPlan:
        """Plan one request (by its tier's rule) and reserve what it gets."""
        job = request.job
        if request.needed_s <= EPS_S:
            return JobPlan(job.job_id, np.empty(0, dtype=np.int64), True, 0.0)
        plan = None
        if self.arrival_slack > 0 and (request.tier == ADMITTED or request.tier == NEW):
            slack_s = self.arrival_slack * request.needed_s
            early_s = request.deadline_s - slack_s
            if early_s >= self.effective_start_s[0] + request.needed_s and self._shared_before(early_s):
                plan = self._choose(request._replace(deadline_s=early_s))
                if not plan.covered:  # the slack cannot be kept: plan to the deadline itself
                    plan = None
        if plan is None:
            plan = self._choose(request)
        if len(plan.intervals) and int(plan.intervals[0]) == 0 and not self.fits_now(job):
            plan = replace(plan, later_start_s=self._later_now_s(job))  # the current interval, later
        # Choosing a plan changes no room, so this still sees what the jobs before this one left it.
        crowded_now = None if plan.runs_now else self._crowded_now(job, request.needed_s)
        self.reserve(job, plan)
        return replace(plan, crowded_now=crowded_now) if crowded_now else plan

    def _shared_before(self, deadline_s: float) -> bool:
        """Whether any job planned so far uses GPUs before `deadline_s`."""
        last = int(np.searchsorted(self.effective_start_s, deadline_s))
        return bool((self.free_gpu_s[:last] < self.capacity_gpu_s[:last] - EPS_S).any())

    def _choose(self, request: PlanRequest) -> JobPlan:
        """The plan `request`'s tier calls for, in the room left; reserves nothing."""
        job = request.job
        if request.tier == PINNED:
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=True)
        elif request.tier == RESCUE:
            plan = self.earliest(job, request.needed_s, request.deadline_s) if job.preemptible else \
                self.contiguous(job, request.needed_s, request.deadline_s, pinned=False, earliest=True)
        elif request.tier == AT_RISK:
            plan = self.earliest(job, request.needed_s) if job.preemptible else \
                self.contiguous(job, request.needed_s, math.inf, pinned=False, earliest=True)
        elif not job.preemptible and job.phase is not Phase.RUNNING:
            plan = self.contiguous(job, request.needed_s, request.deadline_s, pinned=False)
        elif request.pause_option_s is not None:
            plan = self._run_or_pause(request)
        else:
            plan = self.cheapest(job, request.needed_s, request.deadline_s)
        return plan

    def _crowded_now(self, job: JobView, needed_s: float) -> str | None:
        """What the jobs planned so far left too little of for `job` to start now: "gpus", "power", None."""
        if self.free_gpus_now < job.num_gpus:
            return "gpus"
        if self.free_power_now_w < job.draw_w - EPS_S:
            return "power"
        if not job.preemptible and job.phase is not Phase.RUNNING:  # it would run unbroken from now
            span = 1 + max(0, math.ceil((needed_s - self.usable_s[0]) / self.outlook.interval_s - EPS_S))
            wanted = self.usable_s[1:span]  # whole intervals, as `contiguous` requires
            if (self.free_gpu_s[1:span] < job.num_gpus * wanted - EPS_S).any():
                return "gpus"
            if (self.free_power_ws[1:span] < job.draw_w * wanted - EPS_S).any():
                return "power"
        return None

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
