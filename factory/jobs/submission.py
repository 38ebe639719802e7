"""What a spec cannot check alone: its deadline against the clock, its resources against the cluster.

`load_job_spec`/`parse_job_spec` (factory.jobs.spec) check the spec itself; `validate_for_submission` is
the last step before a job is queued, with the time and the cluster's nodes it will run on. Errors are
one-line `JobSpecError`s naming the source and the field, as the spec's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from factory.jobs.spec import JobSpec, JobSpecError, resolve_deadline


@dataclass(frozen=True)
class ClusterCapacity:
    """The most a cluster can ever offer, node by node: `node_gpus[i]` and `node_cpus[i]` of node i.

    Build it from Ray's view (`from_ray_nodes(ray.nodes())`), or from an autoscaler's maximum.
    """

    node_gpus: tuple[int, ...]
    node_cpus: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.node_gpus) != len(self.node_cpus):
            raise ValueError(f"node_gpus and node_cpus describe the same nodes: {len(self.node_gpus)} "
                             f"!= {len(self.node_cpus)} entries")
        if any(count < 0 for count in (*self.node_gpus, *self.node_cpus)):
            raise ValueError("node resource counts cannot be negative")

    @classmethod
    def from_ray_nodes(cls, nodes: Iterable[Mapping[str, Any]]) -> ClusterCapacity:
        """From `ray.nodes()` entries: the alive nodes' whole GPUs and CPUs."""
        alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
        return cls(node_gpus=tuple(int(resources.get("GPU", 0)) for resources in alive),
                   node_cpus=tuple(int(resources.get("CPU", 0)) for resources in alive))

    @property
    def total_gpus(self) -> int:
        """GPUs of all nodes together."""
        return sum(self.node_gpus)

    @property
    def total_cpus(self) -> int:
        """CPUs of all nodes together."""
        return sum(self.node_cpus)

    def workers_that_fit(self, gpus_per_worker: int, cpus_per_worker: int) -> int:
        """How many workers of this size the nodes hold at once (a worker never spans nodes).

        `cpus_per_worker` must be at least 1 (as a spec's is), so the count is finite.
        """
        if cpus_per_worker < 1:
            raise ValueError(f"cpus_per_worker must be at least 1, got {cpus_per_worker}")
        return sum(min(cpus // cpus_per_worker, gpus // gpus_per_worker if gpus_per_worker else cpus)
                   for gpus, cpus in zip(self.node_gpus, self.node_cpus, strict=True))


def validate_for_submission(
    spec: JobSpec, now_s: float, cluster: ClusterCapacity, source: str | None = None
) -> float | None:
    """Check what loading cannot: the deadline against `now_s` (epoch s), resources against `cluster`.

    Returns the deadline in epoch seconds (None: no deadline). Raises a one-line `JobSpecError` naming
    `source` (the spec's file, if known) and the field.
    """
    where = source if source is not None else f"job '{spec.name}'"
    _check_resources(spec, cluster, where)
    if spec.deadline is None:
        return None
    deadline_s = resolve_deadline(spec.deadline, now_s)
    left_s, needed_s = deadline_s - now_s, spec.estimated_duration_s
    if left_s <= 0:
        raise JobSpecError(f"{where}: field 'deadline': {spec.deadline} passed {-left_s:.0f} s ago (now "
                           f"{_iso(now_s)}); set a later time or a duration such as '6h'")
    if left_s < needed_s:
        raise JobSpecError(f"{where}: field 'deadline': {spec.deadline} leaves {left_s:.0f} s but "
                           f"estimated_duration_s is {needed_s:g}; set a deadline at least {needed_s:g} s "
                           "after submission")
    return deadline_s


def _check_resources(spec: JobSpec, cluster: ClusterCapacity, where: str) -> None:
    resources = (("GPUs", "gpus_per_worker", spec.gpus_per_worker, cluster.node_gpus),
                 ("CPUs", "cpus_per_worker", spec.cpus_per_worker, cluster.node_cpus))
    for unit, field, per_worker, nodes in resources:
        largest = max(nodes, default=0)
        if per_worker > largest:
            fix = (f"set {field}: 0 for a CPU-only job" if unit == "GPUs" and largest == 0
                   else f"lower {field}" + (" (and raise num_workers)" if unit == "GPUs" else ""))
            raise JobSpecError(f"{where}: field '{field}': {per_worker} {unit} per worker but the largest "
                               f"node has {largest} and a worker runs on one node; {fix}")
    for unit, field, per_worker, nodes in resources:
        if spec.num_workers * per_worker > sum(nodes):
            raise JobSpecError(f"{where}: field 'num_workers': the job needs {spec.num_workers * per_worker} "
                               f"{unit} ({spec.num_workers} workers x {per_worker}) but the cluster has "
                               f"{sum(nodes)} in all; lower num_workers or {field}")
    fit = cluster.workers_that_fit(spec.gpus_per_worker, spec.cpus_per_worker)
    if fit < spec.num_workers:
        raise JobSpecError(f"{where}: field 'num_workers': the nodes hold only {fit} workers of "
                           f"{spec.gpus_per_worker} GPUs and {spec.cpus_per_worker} CPUs at once, not "
                           f"{spec.num_workers}; lower num_workers or the resources per worker")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
