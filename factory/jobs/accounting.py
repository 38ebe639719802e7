"""What a job consumed and what it cost, once it ends: energy, money, carbon, waiting, savings.

Nomenclature:
  runs           -- the job's runs on its GPUs, `[[start_s, end_s, gpus], ...]` (`JobRow.schedule`).
  energy         -- GPU energy the telemetry attributed to the job (`FACTORY_JOB_ID` of its workers);
                    when telemetry saw none (e.g. a cluster without it), the planning estimate
                    `gpus x gpu_power_w x run time`, and `energy_source` says which.
  profile        -- the energy spread over the runs in proportion to GPU-seconds: the consumption
                    profile whose exact price integral (`GridPriceActor.energy_cost`) is the cost.
  counterfactual -- the same runs laid end to end from the job's submission: what the job would
                    have cost had it started at once and never paused. `savings = that - cost`.
  waiting        -- factory seconds the job spent QUEUED, WAITING for each reason (price, capacity,
                    quota, power budget, priority) and PAUSED, from its timeline.

Invariants: pure (the energy and the pricing function are passed in), so it is tested without Ray.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from factory.jobs.states import JobState
from factory.jobs.stored import schedule_of
from factory.prices.models import ConsumptionInterval, EnergyCost
from factory.store import JobEvent, JobRow

PriceProfile = Callable[[list[ConsumptionInterval]], EnergyCost]


def account(job: JobRow, events: list[JobEvent], attributed_kwh: float | None, price: PriceProfile,
            gpu_power_w: float) -> dict[str, Any]:
    """The job's accounting record (stored as `JobRow.accounting`)."""
    runs = schedule_of(job).runs
    gpu_seconds = [max(0.0, end - start) * gpus for start, end, gpus in runs]
    total_gpu_s = sum(gpu_seconds)
    if attributed_kwh is not None and attributed_kwh > 0:
        energy_kwh, source = float(attributed_kwh), "telemetry"
    else:
        energy_kwh, source = total_gpu_s * gpu_power_w / 3.6e6, "estimate"
    record: dict[str, Any] = {
        "gpu_hours": total_gpu_s / 3600.0,
        "energy_kwh": energy_kwh,
        "energy_source": source,
        "wait_s": waiting_s(events),
    }
    if not runs or energy_kwh <= 0:
        return record | {"cost": 0.0, "carbon_kg": None, "cost_if_run_at_once": 0.0, "savings": 0.0}
    profile = [ConsumptionInterval(start_s=start, end_s=max(end, start + 1e-3),
                                   energy_kwh=energy_kwh * share / total_gpu_s)
               for (start, end, _), share in zip(runs, gpu_seconds, strict=True)]
    at_once, offset_s = [], job.submitted_s
    for interval in profile:
        length_s = interval.end_s - interval.start_s
        at_once.append(ConsumptionInterval(start_s=offset_s, end_s=offset_s + length_s,
                                           energy_kwh=interval.energy_kwh))
        offset_s += length_s
    actual, counterfactual = price(profile), price(at_once)
    return record | {
        "cost": actual.cost,
        "currency": actual.currency,
        "average_price_per_mwh": actual.average_price_per_mwh,
        "carbon_kg": actual.carbon_kg,
        "cost_if_run_at_once": counterfactual.cost,
        "savings": counterfactual.cost - actual.cost,
    }


def waiting_s(events: list[JobEvent]) -> dict[str, float]:
    """Factory seconds spent in each kind of wait, from the timeline (an open wait counts to its end)."""
    spent: dict[str, float] = defaultdict(float)
    for event, following in zip(events, events[1:], strict=False):
        kind = _wait_kind(event)
        if kind is not None:
            spent[kind] += max(0.0, following.time_s - event.time_s)
    return dict(spent)


def _wait_kind(event: JobEvent) -> str | None:
    if event.state == JobState.QUEUED:
        return "queued"
    if event.state == JobState.PAUSED:
        return "paused"
    if event.state == JobState.WAITING:
        return event.reason.split(":", 1)[0] or "waiting"
    return None


def by_team(jobs: Iterable[JobRow]) -> dict[str, dict[str, float]]:
    """Per team, over its accounted jobs: jobs, GPU-hours, kWh, cost, cost if run at once, savings."""
    teams: dict[str, dict[str, float]] = {}
    for job in jobs:
        record = job.accounting
        if not record:
            continue
        team = teams.setdefault(job.team, {"jobs": 0, "gpu_hours": 0.0, "energy_kwh": 0.0, "cost": 0.0,
                                           "cost_if_run_at_once": 0.0, "savings": 0.0})
        team["jobs"] += 1
        for key in ("gpu_hours", "energy_kwh", "cost", "cost_if_run_at_once", "savings"):
            team[key] += float(record.get(key) or 0.0)
    return teams
