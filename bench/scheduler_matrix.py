"""Scheduling matrix: price-aware vs fifo and the LP optimum, tuned on one half, reported on the other.

Each cell is one `factory simulate` input (a price window whose first interval is time zero, a job trace,
a cluster), simulated with `fifo` and `price-aware` through the same engine and report, beside the
offline LP lower bound of the same input (`factory/simulation/optimum.py`). Per cell:

  captured   -- (fifo cost - price-aware cost) / (fifo cost - LP cost): the share of the savings that
                were possible which price-aware took; nan when the LP is infeasible or skipped, or the
                gap is <= 1e-9 (nothing to save). The LP is a lower bound, so captured <= 1. It
                charges the cell's resume overhead for the resumes it must make (a relaxation: see
                optimum.py); the summary also gives the share against the LP that resumes for free.
  misses     -- deadline misses of price-aware and of fifo (unfinished jobs included);
  infeasible -- jobs price-aware reported infeasible at admission;
  broken     -- price-aware's missed promises: misses of jobs it admitted as feasible (the goal: none);
  pauses     -- price-aware's preemptions, in all and per job (p90, max);
  JCT        -- mean job completion time of both; wall (cpu) -- seconds the cell took (both runs and the
                LP), wall-clock and CPU: on a shared machine the CPU seconds are what carries over.

Nomenclature:
  base cell  -- PJM COMED day-ahead (hourly), pai_1k (../shared/data/jobs/pai_1k.csv, 1,000 jobs) at
                load 0.6, 1 GPU per job, deadline max(2 x duration, duration + 12 h), prices known 24 h
                ahead, 16 GPUs in one pool, no resume overhead, 700 W per GPU.
  load       -- the average GPU demand over the arrival span as a fraction of the cluster's GPUs. The
                PAI arrival times are stretched or compressed (their pattern kept) so that the span is
                sum(gpus x length) / (load x cluster GPUs); the jobs themselves are unchanged.
  gangs      -- the PAI size class (`cpus`, 1-4) read as 1, 2, 4 or 8 GPUs on nodes of 8
                (`--gpus-per-node 8`); without gangs every job takes 1 GPU and the GPUs are one pool.
  week       -- time zero: a UTC midnight drawn by a seeded RNG (`--seed`, the market and the cell's draw)
                in the market's year, no later than LATEST_START_DAY so the longest cell fits the year
                (moved earlier where the price file ends sooner). Cells that vary one axis share their
                market's week; every random cell draws its own. As with `factory simulate`, the
                forecaster has no prices from before time zero (`--history-days` gives it some).
  axis cells -- every market's base cell and, around it, one axis changed at a time (AXES).
  random     -- `--random N` cells, each a seeded draw of a market, a week and every axis (CHOICES).
  halves     -- cells on PJM 2013-2015 are the TUNING half; PJM 2016-2018, ERCOT 2024 (real-time, 15 min)
                and CAISO 2024 (hourly, 1,189 negative hours) the REPORTED half, which no tuning sees.

Tuning (`--tune`): every combination of PARAMETER_GRID (its keys filtered to the fields PriceAwarePolicy has
today), and the policy's defaults, run on the tuning half (or `--tune-cells` of it). The chosen one has no
cell where price-aware misses more deadlines than fifo, and among those the best worst-cell captured share
(ties: best median). If every combination has such cells, the fewest of them wins, then the same order.
The reported half then runs with the chosen parameters. Without `--tune` both halves run the defaults.

Goal, on the reported half: captured >= 0.90 in every cell with an LP comparison, median >= 0.95, and in no
cell more misses than fifo.

    python bench/scheduler_matrix.py [--quick] [--tune] [--random 24] [--seed 0] [--workers 2]
                                     [--tune-cells N] [--jobs 1000] [--history-days 0] [--cells TEXT]
                                     [--json FILE]

The data files are public (sources in ../shared/data/README.md) and read from ../shared/data beside the
checkout; a market whose files are missing is skipped with a note, and without the job trace the script
says so and exits 0. It exits 1 when a cell failed to run.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The policy parameters `--tune` chooses among: {PriceAwarePolicy field: values}. Keys the policy does not
# have (any more) are ignored with a note; fields left out keep their defaults. `no_deadline_window_s` and
# `max_pauses_per_day` are not tuned: every job here has a deadline, and the pause cap is a user setting.
# `arrival_slack`, `reserve_margin`, `pause_margin`, `pause_guard_intervals`, `forecast_shrink` and
# `joint_margin` were chosen earlier on grids of their own (bench/README.md; `forecast_shrink` chose 1.0, which
# the reported half showed breaking more promises: its default stays 0); this grid chose `gang_arrival_room`
# with them at those values, on the nine tuning cells with gangs (the only ones it changes).
PARAMETER_GRID: dict[str, list[float]] = {
    "gang_arrival_room": [0.0, 0.15, 0.3, 0.5, 1.0],
}

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "data"
JOBS = DATA / "jobs" / "pai_1k.csv"
DAY_S = 86400.0
TAIL_S = 2 * DAY_S        # prices beyond the last deadline, for the jobs that finish late
LATEST_START_DAY = 290    # of the year: the longest cell (8 GPUs, gangs, load 0.3, 3x) spans ~71 days
POWER_W = 700.0
GANG_GPUS = (1, 2, 4, 8)  # GPUs of PAI size class 1..4
GANG_NODE_GPUS = 8
LP_MAX_VARIABLES = 2_000_000  # x variables; a larger LP is skipped (captured nan); pai_1k's cells stay under
#                                100,000 (with a resume overhead the LP has about twice as many columns)
TARGET_WORST, TARGET_MEDIAN = 0.90, 0.95


@dataclass(frozen=True)
class Market:
    name: str
    config: str  # configs/examples/<config>.yaml: its prices.trace section
    year: int
    half: str    # "tuning" or "reported"


MARKETS = {m.name: m for m in (
    *(Market(f"PJM {y}", "pjm-comed-2013-2018", y, "tuning") for y in (2013, 2014, 2015)),
    *(Market(f"PJM {y}", "pjm-comed-2013-2018", y, "reported") for y in (2016, 2017, 2018)),
    Market("ERCOT 2024", "ercot-2024", 2024, "reported"),
    Market("CAISO 2024", "caiso-2024", 2024, "reported"),
)}


@dataclass(frozen=True)
class Cell:
    """One input: market and week, the jobs' load, sizes and deadlines, the cluster, what the policy sees."""

    market: str
    load: float = 0.6
    gangs: bool = False
    deadline_factor: float = 2.0
    min_slack_h: float = 12.0
    forecast_h: float = 24.0
    gpus: int = 16
    overhead_s: float = 0.0
    draw: int = 0  # 0: the market's week; random cell i: its own week

    @property
    def half(self) -> str:
        return MARKETS[self.market].half

    @property
    def name(self) -> str:
        """The market and how the cell differs from the base, e.g. 'PJM 2016 gangs 64gpu'."""
        base = Cell(self.market)
        tokens = [f"rand{self.draw}"] if self.draw else []
        tokens += [_TOKENS[f.name](getattr(self, f.name)) for f in fields(Cell)
                   if f.name in _TOKENS and getattr(self, f.name) != getattr(base, f.name)]
        return f"{self.market} {' '.join(tokens) or 'base'}"


_TOKENS: dict[str, Callable[[Any], str]] = {
    "load": lambda v: f"load{v:g}", "gangs": lambda v: "gangs" if v else "1gpu",
    "deadline_factor": lambda v: f"dl{v:g}x", "min_slack_h": lambda v: f"slack{v:g}h",
    "forecast_h": lambda v: f"fc{v:g}h", "gpus": lambda v: f"{v}gpu", "overhead_s": lambda v: f"oh{v:g}s",
}
# One axis at a time around each market's base cell (values other than the base's).
AXES: dict[str, list[Any]] = {
    "load": [0.3, 0.9],
    "gangs": [True],
    "deadline_factor": [1.5, 3.0],
    "min_slack_h": [0.0],
    "forecast_h": [12.0, 36.0],
    "gpus": [8, 64],
    "overhead_s": [600.0, 3600.0],
}
# What a random cell draws from, per axis.
CHOICES: dict[str, list[Any]] = {axis: [getattr(Cell(""), axis), *values] for axis, values in AXES.items()}
QUICK = ("PJM 2013", {}), ("PJM 2016", {}), ("ERCOT 2024", {}), ("CAISO 2024", {}), \
    ("PJM 2016", {"gangs": True}), ("CAISO 2024", {"overhead_s": 600.0})


def matrix(markets: Iterable[str], random_count: int, seed: int, quick: bool = False) -> list[Cell]:
    """The cells: each market's base and its axes (or the QUICK handful), then the seeded random cells."""
    markets = list(markets)
    if quick:
        return [Cell(m, **change) for m, change in QUICK if m in markets]
    cells = []
    for market in markets:
        cells.append(Cell(market))
        cells += [replace(Cell(market), **{axis: v}) for axis, values in AXES.items() for v in values]
    rng = np.random.default_rng([seed, 1])
    for i in range(1, random_count + 1):
        market = list(MARKETS)[int(rng.integers(len(MARKETS)))]
        choice = {axis: values[int(rng.integers(len(values)))] for axis, values in CHOICES.items()}
        if market in markets:
            cells.append(Cell(market, draw=i, **choice))
    return cells


# -- one cell ------------------------------------------------------------------------------------------

def job_trace(cell: Cell, jobs: pd.DataFrame):  # noqa: ANN201 - JobTrace
    """pai_1k as this cell reads it: sizes, deadlines, and arrivals scaled to the cell's load."""
    from factory.simulation.trace import JobTrace

    length = jobs["length"].to_numpy(float)
    gpus = np.array(GANG_GPUS)[jobs["cpus"].to_numpy(int) - 1] if cell.gangs else np.ones(len(jobs), int)
    arrival = jobs["arrival_time"].to_numpy(float)
    arrival = arrival - arrival.min()
    span_s = float(np.sum(gpus * length)) / (cell.load * cell.gpus)
    submit = arrival * (span_s / arrival.max()) if arrival.max() > 0 else arrival
    deadline = np.maximum(cell.deadline_factor * length, length + cell.min_slack_h * 3600.0)
    n = len(jobs)
    return JobTrace(job_id=np.array([f"pai-{i:04d}" for i in range(n)], dtype=object), submit_s=submit,
                    duration_s=length, num_gpus=gpus.astype(np.int64), deadline_s=deadline,
                    preemptible=np.ones(n, bool), power_w=np.full(n, POWER_W),
                    team=np.full(n, "", dtype=object), priority=np.zeros(n, np.int64))


def _start_day(seed: int, market_index: int, draw: int) -> int:
    return int(np.random.default_rng([seed, market_index, draw]).integers(LATEST_START_DAY + 1))


def time_zero_s(cell: Cell, start_s: float, end_s: float, horizon_s: float, seed: int) -> float:
    """The cell's week (see the module docstring) in a price series covering [start_s, end_s)."""
    index = list(MARKETS).index(cell.market)
    day = _start_day(seed, index, 0)
    if cell.draw:  # a random cell's own week, never its market's
        rng = np.random.default_rng([seed, index, cell.draw])
        day = (day + 1 + int(rng.integers(LATEST_START_DAY))) % (LATEST_START_DAY + 1)
    zero_s = datetime(MARKETS[cell.market].year, 1, 1, tzinfo=UTC).timestamp() + day * DAY_S
    zero_s = min(zero_s, math.floor((end_s - horizon_s) / DAY_S) * DAY_S)
    zero_s = max(zero_s, math.ceil(start_s / DAY_S) * DAY_S)
    if zero_s + horizon_s > end_s:
        raise ValueError(f"{cell.name}: the prices cover {(end_s - start_s) / DAY_S:.0f} days, the cell "
                         f"needs {horizon_s / DAY_S:.0f}")
    return zero_s


class _Stopwatch:
    """Wall and CPU seconds since it was made: the CPU time says what a cell costs on a busy machine."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


def _metrics(outcome: Any, report: Any, watch: _Stopwatch) -> dict[str, Any]:
    return {"cost": report.cost, "misses": report.deadline_misses,
            "infeasible": report.infeasible_at_admission, "missed_promises": report.missed_promises,
            "mean_jct_s": report.mean_jct_s,
            "pauses": report.preemptions, "pauses_p90": float(np.percentile(outcome.preemptions, 90)),
            "pauses_max": int(outcome.preemptions.max()), "uncovered_kwh": report.uncovered_kwh,
            **watch.read()}


def measure(cell: Cell, prices: Any, jobs: pd.DataFrame, *, seed: int, params: dict[str, float] | None,
            baseline: bool, history_days: float = 0.0) -> dict[str, Any]:
    """Price-aware with `params` on the cell (None: skip it); with `baseline`, fifo and the LP as well.

    `history_days` of prices before time zero are replayed to the policies' forecaster (not charged);
    0 is what `factory simulate` does.
    """
    from factory.scheduling import FifoPolicy, PriceAwarePolicy
    from factory.simulation.engine import Cluster, simulate
    from factory.simulation.optimum import offline_optimum
    from factory.simulation.report import summarize
    from factory.simulation.run import prices_from_series

    trace = job_trace(cell, jobs)
    horizon_s = float(np.max(trace.submit_s + trace.deadline_s)) + TAIL_S
    history_s = history_days * DAY_S
    zero_s = time_zero_s(cell, prices.price.start_s + history_s, prices.price.end_s, horizon_s, seed)
    name = f"{cell.market} from {datetime.fromtimestamp(zero_s, UTC):%Y-%m-%d}"
    window = prices_from_series(prices.price.window(zero_s, zero_s + horizon_s), prices.currency, name)
    replayed = window if not history_s else prices_from_series(
        prices.price.window(zero_s - history_s, zero_s + horizon_s), prices.currency, name)
    cluster = Cluster.uniform(cell.gpus, GANG_NODE_GPUS if cell.gangs else None)
    result: dict[str, Any] = {"time_zero": f"{datetime.fromtimestamp(zero_s, UTC):%Y-%m-%d}"}
    runs = [("fifo", FifoPolicy())] if baseline else []
    if params is not None:
        runs.append(("price-aware", PriceAwarePolicy(**params)))
    for name, policy in runs:
        watch = _Stopwatch()
        outcome = simulate(trace, replayed.feed(cell.forecast_h), cluster, policy, time_zero_s=zero_s,
                           preempt_overhead_s=cell.overhead_s)
        report = summarize(outcome, trace, time_zero_s=zero_s, total_gpus=cluster.total_gpus,
                           price=window.price, carbon=None)
        result[name] = _metrics(outcome, report, watch)
    if baseline:
        interval_s = window.price.interval_s
        variables = int(np.sum(np.ceil(trace.deadline_s / interval_s) + 1))
        if variables > LP_MAX_VARIABLES:
            result["optimum"] = {"cost": math.nan, "feasible": False, "wall_s": 0.0, "cpu_s": 0.0,
                                 "status": f"skipped: about {variables:,} variables > {LP_MAX_VARIABLES:,}"}
        else:
            watch = _Stopwatch()
            optimum = offline_optimum(trace, window.price, time_zero_s=zero_s, gpus=cluster.total_gpus,
                                      preempt_overhead_s=cell.overhead_s)
            result["optimum"] = {"cost": optimum.cost, "feasible": optimum.feasible, "status": optimum.status,
                                 "variables": optimum.variables}
            if cell.overhead_s > 0:  # the bound before resumes were charged, for comparison with old tables
                free = offline_optimum(trace, window.price, time_zero_s=zero_s, gpus=cluster.total_gpus)
                result["optimum"]["cost_free_resumes"] = free.cost if free.feasible else math.nan
            result["optimum"].update(watch.read())
    return result


def row_of(cell: Cell, params: dict[str, float], base: dict[str, Any],
           aware: dict[str, Any]) -> dict[str, Any]:
    """One table row: the cell, its baseline (fifo, LP) and price-aware, and the captured share."""
    row = {"cell": cell.name, "half": cell.half, **asdict(cell), "params": params,
           "time_zero": base.get("time_zero") or aware.get("time_zero")}
    error = base.get("error") or aware.get("error")
    if error:
        return {**row, "error": error, "captured": math.nan}
    fifo, optimum, policy = base["fifo"], base["optimum"], aware["price-aware"]
    bound = optimum["cost"] if optimum["feasible"] else math.nan
    captured = _share(fifo["cost"], policy["cost"], bound)
    free = _share(fifo["cost"], policy["cost"], optimum.get("cost_free_resumes", bound))
    seconds = {key: fifo[key] + optimum[key] + policy[key] for key in ("wall_s", "cpu_s")}
    return {**row, "captured": captured, "captured_free_resumes": free, "fifo": fifo, "price-aware": policy,
            "optimum": optimum, **seconds}


def _share(fifo_cost: float, policy_cost: float, bound_cost: float) -> float:
    """`report.captured_share` of the policy against fifo and the bound, nan where it has none."""
    from factory.simulation.report import captured_share

    share = captured_share(policy_cost, fifo_cost, bound_cost)
    return math.nan if share is None else share


# -- running cells in worker processes ---------------------------------------------------------------

_PRICES: dict[str, Any] = {}
_JOBS: dict[int, pd.DataFrame] = {}


def market_prices(market: str) -> Any | None:  # LoadedPrices, or None when its files are missing
    """The market's whole price file(s), read once per process (workers forked later inherit them)."""
    from factory.config import load_config
    from factory.simulation.run import PriceInput, load_prices

    config = MARKETS[market].config
    if config not in _PRICES:
        options = load_config(REPO_ROOT / "configs" / "examples" / f"{config}.yaml", env={},
                              cwd=REPO_ROOT).prices.trace
        present = all(glob.glob(str(pattern)) for pattern in options.paths)
        _PRICES[config] = load_prices(PriceInput(options)) if present else None
    return _PRICES[config]


def pai_jobs(limit: int) -> pd.DataFrame:
    """The first `limit` jobs of pai_1k by arrival."""
    if limit not in _JOBS:
        _JOBS[limit] = pd.read_csv(JOBS).sort_values("arrival_time", kind="stable").head(limit)
    return _JOBS[limit]


@dataclass(frozen=True)
class Task:
    cell: Cell
    params: dict[str, float] | None  # price-aware's; None: none
    baseline: bool                   # fifo and the LP
    seed: int
    jobs: int
    history_days: float


def run_task(task: Task) -> dict[str, Any]:
    """One task; an error becomes the result, so that one broken cell does not stop the matrix."""
    try:
        return measure(task.cell, market_prices(task.cell.market), pai_jobs(task.jobs), seed=task.seed,
                       params=task.params, baseline=task.baseline, history_days=task.history_days)
    except Exception as exc:  # noqa: BLE001 - reported in the cell's row, and the exit status
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_all(tasks: list[Task], workers: int, what: str) -> list[dict[str, Any]]:
    """Results in the order of `tasks`, with a progress line on stderr every few tasks."""
    started = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(tasks)

    def progress(done: int) -> None:
        if done == len(tasks) or done % 10 == 0:
            elapsed = time.perf_counter() - started
            sys.stdout.flush()
            print(f"  {what}: {done}/{len(tasks)} tasks, {elapsed:.0f} s (about "
                  f"{elapsed / done * (len(tasks) - done):.0f} s left)", file=sys.stderr, flush=True)

    if workers <= 1:
        for i, task in enumerate(tasks):
            results[i] = run_task(task)
            progress(i + 1)
        return results  # type: ignore[return-value]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # The slowest first (price-aware on large clusters), so that the two workers finish together.
        order = sorted(range(len(tasks)), key=lambda i: (tasks[i].params is None, -tasks[i].cell.gpus))
        futures = {pool.submit(run_task, tasks[i]): i for i in order}
        for done, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            progress(done)
    return results  # type: ignore[return-value]


# -- tuning --------------------------------------------------------------------------------------------

def parameter_sets(grid: dict[str, list[float]]) -> list[dict[str, float]]:
    """The policy's defaults, then every combination of the grid's keys that PriceAwarePolicy has."""
    from factory.scheduling import PriceAwarePolicy

    names = {f.name for f in fields(PriceAwarePolicy)}
    for key in sorted(set(grid) - names):
        print(f"note: PARAMETER_GRID key '{key}' is not a field of PriceAwarePolicy; ignored")
    grid = {key: values for key, values in grid.items() if key in names}
    defaults = PriceAwarePolicy()
    sets = [{key: getattr(defaults, key) for key in grid}]
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        if params not in sets:
            sets.append(params)
    return sets


def tune_sample(tuning: list[Cell], count: int, seed: int) -> list[Cell]:
    """`count` tuning cells: the base cells and a seeded sample of the others (0: all of them)."""
    if not 0 < count < len(tuning):
        return tuning
    bases = [c for c in tuning if c == Cell(c.market)]
    others = [c for c in tuning if c not in bases]
    pick = np.random.default_rng([seed, 2]).choice(len(others), max(0, count - len(bases)), replace=False)
    return bases + [others[i] for i in sorted(pick)]


def _finite(rows: list[dict[str, Any]]) -> list[float]:
    return [r["captured"] for r in rows if math.isfinite(r["captured"])]


def more_misses(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows where price-aware missed more deadlines than fifo (a row that failed counts as one)."""
    return [r for r in rows if "error" in r or r["price-aware"]["misses"] > r["fifo"]["misses"]]


def tuning_key(rows: list[dict[str, Any]]) -> tuple[int, float, float]:
    """Larger is better: no cell with more misses than fifo first, then the worst and the median share."""
    shares = _finite(rows)
    return (-len(more_misses(rows)), min(shares, default=-math.inf),
            float(np.median(shares)) if shares else -math.inf)


def choose(results: list[tuple[dict[str, float], list[dict[str, Any]]]]) -> dict[str, float]:
    """The parameter set whose tuning rows have the largest `tuning_key` (the first of equals)."""
    return max(results, key=lambda result: tuning_key(result[1]))[0]


# -- report --------------------------------------------------------------------------------------------

ROW = "  {:<{width}} {:<10} {:>8} {:>20} {:>9} {:>4} {:>6} {:>14} {:>12} {:>12}"


def _h(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.1f}"


def print_half(half: str, rows: list[dict[str, Any]], params: dict[str, float]) -> dict[str, Any]:
    """The half's table, its summary and the goal's verdict; returns the summary."""
    print(f"\n{half.upper()} half: {len(rows)} cells, price-aware with {params or 'its defaults'}")
    width = max(len(r["cell"]) for r in rows)
    print(ROW.format("cell", "time zero", "captured", "cost fifo/aware/LP", "misses", "inf", "broken",
                     "pauses/p90/max",
                     "JCT h (fifo)", "wall s (cpu)", width=width))
    for r in rows:
        if "error" in r:
            print(f"  {r['cell']:<{width}} {r['time_zero'] or '':<10} ERROR {r['error']}")
            continue
        fifo, aware, lp = r["fifo"], r["price-aware"], r["optimum"]
        flag = "*" if aware["misses"] > fifo["misses"] else ""
        print(ROW.format(
            r["cell"], r["time_zero"], f"{r['captured']:.3f}",
            f"{fifo['cost']:.1f}/{aware['cost']:.1f}/{lp['cost']:.1f}",
            f"{flag}{aware['misses']} ({fifo['misses']})",
            aware["infeasible"], aware["missed_promises"],
            f"{aware['pauses']}/{aware['pauses_p90']:.0f}/{aware['pauses_max']}",
            f"{_h(aware['mean_jct_s'])} ({_h(fifo['mean_jct_s'])})", f"{r['wall_s']:.0f} ({r['cpu_s']:.0f})",
            width=width))
    ok_rows = [r for r in rows if "error" not in r]
    shares = _finite(rows)
    worse = more_misses(rows)
    worst = min((r for r in rows if math.isfinite(r["captured"])), key=lambda r: r["captured"], default=None)
    summary = {
        "cells": len(rows), "compared": len(shares), "errors": len(rows) - len(ok_rows),
        "worst": min(shares, default=math.nan), "worst_cell": worst["cell"] if worst else None,
        "median": float(np.median(shares)) if shares else math.nan,
        "more_misses_than_fifo": [r["cell"] for r in worse],
        "misses": sum(r["price-aware"]["misses"] for r in ok_rows),
        "fifo_misses": sum(r["fifo"]["misses"] for r in ok_rows),
        "infeasible": sum(r["price-aware"]["infeasible"] for r in ok_rows),
        "missed_promises": sum(r["price-aware"]["missed_promises"] for r in ok_rows),
        "broken_promise_cells": [r["cell"] for r in ok_rows if r["price-aware"]["missed_promises"]],
        "pauses": sum(r["price-aware"]["pauses"] for r in ok_rows),
    }
    summary["goal_met"] = bool(shares) and summary["worst"] >= TARGET_WORST and \
        summary["median"] >= TARGET_MEDIAN and not worse and not summary["missed_promises"]
    no_lp = len(ok_rows) - len(shares)
    print(f"  {half}: captured worst {summary['worst']:.3f} ({summary['worst_cell']}), median "
          f"{summary['median']:.3f} over {len(shares)} cells" + (f" ({no_lp} without an LP comparison)"
                                                                 if no_lp else ""))
    free = [r.get("captured_free_resumes", r["captured"]) for r in ok_rows]
    free = [share for share in free if share is not None and math.isfinite(share)]
    summary["worst_free_resumes"] = min(free, default=math.nan)
    summary["median_free_resumes"] = float(np.median(free)) if free else math.nan
    print(f"  {half}: against the LP that resumes for free (the bound before resume overheads were "
          f"charged): worst {summary['worst_free_resumes']:.3f}, median {summary['median_free_resumes']:.3f}")
    print(f"  {half}: misses {summary['misses']} (fifo {summary['fifo_misses']}), reported infeasible at "
          f"admission {summary['infeasible']}; promises broken {summary['missed_promises']} in "
          f"{len(summary['broken_promise_cells'])} cells; pauses {summary['pauses']}; "
          f"cells with more misses than fifo: "
          f"{len(worse)}" + (f" ({', '.join(summary['more_misses_than_fifo'])})" if worse else ""))
    uncharged = [r["cell"] for r in ok_rows
                 if r["fifo"]["uncovered_kwh"] or r["price-aware"]["uncovered_kwh"]]
    if uncharged:  # would flatter the policy that finishes later; TAIL_S is meant to prevent it
        print(f"  {half}: energy after the price window, not charged, in {len(uncharged)} cells: "
              f"{', '.join(uncharged)}")
    goal = (f"captured >= {TARGET_WORST} in every cell, median >= {TARGET_MEDIAN}, misses never above "
            "fifo's, no promise broken")
    verdict = "MET" if summary["goal_met"] else "NOT MET"
    note = "" if half == "reported" else " (informative: the tuning saw this half)"
    print(f"  {half}: goal ({goal}): {verdict}{note}")
    return summary


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: a share that could not be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="six cells of both halves (smoke test, ~1 min)")
    parser.add_argument("--tune", action="store_true",
                        help="choose the policy's parameters on the tuning half first")
    parser.add_argument("--tune-cells", type=int, default=0,
                        help="tune on this many tuning cells (the base cells and a seeded sample); 0: all")
    parser.add_argument("--random", type=int, default=24, help="seeded random cells (both halves together)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weeks and the random cells")
    parser.add_argument("--jobs", type=int, default=1000, help="the first N jobs of pai_1k")
    parser.add_argument("--history-days", type=float, default=0.0,
                        help="prices before time zero the forecaster may read (0: as `factory simulate`)")
    parser.add_argument("--cells", default=None, help="only cells whose name contains this text")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1: in this process)")
    parser.add_argument("--json", dest="json_path", default=None, help="write every row to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    if not JOBS.exists():
        print(f"skipped: {JOBS} is missing (the PAI job trace, see ../shared/data/README.md)")
        return 0
    markets = []
    for name in MARKETS:
        if market_prices(name) is None:  # read now, before the workers fork
            print(f"note: {name} skipped, its price files are not in {DATA / 'prices'}")
        else:
            markets.append(name)
    pai_jobs(args.jobs)
    cells = [c for c in matrix(markets, args.random, args.seed, args.quick)
             if args.cells is None or args.cells in c.name]
    tuning = [c for c in cells if c.half == "tuning"]
    reported = [c for c in cells if c.half == "reported"]
    print(f"{len(cells)} cells ({len(tuning)} tuning, {len(reported)} reported), pai_1k first {args.jobs} "
          f"jobs, seed {args.seed}, {args.history_days:g} days of price history, {args.workers} workers",
          flush=True)

    def task(cell: Cell, params: dict[str, float] | None, baseline: bool) -> Task:
        return Task(cell, params, baseline, args.seed, args.jobs, args.history_days)

    base = dict(zip(cells, run_all([task(c, None, True) for c in cells], args.workers, "fifo and LP"),
                    strict=True))
    params: dict[str, float] = {}
    aware: dict[Cell, dict[str, Any]] = {}
    tuning_results = []
    if args.tune and tuning:
        sets = parameter_sets(PARAMETER_GRID)
        tune_on = tune_sample(tuning, args.tune_cells, args.seed)
        print(f"tuning {len(sets)} parameter sets on {len(tune_on)} tuning cells")
        results = run_all([task(c, p, False) for p in sets for c in tune_on], args.workers, "tuning")
        per_set = [results[i * len(tune_on):(i + 1) * len(tune_on)] for i in range(len(sets))]
        for p, raw in zip(sets, per_set, strict=True):
            tuning_results.append((p, [row_of(c, p, base[c], r) for c, r in zip(tune_on, raw, strict=True)]))
            key = tuning_key(tuning_results[-1][1])
            print(f"  {p}: cells with more misses than fifo {-key[0]}, captured worst {key[1]:.3f}, "
                  f"median {key[2]:.3f}")
        params = choose(tuning_results)
        print(f"chosen: {params}")
        aware = dict(zip(tune_on, per_set[sets.index(params)], strict=True))
    rest = [c for c in cells if c not in aware]
    aware.update(zip(rest, run_all([task(c, params, False) for c in rest], args.workers, "price-aware"),
                     strict=True))
    rows = [row_of(c, params, base[c], aware[c]) for c in cells]
    print("\ncaptured = (fifo - price-aware) / (fifo - LP), nan without an LP comparison (infeasible, or "
          "nothing to save); misses: price-aware (fifo), * where more than fifo; inf: reported infeasible at "
          "admission; broken: misses of jobs admitted as feasible; pauses: in all / per job p90 / max; "
          "JCT: mean, hours")
    summaries = {half: print_half(half, [r for r in rows if r["half"] == half], params)
                 for half in ("tuning", "reported") if any(r["half"] == half for r in rows)}
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(_nan_to_none(
            {"rows": rows, "summaries": summaries, "params": params, "seed": args.seed, "jobs": args.jobs,
             "history_days": args.history_days,
             "tuning": [{"params": p, "key": tuning_key(r)} for p, r in tuning_results]}), indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
