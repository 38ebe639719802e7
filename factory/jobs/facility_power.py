"""The power side of the live scheduler: measured drift, GPU power caps, and the budgets a step plans with.

Every control round the SchedulerActor reads its nodes' telemetry and hands it to `measure`; every
scheduling step plans with `cluster_view` and hands its caps to `keep_caps`. The actor does the Ray calls
(`read_nodes`, the agents' `apply_power_caps`); this manager does the arithmetic and keeps the state, so it
is unit-tested without Ray.

Invariants:
  * The power budget and every grid event's cap are kept on measured power: lowered by the drift above
    what the plan counts (`factory.jobs.measured_power`), while the drift is fresh (measured within
    `DRIFT_FRESH_ROUNDS` control rounds); a grid event's target is at the meter, so it is divided by the PUE.
  * What the plan counts a job to draw is its nominal watts, or its cap while its GPUs are capped.
  * Caps are offered to the policy only with `scheduler.power_caps` and where every GPU can be capped
    (`PowerCapKeeper.min_cap_share`); the floor is read before the first step of an event, even one right
    after a restart, so that no job is paused for want of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from factory.config import SchedulerConfig
from factory.jobs.measured_power import PowerDrift
from factory.jobs.power_caps import AskNodes, PowerCapKeeper
from factory.jobs.snapshot import ClusterView, num_gpus, placement_of
from factory.store import JobRow, StateStore
from factory.telemetry.models import NodeStatus

DRIFT_FRESH_ROUNDS = 5  # a drift not measured for this many control rounds is unknown (nominal watts)
GridCaps = Iterable[tuple[float, float, float, float]]  # (start_s, end_s, target_w at the meter, announced_s)


class FacilityPower:
    """Measured drift, GPU caps and the plan's budgets of one live factory (see the module docstring)."""

    def __init__(self, settings: SchedulerConfig, pue: float, store: StateStore,
                 read_nodes: Callable[[], list[NodeStatus]], ask_caps: AskNodes) -> None:
        self.settings, self.pue = settings, pue
        self._read_nodes = read_nodes
        self.drift = PowerDrift()  # measured power above the plan's draw: budgets keep it free
        self.caps = PowerCapKeeper(store, ask_caps)
        self.cap_share: float | None = None  # the lowest cap every GPU accepts, as a share of nominal
        self._floor_read = False  # cap_share is known (None included: no caps here), not merely unset

    def measure(self, nodes: Sequence[NodeStatus], holding: Iterable[JobRow], now_s: float) -> None:
        """One sample of every node against what the plan counts the jobs holding GPUs to draw."""
        nominal_w = self.settings.gpu_power_w
        self.cap_share = PowerCapKeeper.min_cap_share(nodes, nominal_w)
        self._floor_read = True
        planned_w = sum(num_gpus(job) * self.caps.caps_w.get(job.job_id, nominal_w) for job in holding)
        self.drift.observe(nodes, planned_w, now_s)

    def fresh_drift(self, now_s: float, speed_factor: float) -> PowerDrift:
        """The drift, unless no control round measured it for `DRIFT_FRESH_ROUNDS` (then an unknown one)."""
        max_age_s = DRIFT_FRESH_ROUNDS * self.settings.interval_s * speed_factor
        return self.drift.fresh(now_s, max_age_s)

    def cluster_view(self, node_gpus: Mapping[str, int], grid_caps: GridCaps, now_s: float,
                     speed_factor: float) -> ClusterView:
        """The GPUs, budget, quotas, events' caps and cap floor one scheduling step plans with."""
        settings, drift = self.settings, self.fresh_drift(now_s, speed_factor)
        margin_pct = settings.power_margin_pct
        events = [(start_s, end_s, drift.cap_w(target_w / self.pue, margin_pct), announced_s)
                  for start_s, end_s, target_w, announced_s in grid_caps]
        if events and settings.power_caps and not self._floor_read:  # not measured yet (a restart)
            self.cap_share = PowerCapKeeper.min_cap_share(self._read_nodes(), settings.gpu_power_w)
            self._floor_read = True
        return ClusterView({node: gpus for node, gpus in node_gpus.items() if gpus > 0},
                           power_budget_w=drift.budget_w(settings.power_budget_w, margin_pct),
                           quotas=dict(settings.quotas), grid_events=events,
                           min_cap_share=self.cap_share if settings.power_caps else None)

    def keep_caps(self, caps_w: Mapping[str, float], running: Iterable[JobRow],
                  alive: Collection[str]) -> str | None:
        """Set a step's caps on the nodes its capped jobs run on, restore every other GPU capped before;
        the agents' errors, if any."""
        placements = {job.job_id: [node for node, _ in placement_of(job)] for job in running
                      if job.job_id in caps_w}
        self.caps.keep(caps_w, placements, alive)
        return self.caps.last_error
