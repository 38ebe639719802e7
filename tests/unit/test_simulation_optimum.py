"""The offline optimum (an LP lower bound on energy cost) on hand-computed instances."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from factory.prices.series import IntervalSeries
from factory.simulation.optimum import SCIPY_MISSING, Optimum, offline_optimum
from factory.simulation.trace import JobTrace

HOUR = 3600.0
T0 = 1_700_000_000.0


def make_trace(submit_h, duration_h, deadline_h, gpus=None, power_w=None) -> JobTrace:
    n = len(submit_h)
    return JobTrace(
        job_id=np.array([f"job-{i}" for i in range(n)], dtype=object),
        submit_s=np.asarray(submit_h, dtype=float) * HOUR,
        duration_s=np.asarray(duration_h, dtype=float) * HOUR,
        num_gpus=np.asarray(gpus if gpus is not None else [1] * n, dtype=np.int64),
        deadline_s=np.asarray(deadline_h, dtype=float) * HOUR,
        preemptible=np.ones(n, dtype=bool),
        power_w=np.asarray(power_w if power_w is not None else [1000.0] * n, dtype=float),
        team=np.array([""] * n, dtype=object),
        priority=np.zeros(n, dtype=np.int64),
    )


def hourly(values, start_s=T0) -> IntervalSeries:
    return IntervalSeries(start_s, HOUR, np.asarray(values, dtype=float))


def solve(trace, prices, **kwargs) -> Optimum:
    kwargs.setdefault("time_zero_s", prices.start_s)
    kwargs.setdefault("gpus", 1)
    return offline_optimum(trace, prices, **kwargs)


def test_one_job_runs_in_the_two_cheapest_hours():
    # 1 kW for 1 h at 10 and at 5 per MWh: (10 + 5) / 1000.
    result = solve(make_trace([0], [2], [4]), hourly([50, 10, 30, 5]))
    assert result.feasible and result.status == "optimal"
    assert result.cost == pytest.approx(0.015)
    assert result.energy_kwh == pytest.approx(2.0)
    assert result.carbon_kg is None
    assert result.variables == 4 and result.extended_windows == 0
    assert result.solve_s >= 0.0


def test_capacity_makes_two_jobs_share_the_four_cheapest_hours():
    prices = hourly([50, 10, 30, 5, 40, 20])
    trace = make_trace([0, 0], [2, 2], [6, 6])
    # One GPU: 4 job-hours in the 4 cheapest hours 5, 10, 20, 30.
    assert solve(trace, prices, gpus=1).cost == pytest.approx(0.065)
    # Two GPUs: both jobs run in the hours at 5 and 10.
    assert solve(trace, prices, gpus=2).cost == pytest.approx(0.030)


def test_a_power_budget_binds():
    prices = hourly([50, 10, 30, 5, 40, 20])
    trace = make_trace([0, 0], [2, 2], [6, 6])
    # 1000 W: one 1 kW job at a time, as with one GPU.
    assert solve(trace, prices, gpus=2, power_budget_w=1000.0).cost == pytest.approx(0.065)
    # 1500 W: 1.5 kWh at 5, 1.5 kWh at 10, the last 1 kWh at 20.
    assert solve(trace, prices, gpus=2, power_budget_w=1500.0).cost == pytest.approx(0.0425)
    # A generous budget changes nothing.
    assert solve(trace, prices, gpus=2, power_budget_w=1e6).cost == pytest.approx(0.030)


def test_partial_intervals_bound_the_run_time():
    # Window [0.5 h, 2.5 h): 0.5 h of the hour at 50, 1 h at 10, 0.5 h at 30; 1.5 h to run.
    result = solve(make_trace([0.5], [1.5], [2]), hourly([50, 10, 30, 5]))
    assert result.variables == 3
    assert result.cost == pytest.approx((10 + 0.5 * 30) / 1000)


def test_time_zero_offsets_the_trace_against_the_prices():
    prices = hourly([1, 50, 10, 30, 5])
    result = solve(make_trace([0], [1], [2]), prices, time_zero_s=T0 + HOUR)
    assert result.cost == pytest.approx(0.010)


def test_a_deadline_shorter_than_the_duration_extends_the_window():
    # The 2 h job may not meet a 1 h deadline; its window becomes [0, 2 h): the hours at 50 and 10.
    result = solve(make_trace([0, 0], [2, 1], [1, 4]), hourly([50, 10, 30, 5]), gpus=2)
    assert result.feasible
    assert result.extended_windows == 1
    assert result.cost == pytest.approx((50 + 10 + 5) / 1000)


def test_too_few_gpus_is_infeasible_not_an_error():
    trace = make_trace([0, 0], [3, 3], [4, 4])
    result = solve(trace, hourly([50, 10, 30, 5]), gpus=1)
    assert not result.feasible
    assert math.isnan(result.cost) and math.isnan(result.energy_kwh)
    assert result.carbon_kg is None
    assert result.status != "optimal"
    # A job wider than the cluster is infeasible too.
    assert not solve(make_trace([0], [1], [4], gpus=[2]), hourly([50, 10, 30, 5]), gpus=1).feasible


def test_negative_prices_make_a_negative_cost():
    result = solve(make_trace([0], [2], [4]), hourly([-20, 10, -5, 30]))
    assert result.cost == pytest.approx(-0.025)


def test_carbon_of_the_optimal_schedule():
    prices = hourly([50, 10, 30, 5])
    trace = make_trace([0], [2], [4])
    # Half-hourly carbon sampled at each hour's midpoint: hours 1 and 3 read 200 and 400 g/kWh.
    carbon = IntervalSeries(T0, HOUR / 2, np.array([100, 100, 200, 200, 300, 300, 400, 400], dtype=float))
    assert solve(trace, prices, carbon=carbon).carbon_kg == pytest.approx(0.6)
    # Carbon missing only for an hour the optimum does not use: still known.
    late = IntervalSeries(T0 + HOUR, HOUR, np.array([200, 300, 400], dtype=float))
    assert solve(trace, prices, carbon=late).carbon_kg == pytest.approx(0.6)
    # Missing for an hour it uses: unknown, not a partial sum.
    early = IntervalSeries(T0, HOUR, np.array([100, 200, 300], dtype=float))
    assert solve(trace, prices, carbon=early).carbon_kg is None


def test_a_window_past_the_price_series_names_the_job():
    trace = make_trace([0, 3], [1, 1], [2, 2])
    with pytest.raises(ValueError, match="job-1"):
        solve(trace, hourly([50, 10, 30, 5]))
    # An extended window counts too.
    with pytest.raises(ValueError, match="job-0"):
        solve(make_trace([2], [3], [1]), hourly([50, 10, 30, 5]))
    # And a window before the series.
    with pytest.raises(ValueError, match="job-0"):
        solve(make_trace([0], [1], [2]), hourly([50, 10, 30, 5]), time_zero_s=T0 - HOUR)


def test_an_empty_trace_costs_nothing():
    result = solve(make_trace([], [], []), hourly([50, 10]))
    assert result.feasible and result.cost == 0.0 and result.variables == 0


def test_without_scipy_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[bench\]'") as info:
        solve(make_trace([0], [1], [2]), hourly([50, 10]))
    assert str(info.value) == SCIPY_MISSING


def run_at_submit_cost(trace: JobTrace, prices: IntervalSeries) -> float:
    """Cost of starting every job at its submit time and running it without pause."""
    total = 0.0
    for j in range(len(trace)):
        start = trace.submit_s[j]
        end = start + trace.duration_s[j]
        for k in range(len(prices)):
            overlap = max(0.0, min(end, (k + 1) * prices.interval_s) - max(start, k * prices.interval_s))
            total += prices.values[k] * trace.num_gpus[j] * trace.power_w[j] * overlap / 3.6e9
    return total


def test_the_optimum_is_no_dearer_than_running_everything_at_submit():
    rng = np.random.default_rng(7)
    n = 50
    duration = rng.uniform(0.25, 6.0, n)
    trace = make_trace(rng.uniform(0, 24, n), duration, duration * rng.uniform(1.0, 3.0, n),
                       gpus=rng.integers(1, 5, n), power_w=rng.uniform(300, 700, n))
    prices = IntervalSeries(T0, 900.0, rng.uniform(-10, 120, 4 * 24 * 3))
    result = solve(trace, prices, gpus=int(np.sum(trace.num_gpus)))
    assert result.feasible
    assert result.extended_windows == 0
    assert result.energy_kwh == pytest.approx(float(np.sum(trace.energy_kwh)))
    baseline = run_at_submit_cost(trace, prices)
    assert result.cost <= baseline + 1e-9
    assert result.cost < baseline  # random prices leave room to shift load


def test_a_pause_that_pays_for_its_resume_is_charged_the_resume():
    # 1.5 h of work, cheap hours at 0 and 2 h: the first hour at 0 h, then a resume (half an hour redone)
    # and the last half hour at 2 h fill the cheap hour at 2 h: 2 kWh at 5, not 1.5 kWh as without resumes.
    trace, prices = make_trace([0], [1.5], [4]), hourly([5, 100, 5, 100])
    free = solve(trace, prices)
    assert free.cost == pytest.approx(0.0075) and free.energy_kwh == pytest.approx(1.5)
    charged = solve(trace, prices, preempt_overhead_s=1800.0)
    assert charged.feasible
    assert charged.cost == pytest.approx(0.010)
    assert charged.energy_kwh == pytest.approx(2.0)


def test_a_resume_dearer_than_its_saving_lifts_the_bound_but_never_above_the_best_schedule():
    # 2 h of work, cheap hours at 0 and 2 h, 1 h per resume. Without resumes the bound takes both cheap hours
    # (0.02). Paused over the dear hour the job would redo an hour in the dearest one (0.12), so the best
    # schedule runs the first two hours unbroken (0.04). The bound charges resumes as rises of the job's share
    # of an interval, and a pause and resume inside one interval is no rise: it may stay below 0.04, but it
    # must charge the resume that two separate cheap hours need.
    trace, prices = make_trace([0], [2], [4]), hourly([10, 30, 10, 100])
    free = solve(trace, prices).cost
    charged = solve(trace, prices, preempt_overhead_s=3600.0).cost
    assert free == pytest.approx(0.02)
    assert free + 1e-9 < charged <= 0.04 + 1e-9


def test_no_resume_is_charged_to_a_job_that_needs_none():
    trace = make_trace([0, 1], [2, 1], [4, 3])
    prices = hourly([40, 10, 10, 10, 50])
    assert solve(trace, prices, gpus=2, preempt_overhead_s=3600.0).cost == \
        pytest.approx(solve(trace, prices, gpus=2).cost)


@pytest.mark.parametrize("overhead_s", [-1.0, math.inf, math.nan])
def test_an_overhead_that_is_not_a_finite_number_of_seconds_is_refused(overhead_s):
    with pytest.raises(ValueError, match="preempt_overhead_s must be a finite number of seconds >= 0"):
        solve(make_trace([0], [1], [2]), hourly([50, 10]), preempt_overhead_s=overhead_s)
