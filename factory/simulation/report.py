"""The numbers `factory simulate` reports for one policy run (exact JSON keys: other tools read them).

Definitions:
  jct (job completion time) -- finish - submit.
  wait                      -- jct minus the time the job spent running (queued, waiting for a price,
                               paused), so `mean_wait_s` includes pauses.
  deadline miss             -- a job that finished after `submit + deadline_s`.
  gpu_utilization           -- GPU-seconds used / (GPUs x the time from time zero to the last finish).
  preemptions               -- pauses of running jobs (for price, priority, quota or power budget).
  savings_pct               -- (baseline cost - cost) / |baseline cost| x 100, baseline = `fifo`.
  objective                 -- what the policy minimised: `cost`, `carbon` or `cost+carbon`
                               (`factory.prices.objective`); energy is charged on the true series.
  carbon_savings_pct        -- as `savings_pct`, of `carbon_kg` (null without carbon data).
  pauses_per_job            -- `mean`, `p50`, `p90`, `p99` (linear interpolation, `numpy.percentile`)
                               and `max` of the per-job pause counts, `Outcome.preemptions`; so
                               `mean x jobs == preemptions`. All zero for an empty trace.
  optimum                   -- only with `factory simulate --optimum`: the offline LP lower bound of
                               the same input on the objective (`factory.simulation.optimum`): the
                               `cost` and `carbon_kg` of the schedule that minimises it (null when
                               infeasible; `carbon_kg` also without carbon data), `feasible`.
  grid_events               -- only with `--grid-events FILE`: per event `id`, `start`, `end` (ISO
                               8601), `target_kw`, `max_kw` (the highest facility power while it
                               lasted), `complied` (max_kw <= target_kw) and `unmet_reason` (the
                               fixed load, where the jobs that cannot be paused alone were over the
                               target; null otherwise);
  compliance_cost           -- with them: the policy's cost with the events minus the same run without.
  capped_gpu_h              -- with them: GPU-hours run under a power cap (`--min-power-cap-pct`: during an
                               event, GPUs are capped before jobs are paused; 100 turns caps off).
  captured_share            -- only with `--optimum`: (baseline - ours) / (baseline - optimum) of the
                               objective's value (cost; carbon_kg; or cost + carbon priced per tonne),
                               the share of the LP's possible savings the policy made.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel

from factory.prices.series import IntervalSeries
from factory.simulation.engine import Outcome, charge
from factory.simulation.grid_events import GridEventReport
from factory.simulation.trace import JobTrace


class PausesPerJob(BaseModel):
    """How often the jobs were paused: the mean, percentiles over the jobs, and the most any job was."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: int


class OptimumReport(BaseModel):
    """The offline LP lower bound of the same input (`factory.simulation.optimum`)."""

    cost: float | None
    carbon_kg: float | None
    feasible: bool


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
    # Deadline misses (unfinished included) of jobs admitted as feasible: promises broken, which a policy
    # that keeps its promises never has (jobs reported infeasible at admission were told, and are not).
    missed_promises: int
    uncovered_kwh: float
    decisions: int
    pauses_per_job: PausesPerJob


class SimulationReport(PolicyReport):
    """A policy run with the `fifo` baseline on the same input and the cost saved against it.

    `optimum` and `captured_share` are set only when the run was asked for the LP bound
    (`factory simulate --optimum`); otherwise both are None and `to_json` leaves the keys out, so the
    default JSON is exactly what it was before they existed. `captured_share` is defined in
    `captured_share()`.
    """

    currency: str
    baseline: PolicyReport
    savings_pct: float | None
    objective: str = "cost"
    carbon_savings_pct: float | None = None
    optimum: OptimumReport | None = None
    captured_share: float | None = None
    grid_events: list[GridEventReport] | None = None
    compliance_cost: float | None = None
    capped_gpu_h: float | None = None

    def to_json(self) -> dict:
        """The JSON object `factory simulate --json` prints.

        Every field, less `optimum` and `captured_share` when the bound was not asked for (with it,
        both keys are there, null or not), and less `grid_events`, `compliance_cost` and `capped_gpu_h`
        without events.
        """
        data = self.model_dump(mode="json")
        if self.optimum is None:
            data.pop("optimum")
            data.pop("captured_share")
        if self.grid_events is None:
            data.pop("grid_events")
            data.pop("compliance_cost")
            data.pop("capped_gpu_h")
        return data


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
        infeasible_at_admission=int(outcome.infeasible.sum()),
        missed_promises=int(((late | ~done) & ~outcome.infeasible.astype(bool)).sum()),
        uncovered_kwh=uncovered_kwh,
        decisions=outcome.decisions, pauses_per_job=pauses_per_job(outcome.preemptions),
    )


def pauses_per_job(pauses: np.ndarray) -> PausesPerJob:
    """The mean, p50/p90/p99 and max of the per-job pause counts `pauses` (all zero for no jobs)."""
    if not len(pauses):
        return PausesPerJob(mean=0.0, p50=0.0, p90=0.0, p99=0.0, max=0)
    p50, p90, p99 = np.percentile(pauses, [50, 90, 99])
    return PausesPerJob(mean=float(np.mean(pauses)), p50=float(p50), p90=float(p90), p99=float(p99),
                        max=int(np.max(pauses)))


def captured_share(cost: float, baseline_cost: float, optimum_cost: float | None) -> float | None:
    """The share of the savings the optimum makes against the baseline that `cost` makes too.

    (baseline_cost - cost) / (baseline_cost - optimum_cost). None when there is no optimum cost
    (infeasible LP) or when the optimum saves at most 1e-9 against the baseline: then there is nothing
    to capture, and dividing by a gap that small (or negative, since `fifo` may run a job past its
    deadline, outside the window the LP keeps it in) would turn rounding noise into any number at all.
    The share is not clipped: above 1 means the policy beat the bound by missing deadlines (the LP
    never does), below 0 that it cost more than fifo.
    """
    if optimum_cost is None or not math.isfinite(optimum_cost) or baseline_cost - optimum_cost <= 1e-9:
        return None
    return (baseline_cost - cost) / (baseline_cost - optimum_cost)


def savings_pct(cost: float, baseline_cost: float) -> float | None:
    """Cost saved against the baseline in percent of its magnitude; None when the baseline costs 0."""
    if baseline_cost == 0 or not math.isfinite(baseline_cost):
        return None
    return (baseline_cost - cost) / abs(baseline_cost) * 100.0


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None
