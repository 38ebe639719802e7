"""The power budget on measured power: how far the facility's draw strays from the jobs' nominal watts.

The policy plans in nominal watts (`scheduler.gpu_power_w` per busy GPU). What the facility draws
differs: idle GPUs draw power, real GPUs draw more (or less) than the estimate, CPUs draw too. The
SchedulerActor measures every control round and lowers the power budget and every grid event's cap by
the smoothed excess plus a margin (`scheduler.power_margin_pct`), so that what is measured, not what
is planned, stays under them.

Invariants:
  * The correction is never negative: a draw below nominal lends the budget nothing, since a job's
    draw before it runs is only its estimate.
  * A drift is followed within a few samples: each sample weighs `SMOOTHING` in the running mean, so
    four samples correct 94 % of a step.
  * Nominal is the planned draw of the GPUs the factory's jobs hold (RUNNING or PAUSING; a job whose GPUs
    are capped for a grid event at its cap, so that the cap's saving does not hide other draw), never of GPUs
    the meters see busy for anything else: an inference endpoint's GPU, or another process's, is drift
    the budget keeps free, since the plan never counts it. (A pause the meters have not seen yet is a
    drift for a sample or two, halved by the smoothing.)
  * A drift not measured for a while is unknown (`fresh`): the plan falls back to nominal watts.
  * The budget (`scheduler.power_budget_w`, GPU watts) is corrected by the GPUs' drift; a grid event's
    cap (IT watts: its target at the meter / PUE) by the IT drift, which includes CPU power.
  * Before the first sample nothing is corrected and no margin is taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from factory.jobs.snapshot import deadline_forces, num_gpus, preemptible
from factory.store import JobRow
from factory.telemetry.models import NodeStatus

SMOOTHING = 0.5  # weight of the newest sample in the running mean of the drift


@dataclass
class PowerDrift:
    """The smoothed excess of measured power over the nominal draw of the GPUs the factory's jobs hold
    (W; None: no sample)."""

    gpu_w: float | None = None
    it_w: float | None = None
    observed_s: float | None = None  # factory time of the last sample

    def observe(self, nodes: Sequence[NodeStatus], nominal_w: float, now_s: float) -> None:
        """Add one telemetry sample of every alive node, taken at `now_s` (factory time), against
        `nominal_w`: the planned draw of the GPUs the factory's jobs hold."""
        alive = [node for node in nodes if node.state == "alive"]
        if not alive:
            return
        self.gpu_w = _smoothed(self.gpu_w, sum(node.gpu_power_w for node in alive) - nominal_w)
        self.it_w = _smoothed(self.it_w, sum(node.it_power_w for node in alive) - nominal_w)
        self.observed_s = now_s

    def fresh(self, now_s: float, max_age_s: float) -> PowerDrift:
        """This drift if sampled within `max_age_s` (factory seconds) of `now_s`, else an unknown one."""
        if self.observed_s is None or now_s - self.observed_s > max_age_s:
            return PowerDrift()
        return self

    def budget_w(self, budget_w: float | None, margin_pct: float) -> float | None:
        """The GPU power budget the plan may fill in nominal watts (None: no budget)."""
        if budget_w is None:
            return None
        return _corrected(budget_w, self.gpu_w, margin_pct)

    def cap_w(self, it_cap_w: float, margin_pct: float) -> float:
        """A grid event's cap on IT power, as nominal watts the plan may fill."""
        return _corrected(it_cap_w, self.it_w, margin_pct)


def fixed_load_w(running: Iterable[JobRow], now_s: float, nominal_gpu_w: float, interval_s: float,
                 drift: PowerDrift) -> tuple[float, list[str]]:
    """IT watts no pause can shed now, and what they are: the running jobs that cannot be paused or whose
    deadline cannot move (at their nominal watts), and the measured draw above the jobs' nominal watts
    (idle GPUs, CPUs, inference endpoints) as 'other draw'."""
    fixed = [job for job in running if not preemptible(job) or deadline_forces(job, now_s, interval_s)]
    other_w = max(0.0, drift.it_w or 0.0)
    names = sorted(job.name for job in fixed)
    if other_w:
        names.append("other draw (idle GPUs, CPUs, endpoints)")
    return nominal_gpu_w * sum(num_gpus(job) for job in fixed) + other_w, names


def _smoothed(mean_w: float | None, sample_w: float) -> float:
    return sample_w if mean_w is None else SMOOTHING * sample_w + (1.0 - SMOOTHING) * mean_w


def _corrected(limit_w: float, drift_w: float | None, margin_pct: float) -> float:
    """`limit_w` less the drift above nominal and the margin, never below 0 (inf stays inf)."""
    if drift_w is None or math.isinf(limit_w):
        return limit_w
    return max(0.0, limit_w * (1.0 - margin_pct / 100.0) - max(0.0, drift_w))
