"""Creating, finding and removing the factory's actors on the connected Ray cluster.

Nomenclature:
  control-plane actors -- `grid_price`, `scheduler`, `registry`, `serving`: pinned to the head node,
                          where the SQLite store lives.
  telemetry actors     -- `telemetry:<node_id>`, one pinned to each alive node.

Invariants:
  * All factory actors are named, detached, in namespace `factory`, restarted forever by Ray
    (`max_restarts=-1`), and take no CPU slot (`num_cpus=0`), so they never starve training.
  * `ensure_actors` is idempotent: it creates what is missing and reuses what exists
    (`get_if_exists`), so concurrent or repeated `factory up`s converge on one set of actors.
  * The grid price actor is created first: it resolves the clock that every other actor gets.
  * Nodes that join later get their telemetry actor from the scheduler's reconcile loop
    (`ensure_telemetry_actors`), or from the next `up`; the same loop removes the actors of nodes
    that left (`remove_telemetry_actors`), after recording the node as down.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.grid_price import GridPriceActor
from actors.job_runner import RUNNER_PREFIX
from actors.registry import RegistryActor
from actors.scheduler import SchedulerActor
from actors.serving import ServingActor
from actors.telemetry import TelemetryActor
from factory.config import FactoryConfig
from factory.errors import ClusterError, FactoryError, summary_line
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE

GRID_PRICE = "grid_price"
SCHEDULER = "scheduler"
REGISTRY = "registry"
SERVING = "serving"
TELEMETRY_PREFIX = "telemetry:"
CONTROL_PLANE_NAMES = (GRID_PRICE, SCHEDULER, REGISTRY, SERVING)
ACTOR_READY_TIMEOUT_S = 120.0


def telemetry_name(node_id: str) -> str:
    """Name the telemetry actor pinned to `node_id`."""
    return f"{TELEMETRY_PREFIX}{node_id}"


def factory_actor_names() -> list[str]:
    """List the factory's actors that exist on the cluster (alive or restarting)."""
    names = {
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE
    }
    telemetry = sorted(name for name in names if name.startswith(TELEMETRY_PREFIX))
    return [name for name in CONTROL_PLANE_NAMES if name in names] + telemetry


def expected_actor_names() -> list[str]:
    """List the actors a complete factory has now: the control plane and one agent per alive node."""
    agents = sorted(telemetry_name(node_id) for node_id in _alive_node_ids())
    return [*CONTROL_PLANE_NAMES, *agents]


def get_actor(name: str) -> ActorHandle:
    """Return the handle of a factory actor; `ClusterError` if the factory is not up."""
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
    spec_json = call_actor(
        grid_price.clock_spec.remote(), f"the factory's '{GRID_PRICE}' actor", ACTOR_READY_TIMEOUT_S
    ).model_dump()
    handles = {GRID_PRICE: grid_price}
    for cls, name in ((SchedulerActor, SCHEDULER), (RegistryActor, REGISTRY), (ServingActor, SERVING)):
        handles[name] = _create(cls, name, (name, config_json, spec_json), _on_head())
    handles.update(ensure_telemetry_actors(config_json, spec_json))
    refs = {name: handle.ping.remote() for name, handle in handles.items()}
    _, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=ACTOR_READY_TIMEOUT_S)
    if pending:
        late = [name for name, ref in refs.items() if ref in pending]
        raise ClusterError(
            f"factory actors did not start within {ACTOR_READY_TIMEOUT_S:.0f} s: {', '.join(late)}; "
            "see the Ray dashboard's Actors page for why"
        )
    for name, ref in refs.items():  # raises the reason of an actor that failed to start
        call_actor(ref, f"the factory's '{name}' actor", ACTOR_READY_TIMEOUT_S)
    return {name: name not in existing for name in handles}


def ensure_telemetry_actors(config_json: dict[str, Any], spec_json: dict[str, Any],
                            existing: set[str] | None = None) -> dict[str, ActorHandle]:
    """Give every alive node its pinned telemetry actor; return the handles.

    With `existing` (the factory's actor names), nodes whose agent is among them are skipped (and
    not returned): the control loop runs every few seconds and need not look up every agent.
    """
    existing = existing or set()
    handles = {}
    for node_id in _alive_node_ids():
        name = telemetry_name(node_id)
        if name in existing:
            continue
        pin = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
        handles[name] = _create(TelemetryActor, name, (name, config_json, spec_json), pin)
    return handles


def remove_telemetry_actors(node_ids: list[str], present: set[str]) -> list[str]:
    """Kill the telemetry actors of these (departed) nodes among `present`; return those nodes.

    Such an actor can never run again (it is pinned to its node), so Ray would keep it pending.
    """
    return [node_id for node_id in node_ids
            if telemetry_name(node_id) in present and _kill(telemetry_name(node_id))]


def cluster_nodes() -> list[dict[str, Any]]:
    """Every node Ray knows, alive or dead: {node_id, node_ip, alive, is_head}."""
    return [
        {"node_id": node["NodeID"], "node_ip": node.get("NodeManagerAddress"), "alive": node["Alive"],
         "is_head": HEAD_NODE_RESOURCE in node.get("Resources", {})}
        for node in ray.nodes()
    ]


def remove_actors() -> list[str]:
    """Kill every factory actor for good (no restart); return their names. State stays on disk.

    Job runners go too (their training with them): a job that was running is found without a runner
    by the next `up` and resumes from its latest checkpoint.
    """
    runners = sorted(entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                     if entry["namespace"] == NAMESPACE and entry["name"].startswith(RUNNER_PREFIX))
    return [name for name in [*factory_actor_names(), *runners] if _kill(name)]


def _kill(name: str) -> bool:
    """Kill a factory actor for good; False if it was gone already."""
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    except ValueError:  # gone meanwhile
        return False
    return True


def call_actor(ref: ray.ObjectRef, who: str, timeout_s: float) -> Any:
    """Wait for a factory actor's answer; turn every Ray failure into one line for the user.

    A `FactoryError` the actor raised (say, its store is locked) reaches the caller as itself. An
    actor that died, or whose constructor failed, becomes a `ClusterError` carrying the factory's
    own message where Ray's wrapped traceback holds one (e.g. a store from a newer schema).
    """
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(
            f"{who} did not answer within {timeout_s:.0f} s (starting or restarting?); try again, "
            "or see the Ray dashboard's Actors page"
        ) from None
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, FactoryError):
            raise exc.cause from None
        raise ClusterError(f"{who} failed: {_failure_reason(exc)}") from None
    except ray.exceptions.RayActorError as exc:
        raise ClusterError(f"{who} is unavailable: {_failure_reason(exc)}") from None


def _failure_reason(error: BaseException) -> str:
    for line in reversed(str(error).splitlines()):
        marker = line.find("factory.errors.")
        if marker >= 0 and ": " in line[marker:]:
            return line[marker:].split(": ", 1)[1].strip()
    return summary_line(error)


def _alive_node_ids() -> list[str]:
    return [node["node_id"] for node in cluster_nodes() if node["alive"]]


def _on_head() -> dict[str, Any]:
    return {"resources": {HEAD_NODE_RESOURCE: 0.001}}


def _create(cls: type, name: str, args: tuple[Any, ...], placement: dict[str, Any]) -> ActorHandle:
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
