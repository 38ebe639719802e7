"""bench/scheduler_matrix.py: one cell measured end to end, the cells it builds, and its tuning rule."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factory.prices.series import IntervalSeries
from factory.scheduling import PriceAwarePolicy
from factory.simulation.run import prices_from_series

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def _load_bench():
    spec = importlib.util.spec_from_file_location("scheduler_matrix", REPO / "bench" / "scheduler_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
METRICS = {"cost", "misses", "infeasible", "mean_jct_s", "pauses", "pauses_p90", "pauses_max", "wall_s",
           "cpu_s"}


def synthetic_prices(year: int):
    """A year of hourly prices: a daily swing from -10 to 70 per MWh, with seeded noise."""
    start_s = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    hours = np.arange(366 * 24)
    rng = np.random.default_rng(0)
    values = 30.0 + 40.0 * np.sin(2 * np.pi * hours / 24) + rng.normal(0.0, 5.0, len(hours))
    return prices_from_series(IntervalSeries(start_s, 3600.0, values), "USD", "synthetic")


def synthetic_jobs(count: int) -> pd.DataFrame:
    """PAI-like jobs over two days: lengths of 10 min to 6 h, size classes 1-4."""
    rng = np.random.default_rng(1)
    return pd.DataFrame({"arrival_time": np.sort(rng.uniform(0, 2 * 86400, count)).round(),
                         "length": rng.uniform(600, 6 * 3600, count).round(),
                         "cpus": rng.choice([1, 1, 1, 2, 3, 4], count)})


def measured_row(cell, prices, jobs) -> dict:
    result = bench.measure(cell, prices, jobs, seed=0, params={}, baseline=True)
    return bench.row_of(cell, {}, result, result)


def assert_complete(row: dict, half: str) -> None:
    assert "error" not in row, row.get("error")
    assert row["half"] == half
    for side in ("fifo", "price-aware"):
        assert METRICS <= set(row[side]), f"{side} lacks {METRICS - set(row[side])}"
    assert row["optimum"]["feasible"]
    # The LP is a lower bound: fifo cannot beat it, and neither can price-aware.
    assert row["fifo"]["cost"] > row["optimum"]["cost"]
    assert math.isfinite(row["captured"])
    assert row["captured"] <= 1.0 + 1e-6


def test_a_synthetic_cell_is_measured_against_fifo_and_the_optimum():
    cell = bench.Cell("PJM 2015", gpus=8, gangs=True)
    row = measured_row(cell, synthetic_prices(2015), synthetic_jobs(40))
    assert_complete(row, "tuning")
    assert row["time_zero"].startswith("2015-")


def test_a_cell_with_resume_overheads_is_measured_against_the_bound_that_charges_them():
    cell = bench.Cell("PJM 2015", gpus=8, overhead_s=3600.0)
    row = measured_row(cell, synthetic_prices(2015), synthetic_jobs(40))
    assert_complete(row, "tuning")
    fifo, aware, optimum = row["fifo"]["cost"], row["price-aware"]["cost"], row["optimum"]
    # The bound that resumes for free stays in the row, for comparison with tables measured before.
    assert optimum["cost"] != pytest.approx(optimum["cost_free_resumes"])
    assert row["captured"] == pytest.approx((fifo - aware) / (fifo - optimum["cost"]))
    free_share = (fifo - aware) / (fifo - optimum["cost_free_resumes"])
    assert row["captured_free_resumes"] == pytest.approx(free_share)


@pytest.mark.skipif(not (SHARED_DATA / "jobs" / "pai_1k.csv").exists(), reason="../shared/data is absent")
def test_the_real_base_cell_of_a_reported_market():
    prices = bench.market_prices("PJM 2016")
    if prices is None:
        pytest.skip("the PJM COMED price file is absent from ../shared/data/prices")
    row = measured_row(bench.Cell("PJM 2016"), prices, bench.pai_jobs(150))
    assert_complete(row, "reported")
    assert row["time_zero"].startswith("2016-")


def test_arrivals_are_scaled_to_the_cells_load():
    jobs = synthetic_jobs(50)
    for load, gangs in ((0.3, False), (0.9, True)):
        trace = bench.job_trace(bench.Cell("PJM 2013", load=load, gangs=gangs, gpus=16), jobs)
        demand = float(np.sum(trace.num_gpus * trace.duration_s)) / float(trace.submit_s.max())
        assert demand == pytest.approx(load * 16)
    gang = bench.job_trace(bench.Cell("PJM 2013", gangs=True), jobs)
    assert set(gang.num_gpus) <= {1, 2, 4, 8}
    deadline = bench.job_trace(bench.Cell("PJM 2013", deadline_factor=1.5, min_slack_h=12.0), jobs)
    assert np.all(deadline.deadline_s >= deadline.duration_s + 12 * 3600.0)
    assert np.all(deadline.deadline_s >= 1.5 * deadline.duration_s)


def test_the_matrix_keeps_the_held_out_half_out_of_tuning():
    cells = bench.matrix(bench.MARKETS, random_count=24, seed=0)
    assert cells == bench.matrix(bench.MARKETS, random_count=24, seed=0)
    assert len(cells) == len(bench.MARKETS) * (1 + sum(map(len, bench.AXES.values()))) + 24
    tuning = {c.market for c in cells if c.half == "tuning"}
    assert tuning == {"PJM 2013", "PJM 2014", "PJM 2015"}
    assert len({c.draw for c in cells if c.draw}) == 24
    # A one-axis cell shares its market's week; a random cell draws its own.
    week = bench.time_zero_s(bench.Cell("PJM 2016"), 0.0, 2e9, 12 * 86400.0, seed=0)
    assert bench.time_zero_s(bench.Cell("PJM 2016", gpus=64), 0.0, 2e9, 12 * 86400.0, seed=0) == week
    assert bench.time_zero_s(bench.Cell("PJM 2016", draw=3), 0.0, 2e9, 12 * 86400.0, seed=0) != week


def _row(captured: float, misses: int, fifo_misses: int) -> dict:
    return {"captured": captured, "price-aware": {"misses": misses}, "fifo": {"misses": fifo_misses}}


def test_tuning_never_trades_a_deadline_for_savings():
    keeps = {"reserve": 0.2}, [_row(0.91, 0, 0), _row(0.93, 3, 5), _row(math.nan, 1, 1)]
    richer = {"reserve": 0.0}, [_row(0.99, 1, 0), _row(0.99, 3, 5), _row(math.nan, 1, 1)]
    worse_worst = {"reserve": 0.1}, [_row(0.95, 0, 0), _row(0.80, 2, 5), _row(math.nan, 0, 1)]
    assert bench.choose([richer, worse_worst, keeps]) == {"reserve": 0.2}
    # When every set misses more than fifo somewhere, the fewest such cells win.
    assert bench.choose([richer, ({"reserve": 0.3}, [_row(1.0, 2, 0), _row(1.0, 9, 5)])]) == {"reserve": 0.0}


def test_grid_keys_the_policy_lacks_are_ignored():
    name = next(f.name for f in fields(PriceAwarePolicy) if isinstance(f.default, float))
    default = getattr(PriceAwarePolicy(), name)
    sets = bench.parameter_sets({name: [default, default + 1.0], "no_such_parameter": [1.0]})
    assert sets == [{name: default}, {name: default + 1.0}]
    for params in sets:
        PriceAwarePolicy(**params)


def test_without_the_job_trace_the_bench_skips_and_succeeds(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "JOBS", tmp_path / "pai_1k.csv")
    monkeypatch.setattr(sys, "argv", ["scheduler_matrix.py", "--quick"])
    assert bench.main() == 0
    assert capsys.readouterr().out.startswith("skipped:")
