"""The live scheduler as Ray metrics (exported by the SchedulerActor).

Ray prefixes every name with `ray_` on export: `factory_jobs` is scraped as `ray_factory_jobs`.
`JOB_METRICS` is the documented contract (the table in docs/jobs.md is checked against it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from factory.jobs.snapshot import num_gpus
from factory.jobs.states import JobState
from factory.store import JobRow
from factory.telemetry.metrics import MetricSpec

JOB_METRICS = (
    MetricSpec("factory_jobs", "jobs", ("state",), "jobs in each state (the queue by state)"),
    MetricSpec("factory_gpus_in_use", "GPUs", (), "GPUs held by running (or pausing) factory jobs"),
    MetricSpec("factory_job_energy_kwh_total", "kWh", ("team",), "GPU energy of finished jobs"),
    MetricSpec("factory_job_cost_total", "currency", ("team", "currency"), "energy cost of finished jobs"),
    MetricSpec("factory_job_savings_total", "currency", ("team", "currency"),
               "cost avoided against running each finished job at once"),
    MetricSpec("factory_grid_event_target_kw", "kW", (),
               "facility power target of the grid event under way (NaN: none)"),
    MetricSpec("factory_power_drift_w", "W", (),
               "measured IT power above the nominal draw of the jobs' GPUs, smoothed; kept free of the "
               "budget and grid event caps (NaN before a sample)"),
)
_COUNTERS = {"factory_job_energy_kwh_total", "factory_job_cost_total", "factory_job_savings_total"}


class JobMetrics:
    """The scheduler's gauges and counters. Create inside a Ray worker (the actor)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter as RayCounter
        from ray.util.metrics import Gauge

        self._metrics: dict[str, Any] = {
            spec.name: (RayCounter if spec.name in _COUNTERS else Gauge)(
                spec.name, description=f"{spec.description} ({spec.unit})", tag_keys=spec.tags)
            for spec in JOB_METRICS}

    def export_queue(self, jobs: Iterable[JobRow], finished_counts: dict[str, int]) -> None:
        """Set the per-state job counts and the GPUs in use from the active jobs."""
        active = list(jobs)
        counts = Counter(job.state for job in active) + Counter(finished_counts)
        for state in JobState:
            self._metrics["factory_jobs"].set(float(counts.get(state.value, 0)), {"state": state.value})
        in_use = sum(num_gpus(job) for job in active if JobState(job.state).holds_gpus)
        self._metrics["factory_gpus_in_use"].set(float(in_use))

    def export_grid_target(self, target_kw: float | None) -> None:
        """The target of the grid event under way, beside the facility's power (NaN when none is)."""
        self._metrics["factory_grid_event_target_kw"].set(math.nan if target_kw is None else float(target_kw))

    def export_power_drift(self, drift_w: float | None) -> None:
        """What the budget keeps free for the facility's draw above nominal (NaN before a sample)."""
        self._metrics["factory_power_drift_w"].set(math.nan if drift_w is None else float(drift_w))

    def accounted_job(self, job: JobRow, record: dict[str, Any]) -> None:
        """`accounted`, for the job's team."""
        self.accounted(job.team, record)

    def accounted(self, team: str, record: dict[str, Any]) -> None:
        """Add a finished job's energy, cost and savings to its team's counters."""
        currency = str(record.get("currency", ""))
        if record.get("energy_kwh"):
            self._metrics["factory_job_energy_kwh_total"].inc(float(record["energy_kwh"]), {"team": team})
        for key, name in (("cost", "factory_job_cost_total"), ("savings", "factory_job_savings_total")):
            value = float(record.get(key) or 0.0)
            if value > 0:  # a Ray counter only grows; a negative saving shows in the job's record
                self._metrics[name].inc(value, {"team": team, "currency": currency})
