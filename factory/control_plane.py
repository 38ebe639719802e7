"""Creating, finding and removing the factory's actors on the connected Ray cluster.

Nomenclature:
  control-plane actors -- `grid_price`, `scheduler`, `registry`: pinned to the head node, where the
                          SQLite store lives.
  telemetry actors     -- `telemetry:<node_id>`, one pinned to each alive node.

Invariants:
  * All factory actors are named, detached, in namespace `factory`, restarted forever by Ray
    (`max_restarts=-1`), and take no CPU slot (`num_cpus=0`), so they never starve training.
  * `ensure_actors` is idempotent: it creates what is missing and reuses what exists
    (`get_if_exists`), so concurrent or repeated `factory up`s converge on one set of actors.
  * The grid price actor is created first: it resolves the clock that every other actor gets.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.grid_price import GridPriceActor
from actors.registry import RegistryActor
from actors.scheduler import SchedulerActor
from actors.telemetry import TelemetryActor
from factory.config import FactoryConfig
from factory.errors import ClusterError, summary_line
from factory.ray_cluster import NAMESPACE

GRID_PRICE = "grid_price"
SCHEDULER = "scheduler"
REGISTRY = "registry"
TELEMETRY_PREFIX = "telemetry:"
CONTROL_PLANE_NAMES = (GRID_PRICE, SCHEDULER, REGISTRY)
# Ray gives the head node this resource; a tiny request pins an actor there.
HEAD_NODE_RESOURCE = "node:__internal_head__"
ACTOR_READY_TIMEOUT_S = 120.0


def telemetry_name(node_id: str) -> str:
    """The name of the telemetry actor pinned to `node_id`."""
    return f"{TELEMETRY_PREFIX}{node_id}"


def factory_actor_names() -> list[str]:
    """Names of the factory's actors that exist on the cluster (alive or restarting)."""
    names = {
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE
    }
    telemetry = sorted(name for name in names if name.startswith(TELEMETRY_PREFIX))
    return [name for name in CONTROL_PLANE_NAMES if name in names] + telemetry


def get_actor(name: str) -> ActorHandle:
    """The handle of a factory actor; `ClusterError` if the factory is not up."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ClusterError(
            f"the factory's '{name}' actor is not on this cluster; run `factory up`"
        ) from None


def ensure_actors(config: FactoryConfig) -> dict[str, bool]:
    """Create the factory's missing actors and wait until all answer; return {name: created}."""
    existing = set(factory_actor_names())
    config_json = config.model_dump(mode="json")
    grid_price = _create(GridPriceActor, GRID_PRICE, (GRID_PRICE, config_json), _on_head())
    clock_spec = ray.get(grid_price.clock_spec.remote(), timeout=ACTOR_READY_TIMEOUT_S)
    spec_json = clock_spec.model_dump()
    handles = {GRID_PRICE: grid_price}
    for cls, name in ((SchedulerActor, SCHEDULER), (RegistryActor, REGISTRY)):
        handles[name] = _create(cls, name, (name, config_json, spec_json), _on_head())
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        name = telemetry_name(node["NodeID"])
        pin = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)}
        handles[name] = _create(TelemetryActor, name, (name, config_json, spec_json), pin)
    refs = {name: handle.ping.remote() for name, handle in handles.items()}
    ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=ACTOR_READY_TIMEOUT_S)
    if pending:
        late = [name for name, ref in refs.items() if ref in pending]
        raise ClusterError(
            f"factory actors did not start within {ACTOR_READY_TIMEOUT_S:.0f} s: {', '.join(late)}; "
            "see the Ray dashboard's Actors page for why"
        )
    try:
        ray.get(ready)
    except ray.exceptions.RayActorError as exc:  # a constructor failed: show the actor's reason
        raise ClusterError(f"a factory actor failed to start: {summary_line(exc)}") from None
    return {name: name not in existing for name in handles}


def remove_actors() -> list[str]:
    """Kill every factory actor for good (no restart); return their names. State stays on disk."""
    removed = []
    for name in factory_actor_names():
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # gone meanwhile
            continue
        removed.append(name)
    return removed


def _on_head() -> dict[str, Any]:
    return {"resources": {HEAD_NODE_RESOURCE: 0.001}}


def _create(cls: type, name: str, args: tuple[Any, ...], placement: dict[str, Any]) -> ActorHandle:
    return (
        ray.remote(cls)
        .options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            **placement,
        )
        .remote(*args)
    )
