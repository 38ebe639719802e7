"""`fifo`: run jobs as soon as they fit, in arrival order, with backfill.

The behaviour of a plain cluster scheduler, and the baseline every report compares against: it
never waits for a price, never pauses a job for one (only a quota reclaim pauses a borrower), and a
job that does not fit does not block smaller ones behind it.
"""

from __future__ import annotations

from factory.scheduling.dispatch import dispatch
from factory.scheduling.gc_pause import cyclic_gc_paused
from factory.scheduling.model import Decisions, Phase, Snapshot, deadline_infeasible


class FifoPolicy:
    """Arrival order; running jobs are never displaced."""

    name = "fifo"
    needs_prices = False

    @cyclic_gc_paused
    def decide(self, snapshot: Snapshot) -> Decisions:
        """Everyone in arrival order; `dispatch` backfills around jobs that do not fit."""
        running = [job for job in snapshot.jobs if job.phase is Phase.RUNNING]
        waiting = sorted((job for job in snapshot.jobs if job.phase is not Phase.RUNNING),
                         key=lambda job: (job.submit_s, job.job_id))
        admitted, infeasible = judge_deadlines(snapshot)
        return dispatch(snapshot, running + waiting, {}, admitted=admitted, infeasible=infeasible)


def judge_deadlines(snapshot: Snapshot) -> tuple[list[str], list[tuple[str, str]]]:
    """Admit the jobs not yet judged; those that cannot finish in time even if started now are infeasible."""
    admitted, infeasible = [], []
    for job in snapshot.jobs:
        if job.admitted:
            continue
        admitted.append(job.job_id)
        why = deadline_infeasible(job, snapshot.now_s, snapshot.preempt_overhead_s)
        if why:
            infeasible.append((job.job_id, why))
    return admitted, infeasible
