"""Who uses which GPU on this node: Ray workers, their Ray job and actor, and their factory job.

Nomenclature:
  holder        -- a Ray actor or running task on this node that requested GPUs from Ray.
  factory job   -- read from `FACTORY_JOB_ID` in the holder's process environment. The factory's
                   job runners put it there through the Ray `runtime_env` (`env_vars`), which Ray
                   applies before it starts the worker process, so it is visible in
                   `/proc/<pid>/environ`. A holder without it is `other`.

Real GPUs (NVML) name their processes; this module turns pids into consumers. Simulated GPUs
have no processes, so `SimulatedAssignment` hands each holder GPU indices the way Ray does: the
lowest free ones, kept for as long as the holder lives. (Ray's own slot numbers are not public,
so on simulated GPUs the index is the factory's model of it.)

Invariants:
  * A failed query of the Ray state API leaves the previous picture in place (and says why in
    `last_error`); it never stops sampling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from factory.telemetry.models import OTHER

FACTORY_JOB_ENV = "FACTORY_JOB_ID"
# A sample must not wait long on the state API (it runs in the sampling thread); it retries next time.
STATE_API_TIMEOUT_S = 5


_PLACEMENT_GROUP_GPU = re.compile(r"GPU_group_(\d+_)?[0-9a-f]+")


def gpus_requested(resources: dict[str, float]) -> float:
    """GPUs a Ray actor or task asked for, also inside a placement group (as Ray Train's workers are).

    In a placement group Ray renames the request: `GPU_group_<bundle>_<pg>` (the bundle it runs in)
    and `GPU_group_<pg>` (the same GPUs, counted for the group); the indexed form wins, so nothing is
    counted twice.
    """
    if "GPU" in resources:
        return float(resources["GPU"])
    indexed, wildcard = 0.0, 0.0
    for key, amount in resources.items():
        match = _PLACEMENT_GROUP_GPU.fullmatch(key)
        if match is not None:
            if match.group(1):
                indexed += float(amount)
            else:
                wildcard += float(amount)
    return indexed or wildcard


@dataclass(frozen=True)
class Consumer:
    """Who a share of a GPU's energy is charged to."""

    factory_job: str
    ray_job_id: str | None = None
    actor_id: str | None = None


@dataclass(frozen=True)
class GpuHolder:
    """A Ray worker on this node that holds `num_gpus` GPUs."""

    key: str  # actor id or task id: stable while the holder lives
    pid: int | None
    num_gpus: float
    consumer: Consumer


def factory_job_of(pid: int | None) -> str:
    """The factory job whose worker is process `pid`, or `other`."""
    if not pid:
        return OTHER
    try:
        return psutil.Process(pid).environ().get(FACTORY_JOB_ENV) or OTHER
    except (psutil.Error, OSError):  # gone, or another user's process
        return OTHER


def _field(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)


class RayWorkloads:
    """The Ray actors and tasks of one node, as seen through `ray.util.state`.

    `list_actors` and `list_tasks` are injectable so that tests can replay recorded answers.
    """

    def __init__(self, node_id: str, list_actors: Callable[..., Sequence[Any]] | None = None,
                 list_tasks: Callable[..., Sequence[Any]] | None = None,
                 job_of_pid: Callable[[int | None], str] = factory_job_of) -> None:
        if list_actors is None or list_tasks is None:
            from ray.util import state

            list_actors = list_actors or state.list_actors
            list_tasks = list_tasks or state.list_tasks
        self.node_id = node_id
        self._list_actors = list_actors
        self._list_tasks = list_tasks
        self._job_of_pid = job_of_pid
        self._jobs_by_pid: dict[int, str] = {}
        self.holders: list[GpuHolder] = []
        self.consumers_by_pid: dict[int, Consumer] = {}
        self.last_error: str | None = None

    def refresh(self) -> None:
        """Ask Ray which actors and tasks live on this node; keep the old picture on failure."""
        try:
            actors = self._list_actors(
                filters=[("node_id", "=", self.node_id), ("state", "=", "ALIVE")],
                detail=True, raise_on_missing_output=False, limit=10_000, timeout=STATE_API_TIMEOUT_S,
            )
            tasks = self._list_tasks(
                filters=[("node_id", "=", self.node_id), ("state", "=", "RUNNING")],
                detail=True, raise_on_missing_output=False, limit=10_000, timeout=STATE_API_TIMEOUT_S,
            )
        except Exception as exc:  # noqa: BLE001 - the state API is best effort; sampling goes on
            # Ray's message runs to several sentences; the first says what failed.
            first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
            self.last_error = (f"Ray state API ({type(exc).__name__}: {first[:160]}); GPU holders "
                               "unknown: attribution needs the Ray dashboard running on the head")
            return
        self.last_error = None
        holders: list[GpuHolder] = []
        by_pid: dict[int, Consumer] = {}
        jobs_by_pid: dict[int, str] = {}
        for entry, pid_field, key_field in [*((a, "pid", "actor_id") for a in actors),
                                            *((t, "worker_pid", "task_id") for t in tasks)]:
            pid = _field(entry, pid_field) or None
            if pid is not None and pid not in jobs_by_pid:
                # A process's FACTORY_JOB_ID never changes: a found one is read once per pid
                # (`other` is read again: the read may have failed, e.g. a process just starting).
                jobs_by_pid[pid] = self._jobs_by_pid.get(pid) or self._job_of_pid(pid)
                if jobs_by_pid[pid] == OTHER:
                    jobs_by_pid.pop(pid)
            is_actor = key_field == "actor_id"
            consumer = Consumer(
                factory_job=jobs_by_pid.get(pid, OTHER) if pid is not None else OTHER,
                ray_job_id=_field(entry, "job_id"),
                actor_id=_field(entry, "actor_id") if is_actor else None,
            )
            if pid is not None and (is_actor or pid not in by_pid):
                by_pid[pid] = consumer
            gpus = gpus_requested(_field(entry, "required_resources") or {})
            if gpus > 0:
                holders.append(GpuHolder(key=str(_field(entry, key_field)), pid=pid, num_gpus=gpus,
                                         consumer=consumer))
        self.holders = holders
        self.consumers_by_pid = by_pid
        self._jobs_by_pid = jobs_by_pid

    def consumer_of_pid(self, pid: int) -> Consumer:
        """The consumer a GPU process belongs to; a process Ray does not know is `other`."""
        return self.consumers_by_pid.get(pid) or Consumer(factory_job=OTHER)


class SimulatedAssignment:
    """Maps holders onto simulated GPU indices, as Ray's allocator would.

    A holder keeps its indices while it lives. A holder of whole GPUs gets the lowest indices that
    are entirely free; a fractional holder (`num_gpus < 1`) shares the lowest index that still has
    room for its fraction, as Ray packs fractional requests. A holder that does not fit (more
    requested than modelled, as with a mismatched `simulated_gpus_per_node`) gets nothing.
    """

    def __init__(self, num_gpus: int) -> None:
        self.num_gpus = num_gpus
        self._placed: dict[str, tuple[GpuHolder, list[int], float]] = {}  # key -> holder, indices, share

    def update(self, holders: Sequence[GpuHolder]) -> dict[int, list[tuple[float, Consumer]]]:
        """Place `holders`; return {index: [(share of that GPU, consumer), ...]}."""
        alive = {holder.key: holder for holder in holders}
        self._placed = {key: placed for key, placed in self._placed.items() if key in alive}
        used = [0.0] * self.num_gpus
        for _, indices, share in self._placed.values():
            for index in indices:
                used[index] += share
        for key, holder in alive.items():
            if key in self._placed:
                continue
            if holder.num_gpus < 1.0:
                share = holder.num_gpus
                indices = [i for i in range(self.num_gpus) if used[i] + share <= 1.0 + 1e-9][:1]
            else:
                wanted = math.ceil(holder.num_gpus - 1e-9)
                share = holder.num_gpus / wanted
                indices = [i for i in range(self.num_gpus) if used[i] <= 1e-9][:wanted]
                indices = indices if len(indices) == wanted else []
            if not indices:
                continue
            self._placed[key] = (holder, indices, share)
            for index in indices:
                used[index] += share
        usage: dict[int, list[tuple[float, Consumer]]] = {}
        for holder, indices, share in self._placed.values():
            for index in indices:
                usage.setdefault(index, []).append((share, holder.consumer))
        return usage
