"""GPU power caps as a lever during a grid event: cap running jobs before pausing any of them.

Under a power limit a capped GPU keeps more work per watt than a paused one (its throughput falls less than
its power: `factory.telemetry.backends.simulated.throughput_share`), and it pays no resume. So while a grid
event holds the facility under a target, the levers are pulled in the order that costs least:

  1. defer: queued jobs that do not fit wait (the policy plans them after the event); and while a running
     job is kept under a cap, a job the policy may put off (`may_cap`: not due), ranked below that job,
     starts only if it fits uncapped beside the kept jobs: a start that can wait never costs a running
     job its run, nor deepens the caps of the jobs running;
  2. cap: running preemptible jobs that the budget would pause keep running, their GPUs and those of every
     running job the policy allows to slow down (`may_cap`) capped at one share of their nominal watts, as
     long as that share is at least `min_cap_share` (one share for all: the same watts buy the most
     throughput when spread evenly);
  3. pause: only the jobs that do not fit even at the lowest cap are paused.

Invariants:
  * Only during a grid event (`Snapshot.grid_cap_now_w`); the facility's standing budget is kept as before.
  * Jobs that cannot be paused are the fixed load: never capped (their deadline cannot move); neither is a
    job the policy needs at full speed (`may_cap` refuses it: with price-aware, one due now), since its
    plan counts on its whole speed. A job the budget would pause may always be capped instead: a cap
    slows it, a pause stops it.
  * Capped power (nominal watts x share) stays within the budget the dispatch kept to; no job starts here.
  * A job is kept running only on GPUs no job started by the same dispatch took: the starts that stand
    come first (those the policy may not put off, those ranked above every job paused for the power
    budget, and those that preempted a job to get their room: their victims stay paused). The others are
    looked at after the paused jobs are kept; each that does not fit uncapped becomes a power-budget wait.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from factory.scheduling.model import Decisions, JobView, Phase, Snapshot, Wait, WaitReason, grid_event_hold

EPS_W = 1e-9


def cap_before_pausing(snapshot: Snapshot, decisions: Decisions,
                       may_cap: Callable[[JobView], bool] | None = None, *,
                       rank: Mapping[str, int] | None = None, must_start: Collection[str] = ()) -> Decisions:
    """`decisions` with the jobs paused for the power budget kept running under caps where they fit.

    `rank`: the dispatch's ranking (job id -> position; a job the policy did not rank counts as above
    every start); `must_start`: starts that took room from preempted jobs.
    """
    share_min = snapshot.min_cap_share
    budget_w = snapshot.grid_cap_now_w()
    if share_min is None or budget_w is None:
        return decisions
    budget_w = min(budget_w, snapshot.budget_now_w() or budget_w)
    jobs = {job.job_id: job for job in snapshot.jobs}
    paused = {pause.job_id for pause in decisions.pauses}
    # Starts the policy may put off (not due), ranked below a job paused for the power budget, are left out
    # at first: that running job comes before them.
    position = rank or {}
    budget_paused = [position.get(pause.job_id, -1) for pause in decisions.pauses
                     if pause.reason is WaitReason.POWER_BUDGET and jobs[pause.job_id].preemptible]
    highest_paused = min(budget_paused, default=None)
    deferrable = [] if highest_paused is None else [
        start for start in decisions.starts
        if start.job_id not in must_start and (may_cap is None or may_cap(jobs[start.job_id]))
        and position.get(start.job_id, len(position)) > highest_paused]
    put_off = {start.job_id for start in deferrable}
    running = [job for job in snapshot.jobs if job.phase is Phase.RUNNING and job.job_id not in paused]
    running += [jobs[start.job_id] for start in decisions.starts if start.job_id not in put_off]
    cappable = [job.preemptible and (may_cap is None or may_cap(job)) for job in running]
    fixed_w = sum(job.draw_w for job, cap in zip(running, cappable, strict=True) if not cap)
    capped = [job for job, cap in zip(running, cappable, strict=True) if cap]
    capped_w = sum(job.draw_w for job in capped)
    # GPUs free once the decisions are carried out: a paused job may be kept only where its own still are.
    free = Counter(snapshot.free_gpus())
    for pause in decisions.pauses:
        free.update(dict(jobs[pause.job_id].placement))
    for start in decisions.starts:
        if start.job_id not in put_off:
            free.subtract(dict(start.placement))
    kept: set[str] = set()
    # The pauses the dispatch made last (the lowest ranked of the jobs the policy wanted running) come
    # first when reversed: the highest ranked are kept first.
    for pause in reversed(decisions.pauses):
        job = jobs[pause.job_id]
        if pause.reason is not WaitReason.POWER_BUDGET or not job.preemptible:
            continue
        if any(free[node] < gpus for node, gpus in job.placement):
            continue  # a job started by this dispatch took its GPUs
        if fixed_w + share_min * (capped_w + job.draw_w) <= budget_w + EPS_W:
            free.subtract(dict(job.placement))
            kept.add(job.job_id)
            capped.append(job)
            capped_w += job.draw_w
    if not kept:
        return decisions
    # The starts put off run only where they fit beside the kept jobs without deepening anyone's cap.
    starts = [start for start in decisions.starts if start.job_id not in put_off]
    waits = list(decisions.waits)
    for start in deferrable:
        job = jobs[start.job_id]
        fits_gpus = all(free[node] >= gpus for node, gpus in start.placement)
        if fits_gpus and fixed_w + capped_w + job.draw_w <= budget_w + EPS_W:
            free.subtract(dict(start.placement))
            starts.append(start)
            fixed_w += job.draw_w  # uncapped: it took only room the kept jobs did not need
        else:
            waits.append(Wait(job.job_id, WaitReason.POWER_BUDGET,
                              f"{grid_event_hold(budget_w)}; the running jobs keep it under caps"))
    share = max(share_min, min(1.0, (budget_w - fixed_w) / capped_w))
    caps = tuple((job.job_id, share * job.power_w) for job in capped) if share < 1.0 - EPS_W else ()
    return replace(decisions, starts=tuple(starts), waits=tuple(waits),
                   pauses=tuple(p for p in decisions.pauses if p.job_id not in kept), power_caps_w=caps)
