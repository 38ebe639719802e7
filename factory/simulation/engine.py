"""The discrete-event simulator: a job trace and a price trace through one scheduling policy.

Nomenclature:
  event    -- a job arrives, a job finishes, or a price interval begins. Between two events nothing
              changes, so running jobs progress linearly and the power draw is constant.
  decision -- one call of the policy on a `Snapshot` built exactly as the live scheduler builds it:
              the jobs in the system, the GPUs per node, the power budget, the quotas, and the price
              outlook a `PriceFeed` reveals (known up to the forecast horizon, estimated beyond).

Invariants:
  * The policy sees only what the live feed would reveal at that time; the true prices are used
    only to charge the energy afterwards (`profile_cost`, exact on the price intervals).
  * A started job holds exactly the GPUs the policy placed it on until it pauses or finishes; a
    resumed job first redoes `preempt_overhead_s` of work (restart from its checkpoint).
  * Every job runs until it has done its whole duration: the simulation ends when the last job does.
  * Grid events (`factory.simulation.grid_events`) lower the power budget while they last: the
    policy sees each from its announcement (`Snapshot.grid_cap_w`), and decides again at every
    announcement, start and end.
  * A job whose GPUs a decision caps (`Decisions.power_caps_w`, where `Cluster.min_cap_share` allows caps)
    draws the cap and progresses at `throughput_share` of its speed until the next decision.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from factory.errors import FactoryError
from factory.prices.cost import profile_cost
from factory.prices.feed import PriceFeed
from factory.prices.series import IntervalSeries
from factory.scheduling.model import JobView, Phase, Policy, PriceOutlook, Snapshot
from factory.simulation.grid_events import GridEvents
from factory.simulation.trace import JobTrace
from factory.telemetry.backends.simulated import throughput_share

DONE_EPS_S = 1e-6
DAY_S = 86400.0
MAX_OUTLOOK_S = 14 * 86400.0  # deadlines further out are planned from what two weeks show
WAITING, ARRIVED_QUEUED, RUNNING, PAUSED, DONE = range(5)


@dataclass(frozen=True)
class Cluster:
    """GPUs per node, the facility power budget and team quotas of a simulated cluster."""

    node_gpus: dict[str, int]
    power_budget_w: float | None = None
    quotas: dict[str, int] = field(default_factory=dict)
    min_cap_share: float | None = None  # the lowest GPU power cap, as a share of nominal; None: no caps

    @classmethod
    def uniform(cls, gpus: int, gpus_per_node: int | None = None, **kwargs: object) -> Cluster:
        """`gpus` GPUs in nodes of `gpus_per_node` (one node of all of them by default)."""
        per_node = gpus_per_node or gpus
        sizes = [per_node] * (gpus // per_node) + ([gpus % per_node] if gpus % per_node else [])
        width = len(str(len(sizes)))
        return cls({f"node-{i:0{width}d}": size for i, size in enumerate(sizes)}, **kwargs)  # type: ignore[arg-type]

    @property
    def total_gpus(self) -> int:
        """GPUs of all nodes together."""
        return sum(self.node_gpus.values())


@dataclass
class Outcome:
    """What happened to every job, and the facility's power profile, after one simulation."""

    policy: str
    finish_s: np.ndarray          # absolute factory time
    first_start_s: np.ndarray
    run_s: np.ndarray             # time on GPUs, resume overheads included
    preemptions: np.ndarray
    infeasible: np.ndarray        # bool: reported infeasible at admission
    segment_start_s: np.ndarray   # piecewise-constant facility power
    segment_end_s: np.ndarray
    segment_power_w: np.ndarray
    segment_busy_gpus: np.ndarray
    segment_fixed_w: np.ndarray   # the power of the running jobs that cannot be paused (the fixed load)
    timeline_s: np.ndarray        # at each decision: time, jobs waiting, GPUs busy
    timeline_waiting: np.ndarray
    timeline_busy_gpus: np.ndarray
    decisions: int
    wall_s: float
    capped_gpu_s: float = 0.0     # GPU-seconds run under a power cap


def simulate(trace: JobTrace, feed: PriceFeed, cluster: Cluster, policy: Policy, *,
             time_zero_s: float, preempt_overhead_s: float = 0.0,
             grid_events: GridEvents | None = None) -> Outcome:
    """Replay `trace` (submit times relative to `time_zero_s`) through `policy` on `cluster`."""
    return _Run(trace, feed, cluster, policy, time_zero_s, preempt_overhead_s, grid_events).run()


class _Run:
    def __init__(self, trace: JobTrace, feed: PriceFeed, cluster: Cluster, policy: Policy,
                 time_zero_s: float, overhead_s: float, grid_events: GridEvents | None = None) -> None:
        self.trace, self.feed, self.cluster, self.policy = trace, feed, cluster, policy
        self.overhead_s = overhead_s
        self.grid_events = grid_events if grid_events is not None and len(grid_events) else None
        self._event_times = [] if self.grid_events is None else self.grid_events.boundaries_s().tolist()
        n = len(trace)
        self.ids = [str(x) for x in trace.job_id]
        self.submit_s = (time_zero_s + trace.submit_s).astype(float)
        self.deadline_s = self.submit_s + trace.deadline_s
        self.gpus = [int(x) for x in trace.num_gpus]
        self.power_w = [float(x) for x in trace.power_w]
        self.preemptible = [bool(x) for x in trace.preemptible]
        self.teams = [str(x) for x in trace.team]
        self.priorities = [int(x) for x in trace.priority]
        self.remaining_s = trace.duration_s.astype(float).copy()
        self.cap_share = [1.0] * n  # of its nominal power, until the next decision
        self.speed = [1.0] * n      # work done per second of run time (under a cap, less than 1)
        self.state = [WAITING] * n
        self.placement: list[tuple[tuple[str, int], ...]] = [()] * n
        self.admitted = [False] * n
        self.at_risk = np.zeros(n, dtype=bool)
        self.finish_s = np.full(n, np.nan)
        self.first_start_s = np.full(n, np.nan)
        self.run_start_s = np.full(n, np.nan)  # when the current run began
        self.run_s = np.zeros(n)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.pause_times_s: list[list[float]] = [[] for _ in range(n)]  # for the pause cap (last 24 h)
        self.arrivals = sorted(range(n), key=lambda i: (self.submit_s[i], i))
        self.active: set[int] = set()
        self.running: set[int] = set()
        self.price_series = self._price_series()
        self._outlook_cache: tuple[int, float, PriceOutlook] | None = None
        # A policy that still holds jobs this long after the last deadline will never start them.
        self._give_up_s = float(self.deadline_s.max(initial=time_zero_s)) + MAX_OUTLOOK_S

    def _price_series(self) -> IntervalSeries:
        span = self.feed.provider.span()
        assert span is not None, "the simulator needs a loaded price trace"
        series = self.feed.provider.price(span[0], span[1])
        assert series is not None
        return series

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> Outcome:
        wall_start = time.perf_counter()
        needs_prices = self.policy.needs_prices
        interval_s = self.price_series.interval_s
        grid_start_s = self.price_series.start_s
        segments: list[tuple[float, float, float, int, float]] = []
        timeline: list[tuple[float, int, int]] = []
        next_arrival = 0
        now_s = self.submit_s[self.arrivals[0]] if self.arrivals else 0.0
        decisions = 0
        changed = True
        finishing: list[tuple[float, int]] = []  # heap of (finish time if uninterrupted, job)
        decide_again_s = math.inf  # when the policy asked to decide again (see `Decisions.decide_again_s`)
        next_event = 0  # the next grid event announcement, start or end
        capped_gpu_s = 0.0
        while True:
            while next_event < len(self._event_times) and self._event_times[next_event] <= now_s + DONE_EPS_S:
                next_event += 1
                changed = True
            while next_arrival < len(self.arrivals) and \
                    self.submit_s[self.arrivals[next_arrival]] <= now_s + DONE_EPS_S:
                job = self.arrivals[next_arrival]
                self.state[job] = ARRIVED_QUEUED
                self.active.add(job)
                next_arrival += 1
                changed = True
            if not self.active:
                if next_arrival >= len(self.arrivals):
                    break
                now_s = float(self.submit_s[self.arrivals[next_arrival]])
                continue
            if changed or needs_prices or now_s >= decide_again_s - DONE_EPS_S:
                decide_again_s = self._decide(now_s, needs_prices)
                decisions += 1
                finishing = [(now_s + self.remaining_s[j] / self.speed[j], j) for j in self.running]
                heapq.heapify(finishing)
                busy = sum(self.gpus[j] for j in self.running)
                timeline.append((now_s, len(self.active) - len(self.running), busy))
            changed = False
            next_s = math.inf
            if next_arrival < len(self.arrivals):
                next_s = float(self.submit_s[self.arrivals[next_arrival]])
            if finishing:
                next_s = min(next_s, finishing[0][0])
            if next_event < len(self._event_times):
                next_s = min(next_s, self._event_times[next_event])
            if decide_again_s > now_s + DONE_EPS_S:
                next_s = min(next_s, decide_again_s)
            if needs_prices:
                elapsed = math.floor((now_s - grid_start_s) / interval_s + 1e-9)
                boundary = grid_start_s + (elapsed + 1) * interval_s
                next_s = min(next_s, boundary)
            if not self.running and (not math.isfinite(next_s) or now_s > self._give_up_s):
                raise FactoryError(f"policy {self.policy.name} left "
                                   f"{len(self.active)} jobs waiting with nothing running; they can never "
                                   "start (check --quota and --power-budget-kw against the jobs)")
            step_s = next_s - now_s
            if self.running and step_s > 0:
                power = sum(self.gpus[j] * self.power_w[j] * self.cap_share[j] for j in self.running)
                busy = sum(self.gpus[j] for j in self.running)
                fixed = sum(self.gpus[j] * self.power_w[j] for j in self.running if not self.preemptible[j])
                segments.append((now_s, next_s, power, busy, fixed))
                for j in self.running:
                    self.remaining_s[j] -= step_s * self.speed[j]
                    self.run_s[j] += step_s
                    if self.cap_share[j] < 1.0:
                        capped_gpu_s += step_s * self.gpus[j]
            now_s = next_s
            while finishing and finishing[0][0] <= now_s + DONE_EPS_S:
                _, j = heapq.heappop(finishing)
                if j in self.running and self.remaining_s[j] <= DONE_EPS_S:
                    self._finish(j, now_s)
                    changed = True
        seg = np.array(segments, dtype=float).reshape(-1, 5)
        tl = np.array(timeline, dtype=float).reshape(-1, 3)
        return Outcome(
            policy=self.policy.name,
            finish_s=self.finish_s, first_start_s=self.first_start_s, run_s=self.run_s,
            preemptions=self.preemptions, infeasible=self.at_risk,
            segment_start_s=seg[:, 0], segment_end_s=seg[:, 1], segment_power_w=seg[:, 2],
            segment_busy_gpus=seg[:, 3], segment_fixed_w=seg[:, 4], timeline_s=tl[:, 0],
            timeline_waiting=tl[:, 1],
            timeline_busy_gpus=tl[:, 2], decisions=decisions, wall_s=time.perf_counter() - wall_start,
            capped_gpu_s=capped_gpu_s,
        )

    def _finish(self, j: int, now_s: float) -> None:
        self.state[j] = DONE
        self.finish_s[j] = now_s
        self.remaining_s[j] = 0.0
        self.running.discard(j)
        self.active.discard(j)
        self.placement[j] = ()

    # -- one decision --------------------------------------------------------------------------

    def _decide(self, now_s: float, needs_prices: bool) -> float:
        """Ask the policy and carry out its decisions; returns when it asked to decide again (or inf)."""
        views = [self._view(j, now_s) for j in sorted(self.active)]
        outlook = self._outlook(now_s, views) if needs_prices else None
        snapshot = Snapshot(now_s=now_s, node_gpus=self.cluster.node_gpus, jobs=views, prices=outlook,
                            power_budget_w=self.cluster.power_budget_w, quotas=self.cluster.quotas,
                            preempt_overhead_s=self.overhead_s, grid_cap_w=self._grid_cap_w(now_s, outlook),
                            min_cap_share=self.cluster.min_cap_share)
        decisions = self.policy.decide(snapshot)
        index = {self.ids[j]: j for j in self.active}
        for job_id in decisions.admitted:
            self.admitted[index[job_id]] = True
        for job_id, _ in decisions.infeasible:
            self.at_risk[index[job_id]] = True
        for pause in decisions.pauses:
            j = index[pause.job_id]
            self.running.discard(j)
            self.state[j] = PAUSED
            self.placement[j] = ()
            self.preemptions[j] += 1
            self.pause_times_s[j].append(now_s)
        for start in decisions.starts:
            j = index[start.job_id]
            if self.state[j] == PAUSED:
                self.remaining_s[j] += self.overhead_s
            if math.isnan(self.first_start_s[j]):
                self.first_start_s[j] = now_s
            self.run_start_s[j] = now_s
            self.state[j] = RUNNING
            self.placement[j] = start.placement
            self.running.add(j)
        for j in self.running:
            self.cap_share[j], self.speed[j] = 1.0, 1.0
        for job_id, cap_w in decisions.power_caps_w:
            j = index[job_id]
            self.cap_share[j] = min(1.0, cap_w / self.power_w[j]) if self.power_w[j] > 0 else 1.0
            self.speed[j] = throughput_share(self.cap_share[j], 1.0)
        return math.inf if decisions.decide_again_s is None else decisions.decide_again_s

    def _grid_cap_w(self, now_s: float, outlook: PriceOutlook | None) -> np.ndarray | None:
        """The events' cap per interval of `outlook` (just the current one without an outlook)."""
        if self.grid_events is None:
            return None
        if outlook is None:
            interval_s = self.price_series.interval_s
            starts_s = np.array([math.floor((now_s - self.price_series.start_s) / interval_s + 1e-9)
                                 * interval_s + self.price_series.start_s])
        else:
            starts_s, interval_s = np.asarray(outlook.starts_s, dtype=float), outlook.interval_s
        return self.grid_events.cap_w(now_s, starts_s, interval_s)

    def _view(self, j: int, now_s: float) -> JobView:
        state = self.state[j]
        phase = Phase.RUNNING if state == RUNNING else Phase.PAUSED if state == PAUSED else Phase.QUEUED
        return JobView(
            job_id=self.ids[j], num_gpus=self.gpus[j], power_w=self.power_w[j],
            submit_s=float(self.submit_s[j]), remaining_s=max(0.0, float(self.remaining_s[j])),
            phase=phase, deadline_s=float(self.deadline_s[j]), preemptible=self.preemptible[j],
            team=self.teams[j], priority=self.priorities[j], placement=self.placement[j],
            admitted=self.admitted[j], at_risk=bool(self.at_risk[j]),
            pauses_today=self._pauses_today(j, now_s),
            started_s=float(self.run_start_s[j]) if state == RUNNING else None,
        )

    def _pauses_today(self, j: int, now_s: float) -> int:
        """Pauses of job j in the 24 h before `now_s`."""
        times = self.pause_times_s[j]
        return sum(1 for t in times if t > now_s - DAY_S) if times else 0

    def _outlook(self, now_s: float, views: list[JobView]) -> PriceOutlook:
        """What the price feed shows now, far enough ahead for every job's deadline (cached per interval)."""
        # Far enough for every deadline, and for the whole remaining run of a job already late.
        latest_s = max(max(v.deadline_s or now_s, now_s + v.needed_s(self.overhead_s)) for v in views)
        hours = max(1.0, min(MAX_OUTLOOK_S, latest_s - now_s + self.price_series.interval_s) / 3600.0)
        interval = math.floor((now_s - self.price_series.start_s) / self.price_series.interval_s + 1e-9)
        cached = self._outlook_cache
        if cached is None or cached[0] != interval or cached[1] < hours:
            hours = max(hours, 24.0)  # later decisions in this interval rarely need to recompute
            prices, _, _ = self.feed.forecast_arrays(now_s, hours)
            value = prices.value
            if np.isnan(value).any():  # no same-time day to estimate from: carry the last known value
                value = _carry_forward(value)
            outlook = PriceOutlook(prices.starts_s, self.price_series.interval_s, value, prices.known)
            self._outlook_cache = cached = (interval, hours, outlook)
        return cached[2]


def _carry_forward(values: np.ndarray) -> np.ndarray:
    filled = values.copy()
    valid = ~np.isnan(filled)
    if not valid.any():
        return np.zeros_like(filled)
    index = np.where(valid, np.arange(len(filled)), 0)
    np.maximum.accumulate(index, out=index)
    filled = filled[index]
    first = int(np.flatnonzero(valid)[0])
    filled[:first] = filled[first]
    return filled


def charge(outcome: Outcome, price: IntervalSeries,
           carbon: IntervalSeries | None) -> tuple[float, float, float | None, float]:
    """(energy kWh, cost, carbon kg or None, energy outside the price trace kWh) of the power profile."""
    energy_kwh = outcome.segment_power_w * (outcome.segment_end_s - outcome.segment_start_s) / 3.6e6
    if not len(energy_kwh):
        return 0.0, 0.0, (None if carbon is None else 0.0), 0.0
    totals = profile_cost(price, carbon, outcome.segment_start_s, outcome.segment_end_s, energy_kwh)
    carbon_kg = None if totals.carbon_g is None else totals.carbon_g / 1000.0
    return totals.energy_kwh, totals.cost, carbon_kg, totals.uncovered_kwh
