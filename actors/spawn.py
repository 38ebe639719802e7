"""Making the factory's actor classes into named, detached, restartable Ray actors.

Used by `factory.bootstrap` (`factory up`) for the whole factory, and by the SchedulerActor's
control loop for the telemetry agents of nodes that join or leave later.

Invariants:
  * All factory actors are named, detached, in namespace `factory`, restarted forever by Ray
    (`max_restarts=-1`), and take no CPU slot (`num_cpus=0`), so they never starve training.
  * Creating is idempotent (`get_if_exists`): concurrent or repeated creations converge on one actor.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.telemetry import TelemetryActor
from factory.control_plane import alive_node_ids, telemetry_name
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE


def create_actor(cls: type, name: str, args: tuple[Any, ...], placement: dict[str, Any]) -> ActorHandle:
    """Create the factory actor `name` of class `cls` (or return the one that exists)."""
    # Concurrency groups are fixed with the class, not per `.options()` (Ray 2.60 refuses that there).
    groups = getattr(cls, "concurrency_groups", None)
    remote_cls = ray.remote(concurrency_groups=groups)(cls) if groups else ray.remote(cls)
    return (
        remote_cls
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            max_concurrency=getattr(cls, "max_concurrency", 1),  # the registry serves calls side by side
            **placement,
        )
        .remote(*args)
    )


def on_head() -> dict[str, Any]:
    """Placement on the head node, where the store lives."""
    return {"resources": {HEAD_NODE_RESOURCE: 0.001}}


def kill_actor(name: str) -> bool:
    """Kill a factory actor for good (no restart); False if it was gone already."""
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:  # gone meanwhile
        return False
    return True


def ensure_telemetry_actors(config_json: dict[str, Any], spec_json: dict[str, Any],
                            existing: set[str] | None = None) -> dict[str, ActorHandle]:
    """Give every alive node its pinned telemetry actor; return the handles.

    With `existing` (the factory's actor names), nodes whose agent is among them are skipped (and
    not returned): the control loop runs every few seconds and need not look up every agent.
    """
    existing = existing or set()
    handles = {}
    for node_id in alive_node_ids():
        name = telemetry_name(node_id)
        if name in existing:
            continue
        pin = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
        handles[name] = create_actor(TelemetryActor, name, (name, config_json, spec_json), pin)
    return handles


def remove_telemetry_actors(node_ids: list[str], present: set[str]) -> list[str]:
    """Kill the telemetry actors of these (departed) nodes among `present`; return those nodes.

    Such an actor can never run again (it is pinned to its node), so Ray would keep it pending.
    """
    return [node_id for node_id in node_ids
            if telemetry_name(node_id) in present and kill_actor(telemetry_name(node_id))]
