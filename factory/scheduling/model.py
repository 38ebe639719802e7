"""What a scheduling policy sees (`Snapshot`) and what it answers (`Decisions`).

Nomenclature:
  job phase    -- `queued` (never ran), `running`, `paused` (ran, stopped at a checkpoint; resuming
                  costs `Snapshot.preempt_overhead_s` of extra run time).
  remaining_s  -- run time the job still needs on its GPUs (not counting a resume overhead).
  gang         -- a job runs on all its GPUs at once or not at all: `num_gpus / gpus_per_worker`
                  workers, each on one node with `gpus_per_worker` free GPUs.
  admitted     -- the scheduler has already judged the job's deadline; a job not yet admitted is
                  judged by the next decision, which reports it in `Decisions.infeasible` if its
                  deadline cannot be met.
  price outlook -- the price of each interval from the one containing now: known prices up to the
                  feed's horizon, the forecaster's estimate beyond it. Never the true future.

Invariants:
  * Everything here is plain immutable data (decisions are named tuples: a decision for 100,000 jobs
    builds 100,000 of them); a policy reads a snapshot and returns decisions, with no
    I/O and no clock of its own, so the simulator and the live SchedulerActor get the same answers.
  * Times are factory time in seconds (Unix seconds live, seconds of the replay in the simulator).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class Phase(StrEnum):
    """Where a job is, as far as a policy is concerned."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"


class WaitReason(StrEnum):
    """Why a job that could run is not running (shown to users; the live WAITING state's reason)."""

    PRICE = "price"
    CAPACITY = "capacity"
    QUOTA = "quota"
    POWER_BUDGET = "power budget"
    PRIORITY = "priority"


def grid_event_hold(cap_w: float) -> str:
    """Why a job waits while a grid event caps the facility: 'a grid event holds the GPUs to 1.52 kW now'."""
    return f"a grid event holds the GPUs to {cap_w / 1000:.2f} kW now"


@dataclass(frozen=True, slots=True)
class JobView:
    """One job as a policy sees it. `power_w` is per GPU; `deadline_s` is absolute (None: none)."""

    job_id: str
    num_gpus: int
    power_w: float
    submit_s: float
    remaining_s: float
    phase: Phase = Phase.QUEUED
    deadline_s: float | None = None
    preemptible: bool = True
    gpus_per_worker: int | None = None
    team: str = ""
    priority: int = 0
    placement: tuple[tuple[str, int], ...] = ()
    admitted: bool = False
    at_risk: bool = False
    pauses_today: int = 0  # times it was paused in the last 24 h (the pause cap of `price-aware`)
    resume_overhead_s: float | None = None  # learnt from its own resumes; None: `Snapshot.preempt_overhead_s`
    started_s: float | None = None  # when its current run began (running; None: not running, or not known)

    @property
    def worker_gpus(self) -> int:
        """GPUs of each gang member (all of them on one node)."""
        return self.gpus_per_worker or self.num_gpus

    @property
    def draw_w(self) -> float:
        """Power of the whole job while it runs."""
        return self.num_gpus * self.power_w

    def overhead_s(self, default_s: float) -> float:
        """What a resume costs this job: its own learnt overhead, else `default_s`."""
        return default_s if self.resume_overhead_s is None else self.resume_overhead_s

    def needed_s(self, overhead_s: float) -> float:
        """Run time still to be done if the job is (re)started now (`overhead_s`: the default overhead)."""
        return self.remaining_s + (self.overhead_s(overhead_s) if self.phase is Phase.PAUSED else 0.0)


@dataclass(frozen=True)
class PriceOutlook:
    """Per interval from the one containing now: start, price per MWh, and whether it is known.

    `starts_s[0] <= now < starts_s[0] + interval_s`; the arrays have equal length >= 1.
    """

    starts_s: np.ndarray
    interval_s: float
    price_per_mwh: np.ndarray  # what the policy minimises: the price, or an objective's series
    known: np.ndarray
    market_price_per_mwh: np.ndarray | None = None  # the price itself, when `price_per_mwh` is not it
    carbon_g_per_kwh: np.ndarray | None = None  # the grid's carbon intensity, where the feed has it

    def price_now_per_mwh(self) -> float:
        """The market price of the current interval (a job's `max_price_per_mwh` is checked against it)."""
        prices = self.price_per_mwh if self.market_price_per_mwh is None else self.market_price_per_mwh
        return float(prices[0])

    def carbon_now_g_per_kwh(self) -> float | None:
        """The carbon intensity of the current interval (a job's `max_carbon_g_per_kwh` is checked against
        it); None without carbon."""
        return None if self.carbon_g_per_kwh is None else float(self.carbon_g_per_kwh[0])

    @property
    def end_s(self) -> float:
        """End of the last interval of the outlook."""
        return float(self.starts_s[-1]) + self.interval_s

    def known_until_s(self) -> float:
        """End of the last known interval (the start of the outlook if none is known)."""
        known = np.flatnonzero(self.known)
        return float(self.starts_s[known[-1]]) + self.interval_s if known.size else float(self.starts_s[0])


@dataclass(frozen=True)
class Snapshot:
    """Everything a policy may know at `now_s`.

    `node_gpus`: GPUs the factory may use on each node (healthy nodes only); running jobs'
    `placement`s are already on them. `quotas`: guaranteed GPUs per team (empty: no quotas).
    """

    now_s: float
    node_gpus: Mapping[str, int]
    jobs: Sequence[JobView]
    prices: PriceOutlook | None = None
    power_budget_w: float | None = None
    quotas: Mapping[str, int] = field(default_factory=dict)
    preempt_overhead_s: float = 0.0
    # Per interval of `prices`: the facility power a grid event allows (W; inf outside events). None: none.
    grid_cap_w: np.ndarray | None = None
    # The lowest power cap every GPU accepts, as a share of a job's nominal watts per GPU: during a grid
    # event, capping GPUs is a lever (`power_caps.cap_before_pausing`). None: GPUs are not capped.
    min_cap_share: float | None = None

    def budget_per_interval_w(self) -> float | np.ndarray | None:
        """The power budget the plan keeps to: the facility's, lowered per interval by grid events.

        Events that cap no interval of the outlook leave it exactly as without events.
        """
        if self.grid_cap_w is None or np.isinf(self.grid_cap_w).all():
            return self.power_budget_w
        return np.minimum(self.grid_cap_w, math.inf if self.power_budget_w is None else self.power_budget_w)

    def grid_cap_now_w(self) -> float | None:
        """The power a grid event under way allows now, where it is below the facility's budget; else None."""
        if self.grid_cap_w is None or not len(self.grid_cap_w):
            return None
        cap_w = float(self.grid_cap_w[0])
        budget_w = math.inf if self.power_budget_w is None else self.power_budget_w
        return cap_w if cap_w < budget_w else None

    def budget_now_w(self) -> float | None:
        """The power budget now (the current interval's: a grid event's target if lower); None: none."""
        budget = self.budget_per_interval_w()
        if not isinstance(budget, np.ndarray):
            return None if budget is None else float(budget)
        now_w = float(budget[0])
        return None if math.isinf(now_w) else now_w

    @property
    def total_gpus(self) -> int:
        """GPUs of all nodes together."""
        return sum(self.node_gpus.values())

    def free_gpus(self) -> dict[str, int]:
        """GPUs on each node not held by a running job."""
        free = dict(self.node_gpus)
        for job in self.jobs:
            if job.phase is Phase.RUNNING:
                for node, gpus in job.placement:
                    free[node] = free.get(node, 0) - gpus
        return free


class Start(NamedTuple):
    """Start (or resume) `job_id` on these GPUs: ((node, gpus), ...)."""

    job_id: str
    placement: tuple[tuple[str, int], ...]


class Pause(NamedTuple):
    """Stop `job_id` at a checkpoint; it resumes later."""

    job_id: str
    reason: WaitReason
    detail: str


class Wait(NamedTuple):
    """`job_id` stays where it is (queued or paused) for `reason`."""

    job_id: str
    reason: WaitReason
    detail: str
    latest_safe_start_s: float | None = None  # the reservation plan's, for an admitted job (price-aware)


@dataclass(frozen=True)
class Decisions:
    """A policy's answer. Running jobs not named in `pauses` keep running.

    `admitted`: jobs judged by this decision; `infeasible` (a subset, with the reason): those whose
    deadline cannot be met, reported now rather than discovered late. `decide_again_s`: the latest time
    the policy must be asked again even if nothing happens before (a waiting job's latest safe start that
    falls before the next price interval); None if the next event or interval boundary will do.
    `power_caps_w`: (job, W per GPU) for each running job whose GPUs are capped until the next decision;
    every other job's GPUs run at their default limit.
    """

    starts: tuple[Start, ...] = ()
    pauses: tuple[Pause, ...] = ()
    waits: tuple[Wait, ...] = ()
    admitted: tuple[str, ...] = ()
    infeasible: tuple[tuple[str, str], ...] = ()
    decide_again_s: float | None = None
    power_caps_w: tuple[tuple[str, float], ...] = ()


@runtime_checkable
class Policy(Protocol):
    """What the simulator and the live scheduler call: the same objects in both (design property 1).

    `decide` is a pure function of the snapshot (no I/O, no clock); `needs_prices`: whether the snapshot
    must carry a price outlook (the caller fetches one only then); `name`: as in `--policy` and reports.
    """

    @property
    def name(self) -> str:
        """The policy's name, as `--policy` and `scheduler.policy` spell it."""
        ...

    @property
    def needs_prices(self) -> bool:
        """Whether `decide` needs `Snapshot.prices`."""
        ...

    def decide(self, snapshot: Snapshot) -> Decisions:
        """What to start, pause and keep waiting (and why) given the snapshot."""
        ...


def deadline_infeasible(job: JobView, now_s: float, overhead_s: float) -> str | None:
    """Why `job` cannot meet its deadline even if it ran from now without a break, or None."""
    if job.deadline_s is None or math.isinf(job.deadline_s):
        return None
    finish_s = now_s + job.needed_s(overhead_s)
    if finish_s > job.deadline_s + 1e-6:
        return (f"needs {job.needed_s(overhead_s):.0f} s of run time but only "
                f"{max(0.0, job.deadline_s - now_s):.0f} s remain before its deadline")
    return None


def budget_array_w(budget_w: float | np.ndarray | None, count: int) -> np.ndarray:
    """A power budget as `count` free watts (inf: none); a per-interval budget is copied, not shared."""
    if isinstance(budget_w, np.ndarray):
        return np.asarray(budget_w, dtype=float).copy()
    return np.full(count, math.inf if budget_w is None else float(budget_w))


def grid_caps_w(now_s: float, starts_s: np.ndarray, interval_s: float,
                events: Iterable[tuple[float, float, float, float]]) -> np.ndarray:
    """The power grid events allow per interval starting at `starts_s` (W; inf where none), seen at `now_s`.

    `events`: (start_s, end_s, target_w, announced_s). An event counts once announced and until it ends,
    in every interval it overlaps, at its lowest target, except that in the interval of now it counts
    only once under way: nothing is paused before an event starts.
    """
    caps = np.full(len(starts_s), math.inf)
    ends_s = starts_s + interval_s
    for start_s, end_s, target_w, announced_s in events:
        if announced_s > now_s or end_s <= now_s:
            continue
        overlap = (starts_s < end_s) & (ends_s > start_s)
        if len(overlap) and start_s > now_s:
            overlap[0] = False
        caps[overlap] = np.minimum(caps[overlap], target_w)
    return caps
