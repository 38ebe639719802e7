"""From the store's jobs, the cluster and the price forecast to the policy's `Snapshot`.

The `schedule` facts the controller keeps on each job row are `factory.jobs.stored.JobSchedule`.

Invariants:
  * A job's remaining run time is its estimate minus what it has run, never below
    `MIN_REMAINING_FRACTION` of the estimate: a job that outlives its estimate is still a job that
    needs its GPUs, not one that is done.
  * A job the policy may pause is a preemptible `train` job: a `command` has no checkpoint, and a
    `tune` sweep holds its GPUs until it ends (its trials are not resumable one by one here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from factory.jobs.states import JobState
from factory.jobs.stored import schedule_of, stored_spec
from factory.prices.models import Forecast
from factory.prices.objective import Objective, ObjectiveError, weigh
from factory.scheduling.model import JobView, Phase, PriceOutlook
from factory.store import JobRow

MIN_REMAINING_FRACTION = 0.05
DAY_S = 86400.0  # the window of the pause cap (`scheduler.max_pauses_per_day`)


@dataclass(frozen=True)
class ClusterView:
    """The GPUs the factory may schedule on (healthy nodes), its power budget and team quotas.

    `grid_events`: (start_s, end_s, target_w, announced_s) of the grid events that still cap the
    jobs' planned power (`factory.scheduling.model.grid_caps_w`). `min_cap_share`: the lowest GPU power
    cap every node accepts, as a share of a GPU's nominal watts (None: caps are no lever).
    """

    node_gpus: Mapping[str, int]
    power_budget_w: float | None = None
    quotas: Mapping[str, int] = field(default_factory=dict)
    grid_events: Sequence[tuple[float, float, float, float]] = ()
    min_cap_share: float | None = None


def num_gpus(job: JobRow) -> int:
    """GPUs of the whole job (all workers)."""
    return stored_spec(job).total_gpus


def preemptible(job: JobRow) -> bool:
    """Whether the policy may pause the job (it resumes from its latest checkpoint)."""
    return stored_spec(job).preemptible and job.kind == "train"


def ran_s(job: JobRow, now_s: float) -> float:
    """Factory seconds the job has run so far, the current run included."""
    schedule = schedule_of(job)
    current = max(0.0, now_s - schedule.started_s) if JobState(job.state).holds_gpus and \
        schedule.started_s is not None else 0.0
    return schedule.run_s + current


def remaining_s(job: JobRow, now_s: float) -> float:
    """Run time the job still needs by its estimate (see the module invariants)."""
    estimate_s = stored_spec(job).estimated_duration_s
    return max(estimate_s - ran_s(job, now_s), MIN_REMAINING_FRACTION * estimate_s, 1.0)


def deadline_forces(job: JobRow, now_s: float, interval_s: float) -> bool:
    """Whether waiting one more price interval would leave the job too little time before its deadline."""
    return job.deadline_s is not None and now_s + interval_s + remaining_s(job, now_s) > job.deadline_s


def job_view(job: JobRow, now_s: float, gpu_power_w: float) -> JobView:
    """The job as the policy sees it."""
    schedule = schedule_of(job)
    if job.state == JobState.RUNNING:
        phase = Phase.RUNNING
    elif schedule.run_s > 0:
        phase = Phase.PAUSED
    else:
        phase = Phase.QUEUED
    spec = stored_spec(job)
    return JobView(
        job_id=job.job_id, num_gpus=num_gpus(job), power_w=gpu_power_w, submit_s=job.submitted_s,
        remaining_s=remaining_s(job, now_s), phase=phase, deadline_s=job.deadline_s,
        preemptible=preemptible(job), gpus_per_worker=spec.gpus_per_worker or None, team=job.team,
        priority=spec.priority,
        placement=placement_of(job) if phase is Phase.RUNNING else (),
        admitted=schedule.admitted, at_risk=schedule.at_risk,
        pauses_today=pauses_since(job, now_s - DAY_S), resume_overhead_s=learnt_resume_overhead_s(job),
        started_s=schedule.started_s if phase is Phase.RUNNING else None,
    )


def pauses_since(job: JobRow, since_s: float) -> int:
    """How many times the policy paused the job after `since_s` (factory time)."""
    return sum(1 for time_s in schedule_of(job).pauses_s if time_s > since_s)


def learnt_resume_overhead_s(job: JobRow) -> float | None:
    """The mean measured overhead of the job's earlier resumes; None before its first (the policy then
    uses `scheduler.preempt_overhead_s`)."""
    measured = schedule_of(job).resume_overheads_s
    return sum(measured) / len(measured) if measured else None


def placement_of(job: JobRow) -> tuple[tuple[str, int], ...]:
    """Where the job's current run holds GPUs: ((node, gpus), ...)."""
    return schedule_of(job).placement


def outlook_from_forecast(forecast: Forecast, objective: Objective = "cost",
                          carbon_price_per_tonne: float | None = None) -> PriceOutlook:
    """The policy's outlook from the GridPriceActor's forecast (known prices, then estimates).

    Under a carbon `objective` each interval's value is what that objective weighs
    (`factory.prices.objective.weigh`: the carbon intensity, or the price with carbon priced in).
    An interval without a value (no estimate either) takes the last one before it, so a gap never
    looks free.

    Raises:
        ObjectiveError: a carbon objective on a forecast that has no carbon at all.
    """
    if objective != "cost" and forecast.points and all(p.carbon_g_per_kwh is None for p in forecast.points):
        raise ObjectiveError(f"scheduler.objective is '{objective}' but the price feed has no carbon: set "
                             "prices.carbon (a carbon trace) or use a source with carbon")
    market = _carried([point.price_per_mwh for point in forecast.points])
    carbon = [point.carbon_g_per_kwh for point in forecast.points]
    return PriceOutlook(
        starts_s=np.array([point.start_s for point in forecast.points], dtype=float),
        interval_s=float(forecast.interval_s),
        price_per_mwh=market if objective == "cost" else _carried(
            [weigh(objective, point.price_per_mwh, point.carbon_g_per_kwh, carbon_price_per_tonne)
             for point in forecast.points]),
        known=np.array([point.known for point in forecast.points], dtype=bool),
        market_price_per_mwh=None if objective == "cost" else market,
        # Unknown now (the feed has no carbon for this interval): no carbon gate, rather than a later value.
        carbon_g_per_kwh=None if not carbon or carbon[0] is None else _carried(carbon),
    )


def _carried(values: list[float | None]) -> np.ndarray:
    """`values` with each gap taking the last value before it (the first known one at the start)."""
    filled: list[float] = []
    last = next((value for value in values if value is not None), 0.0)
    for value in values:
        last = last if value is None else value
        filled.append(float(last))
    return np.array(filled, dtype=float)
