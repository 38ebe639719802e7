"""The telemetry half of the SDK: ask every node's telemetry actor, from any connected process.

`FactoryClient.nodes()/gpus()/job_energy()` read the agents through here, and so does the
SchedulerActor, to account for a job that ended; neither needs the other to reach the agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from factory.control_plane import alive_node_ids, gather, get_actor, telemetry_name
from factory.telemetry.facility import merge_job_energy
from factory.telemetry.models import JobEnergy

TELEMETRY_TIMEOUT_S = 10.0


def ask_telemetry(node_ids: list[str], method: str, *args: Any,
                  timeout_s: float = TELEMETRY_TIMEOUT_S) -> dict[str, Any]:
    """Call `method` on each node's telemetry actor; {node_id: answer, or a `NoAnswer`}."""
    def call(node_id: str) -> Callable[[], ray.ObjectRef]:
        return lambda: getattr(get_actor(telemetry_name(node_id)), method).remote(*args)

    return gather({node_id: call(node_id) for node_id in node_ids}, timeout_s)


def cluster_job_energy(job_id: str, node_ids: list[str] | None = None) -> JobEnergy:
    """GPU energy the telemetry of `node_ids` (default: the alive nodes) attributed to a job.

    Zero, with `first_seen_s=None`, if none did.
    """
    nodes = alive_node_ids() if node_ids is None else node_ids
    parts = [answer for answer in ask_telemetry(nodes, "job_energy", job_id).values()
             if isinstance(answer, JobEnergy)]
    return merge_job_energy(job_id, parts)
