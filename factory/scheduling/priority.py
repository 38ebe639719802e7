"""`priority`: higher priority classes first, with aging so that nothing starves.

A job's effective priority is `priority + (now - submit_s) / aging_s`: every `aging_s` a job has
been in the system is worth one priority class. Because every job ages at the same rate, the order
of two jobs never changes over time (no thrashing); an old job eventually overtakes any newer one,
whatever its class (no starvation).

A waiting job pauses a running preemptible one only if it is at least one whole class above it
(`PREEMPT_MARGIN`), so near-equal jobs never displace each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.scheduling.dispatch import dispatch
from factory.scheduling.fifo import judge_deadlines
from factory.scheduling.gc_pause import cyclic_gc_paused
from factory.scheduling.model import Decisions, JobView, Phase, Snapshot

PREEMPT_MARGIN = 1.0


@dataclass(frozen=True)
class PriorityPolicy:
    """Priority classes, aged by time in the system; preempts across a class margin."""

    aging_s: float = 3600.0
    name: str = "priority"
    needs_prices: bool = False

    @cyclic_gc_paused
    def decide(self, snapshot: Snapshot) -> Decisions:
        """Rank by effective priority; preempt across a whole class."""
        now_s = snapshot.now_s

        def effective(job: JobView) -> float:
            return job.priority + (now_s - job.submit_s) / self.aging_s

        # Running jobs first among equals, so that a tie never displaces one.
        ranked = sorted(snapshot.jobs, key=lambda job: (-effective(job), job.phase is not Phase.RUNNING,
                                                        job.submit_s, job.job_id))

        def may_preempt(job: JobView, victim: JobView) -> bool:
            return effective(job) >= effective(victim) + PREEMPT_MARGIN

        admitted, infeasible = judge_deadlines(snapshot)
        return dispatch(snapshot, ranked, {}, may_preempt=may_preempt,
                        admitted=admitted, infeasible=infeasible)
