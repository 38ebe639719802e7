"""The offline optimum: a lower bound on the energy cost of a job trace, as a linear program.

The optimum knows every price and every job in advance, may pause and resume any job at any point
and ignores gang scheduling and placement: a job only has to receive its `duration_s` of run time
(plus `preempt_overhead_s` for each resume, below), somewhere inside its window, without the
cluster's GPUs (or its power budget) being exceeded on average over any price interval, each GPU at
its job's power. No real scheduler that keeps every deadline can do better, so its cost is a lower
bound for the cost of any such schedule the simulator replays on the same inputs without power caps
(a capped GPU does more work per joule, which the program does not model).

The linear program (solved with scipy's HiGHS, `scipy.optimize.linprog(method="highs")`):

    variables    x[j,k]  for every job j and price interval k that overlaps the job's window
    bounds       0 <= x[j,k] <= |interval k  ∩  window j|                     (seconds)
                 x[j,k] = 0 when num_gpus[j] > gpus (a job wider than the cluster never runs)
    demand       sum_k x[j,k] = duration_s[j]                                 for every job j
    capacity     sum_j num_gpus[j] * x[j,k] <= gpus * interval_s              for every interval k
    power        sum_j num_gpus[j] * power_w[j] * x[j,k] <= power_budget_w * interval_s
                                                                              (only with a budget)
    minimise     sum_jk price[k] * num_gpus[j] * power_w[j] * x[j,k] / 3.6e9
                 (or, given an `objective` series, that series in place of the price: e.g. the
                 carbon intensity, to bound the carbon a schedule must emit; `cost` stays the
                 price of the schedule found)

With a resume overhead o (`preempt_overhead_s`, as the simulator charges it: each resume first redoes
o seconds of work, on the job's GPUs at its power), each job also gets a rise r[j,k] per variable and
a count of resumes z[j]:

    rise         r[j,k] >= (x[j,k] - x[j,k-1]) / interval_s,  r >= 0          (x[j,k-1] = 0 before the
                                                                              job's first interval)
    resumes      z[j] >= sum_k r[j,k] - 1,  z >= 0
    demand       sum_k x[j,k] = duration_s[j] + o * z[j]                      (in place of the above)

Why this is still a lower bound: a real schedule's run time in interval k, as a fraction of the
interval, rises in total by at most 1 per unbroken run (a run's fraction climbs from 0 to at most 1
and falls back once), so its runs number at least sum_k r[j,k] and its resumes at least that minus
the first start. Runs that start and stop inside one interval are not seen, and two jobs sharing
a GPU by halves of every interval pay no resume: both only lower the bound. Without an overhead
these variables are left out and the program is the one above. Below zero prices a schedule may
also resume more often than it must, to redo work in the cheapest hours: z may exceed its bound.

Internally x is expressed in units of `interval_s` (a fraction of the interval, 0..1) and the
objective is normalised, so HiGHS sees numbers near 1; the reported cost is recomputed from the
solution in currency units.

Nomenclature:
  time zero     -- `time_zero_s`, the absolute (Unix) time that the trace's `submit_s == 0` means;
                   usually the start of the price series.
  window j      -- [time_zero_s + submit_s[j], time_zero_s + submit_s[j] + deadline_s[j]): when
                   job j may run. Extended to `submit_s + duration_s` when the deadline is shorter
                   than the duration (the job could not meet it even alone); such jobs are counted
                   in `Optimum.extended_windows`.
  x[j,k]        -- seconds job j runs (on all its `num_gpus` GPUs) in price interval k.
  price[k]      -- the price series' value for interval k, per MWh; W*s / 3.6e9 = MWh.
  carbon        -- gCO2/kWh, sampled at the midpoint of each price interval (a carbon series on a
                   finer grid than the prices is thereby approximated by one value per interval).

Invariants:
  * Every window lies inside the price series, else `offline_optimum` raises ValueError naming the
    first job that leaves it: the optimum never guesses a price.
  * The matrices are built with vectorised numpy over all job-interval pairs at once (no Python loop),
    so a year of 15-minute intervals and ten thousand jobs builds in seconds.
  * An infeasible program (too few GPUs, a job wider than the cluster, too small a power budget, resume
    overheads that leave no room before a deadline) is an answer, not an error: `feasible=False`,
    `cost=nan`, and `status` carries the solver's message.
  * `carbon_kg` is None without a carbon series, or when an interval the optimum uses has no
    carbon value; never a partial sum.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from factory.prices.series import IntervalSeries
from factory.simulation.trace import JobTrace

WS_PER_KWH = 3.6e6
WS_PER_MWH = 3.6e9
SCIPY_MISSING = "the offline optimum needs scipy: pip install -e '.[bench]'"
USED_FRACTION = 1e-9  # x[j,k] / interval_s above this counts as "the interval is used" (for carbon)


@dataclass(frozen=True)
class Optimum:
    """The offline optimum of one trace on one price series; see the module docstring."""

    cost: float               # currency units; nan when infeasible
    energy_kwh: float         # nan when infeasible
    carbon_kg: float | None   # of the optimal schedule; None without (complete) carbon data
    status: str               # "optimal", or scipy's message
    solve_s: float            # wall time of linprog
    variables: int            # number of x[j,k]
    extended_windows: int     # jobs whose deadline was shorter than their duration
    feasible: bool            # False when the solver found no optimal schedule (see status)


@dataclass(frozen=True)
class _Program:
    """The vectorised pieces of the LP: one entry per variable unless named otherwise."""

    job: np.ndarray           # int64, the job of each variable
    interval: np.ndarray      # int64, the price interval of each variable
    upper: np.ndarray         # float64, the overlap of the interval with the window, in intervals
    extended: int


def offline_optimum(trace: JobTrace, prices: IntervalSeries, *, time_zero_s: float, gpus: int,
                    power_budget_w: float | None = None, carbon: IntervalSeries | None = None,
                    objective: IntervalSeries | None = None, preempt_overhead_s: float = 0.0) -> Optimum:
    """The cheapest schedule of `trace` on `prices` with `gpus` GPUs (and optionally a power budget).

    With `objective` (per MWh, e.g. `factory.prices.objective.signal_series`), the schedule that
    minimises it instead, sampled at each price interval's midpoint (its edge values beyond its ends);
    the result's `cost` and `carbon_kg` are that schedule's. With `preempt_overhead_s`, each resume
    costs that much run time (the module docstring's rise and resume rows).

    Raises:
        ValueError: a job's window starts before or ends after the price series, or the overhead is
            negative or not finite.
        ImportError: scipy is not installed.
    """
    if not 0.0 <= preempt_overhead_s < math.inf:  # (also refuses NaN)
        raise ValueError(f"preempt_overhead_s must be a finite number of seconds >= 0, "
                         f"got {preempt_overhead_s}")
    try:
        from scipy import sparse
        from scipy.optimize import linprog
    except ImportError as exc:
        raise ImportError(SCIPY_MISSING) from exc

    if len(trace) == 0:
        return Optimum(cost=0.0, energy_kwh=0.0, carbon_kg=None if carbon is None else 0.0,
                       status="optimal", solve_s=0.0, variables=0, extended_windows=0, feasible=True)
    program = _variables(trace, prices, time_zero_s)
    count = len(program.job)
    # The capacity rows bound GPU-seconds per interval, which a job wider than the cluster could meet
    # by "running" part of each interval; no real schedule can run it, so it gets no run time at all.
    upper = np.where((trace.num_gpus > gpus)[program.job], 0.0, program.upper)

    step = prices.interval_s
    gpus_j = trace.num_gpus.astype(float)
    watts_j = gpus_j * trace.power_w.astype(float)          # a job's draw while it runs
    watts = watts_j[program.job]
    columns = np.arange(count)

    # Demand: sum_k y[j,k] = duration / interval_s, with y = x / interval_s.
    a_eq = sparse.csr_matrix((np.ones(count), (program.job, columns)), shape=(len(trace), count))
    b_eq = trace.duration_s.astype(float) / step

    # Capacity (and power): one row per price interval that some window touches.
    used, row = np.unique(program.interval, return_inverse=True)
    rows, data, bounds = [row], [gpus_j[program.job]], [np.full(len(used), float(gpus))]
    if power_budget_w is not None:
        kilowatts = watts / 1000.0
        rows.append(row + len(used))
        data.append(kilowatts)
        bounds.append(np.full(len(used), float(power_budget_w) / 1000.0))
    a_ub = sparse.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.tile(columns, len(rows)))),
                             shape=(len(used) * len(rows), count))
    b_ub = np.concatenate(bounds)
    upper_all = upper
    if preempt_overhead_s > 0:
        a_eq, a_ub, b_ub, upper_all = _with_resumes(program, len(trace), preempt_overhead_s / step,
                                                    a_eq, a_ub, b_ub, upper)

    # Objective: currency per unit of y, normalised so that HiGHS's tolerances are meaningful.
    mwh_per_y = watts * step / WS_PER_MWH
    cost_per_y = prices.values[program.interval].astype(float) * mwh_per_y
    goal_per_y = cost_per_y
    if objective is not None:
        goal_per_y = _sampled(objective, prices, program.interval) * mwh_per_y
    scale = float(np.max(np.abs(goal_per_y))) or 1.0
    goal = np.zeros(len(upper_all))
    goal[:count] = goal_per_y / scale  # (rises and resumes cost nothing in themselves: their run time does)

    started = time.perf_counter()
    result = linprog(goal, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                     bounds=np.column_stack([np.zeros(len(upper_all)), upper_all]), method="highs")
    solve_s = time.perf_counter() - started

    if result.status != 0 or result.x is None:
        return Optimum(cost=math.nan, energy_kwh=math.nan, carbon_kg=None, status=str(result.message),
                       solve_s=solve_s, variables=count, extended_windows=program.extended, feasible=False)

    y = np.clip(result.x[:count], 0.0, None)
    energy_kwh_per_var = y * step * watts / WS_PER_KWH
    return Optimum(
        cost=float(cost_per_y @ y),
        energy_kwh=float(np.sum(energy_kwh_per_var)),
        carbon_kg=_carbon_kg(carbon, prices, program.interval, y, energy_kwh_per_var),
        status="optimal", solve_s=solve_s, variables=count, extended_windows=program.extended,
        feasible=True,
    )


def _with_resumes(program: _Program, jobs: int, overhead: float, a_eq, a_ub, b_ub: np.ndarray,
                  upper: np.ndarray) -> tuple:
    """The program with the rise and resume rows of the module docstring (`overhead` in intervals).

    Columns: y (as before), then r (one per y), then z (one per job); each job's y are consecutive
    intervals, so the previous column of the same job is the previous interval.
    """
    from scipy import sparse

    count = len(program.job)
    columns = np.arange(count)
    first = np.ones(count, dtype=bool)
    first[1:] = program.job[1:] != program.job[:-1]
    later = np.flatnonzero(~first)
    # rise: y[k] - y[k-1] - r[k] <= 0
    rise = sparse.csr_matrix(
        (np.concatenate([np.ones(count), -np.ones(len(later)), -np.ones(count)]),
         (np.concatenate([columns, later, columns]), np.concatenate([columns, later - 1, count + columns]))),
        shape=(count, 2 * count + jobs))
    # resumes: sum_k r[j,k] - z[j] <= 1
    each_job = np.arange(jobs)
    resumes = sparse.csr_matrix(
        (np.concatenate([np.ones(count), -np.ones(jobs)]),
         (np.concatenate([program.job, each_job]), np.concatenate([count + columns, 2 * count + each_job]))),
        shape=(jobs, 2 * count + jobs))
    capacity = sparse.hstack([a_ub, sparse.csr_matrix((a_ub.shape[0], count + jobs))])
    # demand: sum_k y[j,k] - overhead * z[j] = duration
    demand = sparse.hstack([a_eq, sparse.csr_matrix((jobs, count)), sparse.identity(jobs) * -overhead])
    a_ub = sparse.vstack([capacity, rise, resumes]).tocsr()
    b_ub = np.concatenate([b_ub, np.zeros(count), np.ones(jobs)])
    upper = np.concatenate([upper, np.full(count + jobs, np.inf)])
    return demand.tocsr(), a_ub, b_ub, upper


def _variables(trace: JobTrace, prices: IntervalSeries, time_zero_s: float) -> _Program:
    """Every (job, interval) pair whose overlap is the upper bound of a variable, without a Python loop."""
    start = time_zero_s + trace.submit_s.astype(float)
    duration = trace.duration_s.astype(float)
    deadline = trace.deadline_s.astype(float)
    short = deadline < duration
    end = start + np.where(short, duration, deadline)

    outside = (start < prices.start_s) | (end > prices.end_s)
    if np.any(outside):
        j = int(np.argmax(outside))
        raise ValueError(
            f"job {trace.job_id[j]!s}: its window [{start[j]:.0f}, {end[j]:.0f}) s lies outside the price "
            f"series [{prices.start_s:.0f}, {prices.end_s:.0f}) s; extend the price trace or drop the job")

    step = prices.interval_s
    first = np.floor((start - prices.start_s) / step).astype(np.int64)
    stop = np.minimum(np.ceil((end - prices.start_s) / step).astype(np.int64), len(prices))
    stop = np.maximum(stop, first + 1)
    counts = stop - first
    total = int(np.sum(counts))

    job = np.repeat(np.arange(len(trace), dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts                     # where each job's run of variables begins
    interval = first[job] + (np.arange(total, dtype=np.int64) - offsets[job])
    # Overlap in units of the interval: interval k spans [k, k + 1) on this scale.
    lo = np.maximum((start - prices.start_s) / step, 0.0)[job]
    hi = ((end - prices.start_s) / step)[job]
    upper = np.clip(np.minimum(hi, interval + 1.0) - np.maximum(lo, interval), 0.0, 1.0)
    return _Program(job=job, interval=interval, upper=upper, extended=int(np.sum(short)))


def _sampled(series: IntervalSeries, prices: IntervalSeries, interval: np.ndarray) -> np.ndarray:
    """`series` at the midpoint of each price interval in `interval`, its edge values beyond its ends."""
    midpoints = prices.start_s + (interval + 0.5) * prices.interval_s
    values = series.sample(midpoints)
    values[midpoints < series.start_s] = series.values[0]
    values[midpoints >= series.end_s] = series.values[-1]
    return values


def _carbon_kg(carbon: IntervalSeries | None, prices: IntervalSeries, interval: np.ndarray,
               y: np.ndarray, energy_kwh: np.ndarray) -> float | None:
    """kgCO2 of the schedule (gCO2/kWh at each price interval's midpoint); None if any used one lacks it."""
    if carbon is None:
        return None
    midpoints = prices.start_s + (interval + 0.5) * prices.interval_s
    intensity = carbon.sample(midpoints)
    used = y > USED_FRACTION
    if np.any(np.isnan(intensity[used])):
        return None
    return float(np.sum(np.where(used, energy_kwh * np.nan_to_num(intensity), 0.0))) / 1000.0
