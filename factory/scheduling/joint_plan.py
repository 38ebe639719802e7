"""The flexible jobs' price plan solved jointly: one linear program over the room the other tiers left.

The greedy planner (`Planner.cheapest`) gives each flexible job in turn, least laxity first, the cheapest
intervals still free. A job planned early may take a cheap interval that a later one needed more, and the
later one then runs in a dear interval it could have avoided. Here the flexible jobs of a decision are
planned together, by the program `simulation.optimum` solves offline, but from now, over the outlook and
in what the jobs planned before them left:

    variables  x[j,k]  seconds job j runs in interval k:  0 <= x[j,k] <= room[j,k]
               u[j]    seconds of j's work left unplanned:  u[j] >= 0
    demand     sum_k x[j,k] + u[j] = needed_s[j]                               for every job j
    capacity   sum_j gpus[j] * x[j,k] <= free_gpu_s[k] * (1 - margin_k)        for every interval k
    minimise   sum_jk (price[k] + TIE * P * k * urgency[j]) * draw_w[j] * x[j,k]
               + PENALTY * P * sum_j draw_w[j] * u[j]

(P: the dearest price's magnitude; urgency[j] = interval_s / max(interval_s, laxity[j]).) A job with a
resume overhead o[j] (`PlanRequest.resume_s`) pays for each run after its first in redone run time, by the
rows the offline optimum has for it (`simulation.optimum`): with y[j,k] = x[j,k] / usable_s[k],

    rise       r[j,k] >= y[j,k] - y[j,k-1],  r >= 0       (y[j,k-1] = 0 where j has no room in k-1)
    resumes    z[j] >= sum_k r[j,k] - 1,  z >= 0
    demand     sum_k x[j,k] + u[j] = needed_s[j] + o[j] * z[j]              (in place of the above)

so a job splits its run only where the cheap hours beat the dearer ones between them by its resume.

`room[j,k]` is the planner's own (`Planner.room_before`: the job's GPUs free at the interval's start, or from
when jobs finishing in it free them, up to its deadline), so each plan is one the greedy planner could
have made for that job alone. `margin_k`: `capacity_margin` of the room free in every interval after the
current one is kept for jobs not yet arrived (the greedy plan's `arrival_slack` does that by finishing jobs
early); the current interval's arrivals are decided with it, so it is not held back. On a cluster where
`capacity_margin` of its GPUs is less than one GPU, none is kept: there the margin is a fraction of one
GPU's time, too little for most arrivals, and it pushed the jobs here out of their cheap hours (on two
GPUs, 0.15 lost a fifth of a day's carbon saving with no job to come, tests/unit/test_carbon_objective.py).
On a larger cluster with little free, it is a share of that little room. Kept in whole GPUs instead (0.15
of the free GPUs rounded down, or of the cluster's), the tuning half missed more: 1,120 and 1,121
deadlines against 1,079.

Invariants:
  * Used only where the program says what the cluster will do (`joint_applies`): at most `MAX_JOBS` jobs,
    each of one GPU (a wider job needs its GPUs at once, on nodes, which GPU-seconds do not see: measured on
    the tuning half, planning gangs this way broke promises), preemptible (the program may split a job's
    run time, each resume charged), with a finite resume overhead, and then no gang in the cluster
    (measured on the tuning half's nine gang cells: planned together, jobs with resumes beside gangs missed
    917 deadlines, not 903, and broke 5 promises, not 3, though the worst cell rose from 0.508 to 0.545);
    no power budget, no quotas;
    and (`price_aware`'s rule) no promise pressed: while a job is short of room or due now, least laxity
    first keeps the tightest jobs ahead (measured on the tuning half: the joint plan missed more there).
    Elsewhere, and where the jobs do not compete for room (each one's cheapest intervals are then the best
    plan), the caller plans them one by one as before.
  * The same arrival slack as the greedy plan: a job finishes `arrival_slack` x its run time early where it
    can (room for jobs not yet arrived, with the margin).
  * Deterministic: HiGHS on the same input gives the same plan. Ties go to the earlier interval (`TIE`), the
    more so the less laxity a job has, so that among equal prices the least laxity runs first, as in the
    greedy order.
  * If the room left cannot hold every job's work, the margin gives way first; if it still cannot, the
    greedy plan decides who is left short (least laxity last).
  * Cost: one HiGHS solve of (jobs x intervals in their windows) variables, only where jobs compete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from factory.scheduling.model import JobView
from factory.scheduling.plan import EPS_S, MIN_DRAW_W, MIN_SLICE_S, JobPlan, Planner, PlanRequest
from factory.scheduling.runs import count_runs

if TYPE_CHECKING:
    from scipy import sparse

MAX_JOBS = 200  # flexible jobs in one program (beyond it the greedy plan: the decision time's bound)
PENALTY = 1e4   # per watt-second of work left unplanned, in units of the dearest price's
TIE = 1e-4      # per interval index, as a share of the dearest price: ties to the earlier interval


def joint_applies(planner: Planner, requests: list[PlanRequest], default_overhead_s: float,
                  cluster_jobs: Sequence[JobView] = ()) -> bool:
    """Whether the program says what the cluster will do with these requests (the module's invariants).

    `default_overhead_s`: a job's resume overhead where it has not learnt its own. `cluster_jobs`: every job
    of the decision (with a gang among them, requests with a resume overhead are planned one by one).
    """
    return 0 < len(requests) <= MAX_JOBS and planner.power_budget_w is None and all(
        r.job.num_gpus == 1 and r.job.preemptible and not r.held_unbroken and
        0 <= r.job.overhead_s(default_overhead_s) < math.inf for r in requests) and not (
        any(r.resume_s > 0 for r in requests) and any(job.num_gpus > 1 for job in cluster_jobs))


def plan_jointly(planner: Planner, requests: list[PlanRequest],
                 capacity_margin: float) -> list[tuple[PlanRequest, JobPlan]] | None:
    """Each request's plan, in the order to place them: those that start now first. Only where
    `joint_applies`. None where the greedy plan is to decide: the jobs do not compete for room (each one's
    cheapest intervals are then the best plan), nothing can start now (the program could change no decision),
    the room left cannot hold every job's work (the greedy order decides who is left short: least laxity
    last), or the solver fails.
    """
    try:  # (a core dependency; imported here so that an install without it still plans, one by one)
        import scipy  # noqa: F401
    except ImportError:
        return None
    latest_s = max(r.deadline_s for r in requests)
    if sum(r.job.num_gpus for r in requests) <= planner.free_gpus_at_start[
            planner.effective_start_s < latest_s].min(initial=math.inf):
        return None  # every job fits beside every other wherever it likes: one by one is as good
    free_now = int(planner.free_gpus_now + EPS_S)
    if free_now < 1:  # (a job may still start later in it, where another ends: the greedy plan sees that)
        return None
    # No margin on a cluster where it is under one GPU (module docstring). The arrival slack gives way before
    # the jobs here are left short, as it does in the greedy plan.
    kept = capacity_margin if capacity_margin * planner.total_gpus >= 1.0 else 0.0
    attempts = [(kept, True), (0.0, True), (0.0, False)] if kept > 0 else [(0.0, True), (0.0, False)]
    program = None
    for margin, with_slack in attempts:
        if program is None or program.with_slack != with_slack:  # (a margin alone changes no column)
            program = _Program(planner, requests, with_slack)
        seconds = program.solve(margin)
        if seconds is None:
            return None
        if program.all_planned(seconds):
            break
    else:
        return None
    # The current interval in whole GPUs: the jobs that need most of it start now and run through it (or to
    # their end), the others not before the next decision. (The program splits an interval's GPU-seconds
    # freely; the cluster cannot run two jobs by halves of one GPU.)
    share_now = program.share_now(seconds)
    ranked = sorted(range(len(requests)), key=lambda j: (-share_now[j], program.laxity_s[j],
                                                         requests[j].job.job_id))
    starting = [j for j in ranked[:free_now] if share_now[j] > EPS_S]
    if not _whole_now(share_now, starting):
        seconds = program.solve(margin, starting=starting)
        if seconds is None or not program.all_planned(seconds):
            return None
    plans = [program.plan_of(j, seconds) for j in range(len(requests))]
    # Keep to the pause cap as the greedy plan does (a job started on scattered hours is paused at each gap):
    # in fewer runs, a job may do better to wait for its cheapest unbroken run; then it does not start now.
    # The program counts resumes by a relaxation (a job of less than an interval's run time may split for
    # free): a plan whose runs it charged less than a resume each is weighed again as the greedy plan's are.
    for j in starting:
        request, plan = requests[j], plans[j]
        pauses_left = planner.pauses_left(request.job, request.deadline_s)
        planned_s = float(plan.seconds.sum()) if plan.seconds is not None else request.needed_s
        plan = planner.within_runs(request.job, plan, planned_s, request.deadline_s, pauses_left + 1) or plan
        resumes = count_runs(plan.intervals) - 1
        if request.resume_s > 0 and resumes > 0 and \
                planned_s - request.needed_s < resumes * request.resume_s - MIN_SLICE_S:
            plan = planner.fewer_runs(request, plan)
        plans[j] = plan
    return [(requests[j], plans[j]) for j in ranked]


class _Program:
    """The linear program of the module docstring, for `requests` in what `planner` has left."""

    def __init__(self, planner: Planner, requests: list[PlanRequest], with_slack: bool) -> None:
        from scipy import sparse

        self.planner, self.requests, self.with_slack = planner, requests, with_slack
        price, usable = planner.price, planner.usable_s
        price_scale = max(float(np.abs(price).max()), 1.0)
        self.scale = scale = planner.outlook.interval_s  # seconds in intervals: numbers near 1 for HiGHS
        now_s = float(planner.effective_start_s[0])
        in_interval_order = np.argsort(planner.order)  # `room_before` answers in price order
        demand_rows, capacity_rows, gpus, upper, cost, owner, interval = [], [], [], [], [], [], []
        self.laxity_s = [r.deadline_s - now_s - r.needed_s for r in requests]
        # Each run after a job's first costs its resume (`PlanRequest.resume_s`), as the offline optimum
        # charges it (`simulation.optimum`): a rise per interval, the resumes they count, redone run time.
        rises: list[tuple[int, int, int | None, int]] = []  # (job, its column, the previous interval's, k)
        draws, cheapest = [], []  # per job: its draw (scaled), the cheapest price among its columns
        for j, request in enumerate(requests):
            job = request.job
            deadline_s = request.deadline_s
            if with_slack:  # as the greedy plan (`arrival_slack`): finish early where it can, for arrivals
                early_s = deadline_s - planner.arrival_slack * request.needed_s
                deadline_s = early_s if early_s >= now_s + request.needed_s else deadline_s
            room_s = planner.room_before(job, deadline_s)[0][in_interval_order]
            draw = max(job.draw_w, MIN_DRAW_W) / price_scale  # (a job drawing nothing still wants its work)
            urgency = scale / max(scale, self.laxity_s[j])
            previous = None  # (column, interval) of the job's last column
            # (Room under a slice is no room, as in the greedy plan, nor a bound below HiGHS's tolerances.)
            with_room = np.flatnonzero(room_s > MIN_SLICE_S)
            draws.append(draw)
            cheapest.append(float(price[with_room].min()) if len(with_room) else math.inf)
            for k in with_room.tolist():
                if request.resume_s > 0:
                    before = previous[0] if previous is not None and previous[1] == k - 1 else None
                    rises.append((j, len(cost), before, k))
                previous = (len(cost), k)
                demand_rows.append(j)
                capacity_rows.append(k)
                gpus.append(job.num_gpus)
                upper.append(room_s[k])
                # Ties to the earlier interval, the more so the less laxity the job has (as the greedy order).
                cost.append((price[k] + TIE * price_scale * k * urgency) * draw)
                owner.append(j)
                interval.append(k)
            demand_rows.append(j)  # u[j], in no capacity row
            capacity_rows.append(0)
            gpus.append(0)
            upper.append(np.inf)
            cost.append(PENALTY * draw * price_scale)
            owner.append(j)
            interval.append(-1)
        self.columns = count = len(cost)
        columns = np.arange(count)
        self.owner, self.interval = np.array(owner), np.array(interval)
        self.unplanned = self.interval < 0
        self.upper = np.array(upper)
        self.cost = np.array(cost)
        self.capacity = sparse.csr_matrix((np.array(gpus, dtype=float), (capacity_rows, columns)),
                                          shape=(len(usable), count))
        self.demand = sparse.csr_matrix((np.ones(count), (demand_rows, columns)),
                                        shape=(len(requests), count))
        self.needed_s = np.array([r.needed_s for r in requests])
        self.resumes = _resume_rows(rises, requests, usable, scale, count,
                                    self._resume_cost(np.array(draws), np.array(cheapest))) if rises else None

    def _resume_cost(self, draw: np.ndarray, cheapest: np.ndarray) -> np.ndarray:
        """Each job's cost of one resume beyond its redone run time: where its room has prices below zero,
        what that run time would earn there, so that no job is planned resumes it does not make to run
        more in those hours (the offline bound may: `simulation.optimum`). `draw`: each job's (scaled) draw;
        `cheapest`: the cheapest price where it has room (inf: none)."""
        resume = np.array([r.resume_s for r in self.requests]) / self.scale
        return resume * draw * np.maximum(0.0, -np.where(np.isfinite(cheapest), cheapest, 0.0))

    def solve(self, margin: float, starting: list[int] | None = None) -> np.ndarray | None:
        """Seconds of each column (None if the solver fails); `starting`: jobs that run all of now they can,
        every other job none of it."""
        from scipy.optimize import linprog

        free_gpu_s = np.maximum(0.0, self.planner.free_gpu_s)
        free_gpu_s[1:] *= 1.0 - margin
        lower, upper = np.zeros(len(self.cost)), self.upper.copy()
        if starting is not None:
            now = self.interval == 0
            upper[now & ~np.isin(self.owner, starting)] = 0.0
            for j in starting:
                column = np.flatnonzero(now & (self.owner == j))
                lower[column] = min(float(upper[column[0]]), float(self.needed_s[j]))
        cost, a_ub, b_ub, a_eq = self.cost, self.capacity, free_gpu_s / self.scale, self.demand
        bounds = np.column_stack([lower, upper]) / self.scale
        if self.resumes is not None:  # rises and resumes: their redone run time costs (`_resume_cost`)
            a_ub, b_ub, a_eq, extra_cost = self.resumes.extend(a_ub, b_ub, a_eq)
            cost = np.concatenate([cost, extra_cost])
            bounds = np.vstack([bounds, np.column_stack([np.zeros(len(extra_cost)),
                                                         np.full(len(extra_cost), np.inf)])])
        result = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=self.needed_s / self.scale,
                         bounds=bounds, method="highs")
        return result.x[:self.columns] * self.scale if result.status == 0 else None

    def all_planned(self, seconds: np.ndarray) -> bool:
        return not (seconds[self.unplanned] > MIN_SLICE_S).any()

    def share_now(self, seconds: np.ndarray) -> np.ndarray:
        """Each job's run time now as a share of what it could run now (0: none, 1: all of it)."""
        share = np.zeros(len(self.requests))
        for column in np.flatnonzero(self.interval == 0).tolist():
            j = int(self.owner[column])
            share[j] = seconds[column] / max(min(float(self.upper[column]), float(self.needed_s[j])), EPS_S)
        return share

    def plan_of(self, j: int, seconds: np.ndarray) -> JobPlan:
        mine = (self.owner == j) & ~self.unplanned & (seconds > EPS_S)
        intervals, used_s = self.interval[mine], seconds[mine]  # ascending: columns made in interval order
        covered = float(used_s.sum()) >= self.needed_s[j] - MIN_SLICE_S
        return JobPlan(self.requests[j].job.job_id, intervals.astype(np.int64), covered,
                       float(self.planner.price[intervals] @ used_s), seconds=used_s)


class _ResumeRows:
    """The rows and columns that charge resumes (`simulation.optimum`'s rise and resume rows), for the jobs
    with a resume overhead: a rise r >= y[k] - y[k-1] per column (y: the share of the interval's usable time
    the job runs; y[-1] = 0 where the job has no column for the interval before), resumes z >= sum r - 1 per
    job, and its demand grows by its overhead for each resume. Columns after the program's own: r, then z.
    """

    def __init__(self, rise: sparse.csr_matrix, resume: sparse.csr_matrix, demand: sparse.csr_matrix,
                 cost: np.ndarray) -> None:
        self.rise, self.resume, self.demand, self.cost = rise, resume, demand, cost

    def extend(self, a_ub, b_ub: np.ndarray, a_eq) -> tuple:
        """The program's rows and columns with these: (A_ub, b_ub, A_eq, the extra columns' costs)."""
        from scipy import sparse

        a_ub = sparse.vstack([sparse.hstack([a_ub, sparse.csr_matrix((a_ub.shape[0], len(self.cost)))]),
                              self.rise, self.resume]).tocsr()
        b_ub = np.concatenate([b_ub, np.zeros(self.rise.shape[0]), np.ones(self.resume.shape[0])])
        a_eq = sparse.hstack([a_eq, self.demand]).tocsr()
        return a_ub, b_ub, a_eq, self.cost


def _resume_rows(rises: list[tuple[int, int, int | None, int]], requests: list[PlanRequest],
                 usable_s: np.ndarray, scale: float, count: int, resume_cost: np.ndarray) -> _ResumeRows:
    """`_ResumeRows` for `rises`: (job, column, the column of the interval before or None, interval);
    `resume_cost`: each job's cost of a resume beyond its run time (`_Program._resume_cost`)."""
    from scipy import sparse

    jobs = sorted({j for j, _, _, _ in rises})
    row_of = {j: i for i, j in enumerate(jobs)}
    z_of = {j: count + len(rises) + i for i, j in enumerate(jobs)}
    width = count + len(rises) + len(jobs)
    # Variables are seconds / `scale`; a share of interval k's usable time is that x scale / usable_s[k].
    share = scale / np.maximum(usable_s, MIN_SLICE_S)
    rows, cols, values = [], [], []
    for row, (_, column, before, k) in enumerate(rises):
        rows += [row, row]
        cols += [column, count + row]
        values += [float(share[k]), -1.0]
        if before is not None:
            rows.append(row)
            cols.append(before)
            values.append(-float(share[k - 1]))
    rise = sparse.csr_matrix((values, (rows, cols)), shape=(len(rises), width))
    rows = [row_of[j] for j, _, _, _ in rises] + list(range(len(jobs)))
    cols = [count + i for i in range(len(rises))] + [z_of[j] for j in jobs]
    resume = sparse.csr_matrix(([1.0] * len(rises) + [-1.0] * len(jobs), (rows, cols)),
                               shape=(len(jobs), width))
    demand = sparse.csr_matrix(([-requests[j].resume_s / scale for j in jobs],
                                (jobs, [z_of[j] - count for j in jobs])),
                               shape=(len(requests), width - count))
    return _ResumeRows(rise, resume, demand,
                       np.concatenate([np.zeros(len(rises)), resume_cost[jobs]]))


def _whole_now(share_now: np.ndarray, starting: list[int]) -> bool:
    """Whether a solution with these shares of now (`_Program.share_now`) already runs `starting` through
    now and nobody else now."""
    others = np.ones(len(share_now), dtype=bool)
    others[starting] = False
    return bool((share_now[starting] >= 1.0 - 1e-6).all() and (share_now[others] <= EPS_S).all())
