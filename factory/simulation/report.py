"""The numbers `factory simulate` reports for one policy run (exact JSON keys: other tools read them).

Definitions:
  jct (job completion time) -- finish - submit.
  wait                      -- jct minus the time the job spent running (queued, waiting for a price,
                               paused), so `mean_wait_s` includes pauses.
  deadline miss             -- a job that finished after `submit + deadline_s`.
  gpu_utilization           -- GPU-seconds used / (GPUs x the time from time zero to the last finish).
  preemptions               -- pauses of running jobs (for price, priority, quota or power budget).
  savings_pct               -- (baseline cost - cost) / |baseline cost| x 100, baseline = `fifo`.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel

from factory.prices.series import IntervalSeries
from factory.simulation.engine import Outcome, charge
from factory.simulation.trace import JobTrace


class PolicyReport(BaseModel):
    """One policy on one input."""

    policy: str
    jobs: int
    completed: int
    deadline_misses: int
    energy_kwh: float
    cost: float
    carbon_kg: float | None
    mean_jct_s: float | None
    p95_jct_s: float | None
    mean_wait_s: float | None
    gpu_utilization: float
    preemptions: int
    wall_s: float
    infeasible_at_admission: int
    uncovered_kwh: float
    decisions: int


class SimulationReport(PolicyReport):
    """A policy run with the `fifo` baseline on the same input and the cost saved against it."""

    currency: str
    baseline: PolicyReport
    savings_pct: float | None


def summarize(outcome: Outcome, trace: JobTrace, *, time_zero_s: float, total_gpus: int,
              price: IntervalSeries, carbon: IntervalSeries | None) -> PolicyReport:
    """The report of one simulation outcome, charged on the true price (and carbon) series."""
    energy_kwh, cost, carbon_kg, uncovered_kwh = charge(outcome, price, carbon)
    submit_s = time_zero_s + trace.submit_s
    done = ~np.isnan(outcome.finish_s)
    jct_s = (outcome.finish_s - submit_s)[done]
    wait_s = jct_s - outcome.run_s[done]
    late = done & (outcome.finish_s > submit_s + trace.deadline_s + 1e-6)
    span_s = float(np.nanmax(outcome.finish_s)) - time_zero_s if done.any() else 0.0
    busy_gpu_s = float(np.sum(trace.num_gpus * outcome.run_s))
    return PolicyReport(
        policy=outcome.policy, jobs=len(trace), completed=int(done.sum()),
        deadline_misses=int(late.sum() + (~done).sum()),
        energy_kwh=energy_kwh, cost=cost, carbon_kg=carbon_kg,
        mean_jct_s=_mean(jct_s), p95_jct_s=float(np.percentile(jct_s, 95)) if len(jct_s) else None,
        mean_wait_s=_mean(wait_s),
        gpu_utilization=busy_gpu_s / (total_gpus * span_s) if span_s > 0 else 0.0,
        preemptions=int(outcome.preemptions.sum()), wall_s=outcome.wall_s,
        infeasible_at_admission=int(outcome.infeasible.sum()), uncovered_kwh=uncovered_kwh,
        decisions=outcome.decisions,
    )


def savings_pct(cost: float, baseline_cost: float) -> float | None:
    """Cost saved against the baseline in percent of its magnitude; None when the baseline costs 0."""
    if baseline_cost == 0 or not math.isfinite(baseline_cost):
        return None
    return (baseline_cost - cost) / abs(baseline_cost) * 100.0


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None
