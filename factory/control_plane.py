"""Names of the factory's actors and how to reach them: a leaf, importing only errors and Ray.

Like Ray Serve's `constants.py`, this module knows the names and how to look actors up, never the
actor classes: the SDK, the CLI, the actors themselves and the Serve replicas all reach an actor by
its name through here, so no one imports a layer above its own to find another. Creating and
removing actors is `factory.bootstrap`'s job (and `actors.spawn`'s, for the telemetry agents the
scheduler adds as nodes join).

Nomenclature:
  control-plane actors -- `grid_price`, `scheduler`, `registry`, `serving`: pinned to the head node,
                          where the SQLite store lives.
  telemetry actors     -- `telemetry:<node_id>`, one pinned to each alive node.
  job runners          -- `runner:<8 hex>`, one per running job, created by the scheduler.

Invariants:
  * Every factory actor is named and lives in namespace `factory` (`factory.ray_cluster.NAMESPACE`).
  * A failed call is one line for the user (`call_actor`), never Ray's wrapped traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from factory.errors import ClusterError, FactoryError, summary_line
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE

GRID_PRICE = "grid_price"
SCHEDULER = "scheduler"
REGISTRY = "registry"
SERVING = "serving"
TELEMETRY_PREFIX = "telemetry:"
RUNNER_PREFIX = "runner:"
CONTROL_PLANE_NAMES = (GRID_PRICE, SCHEDULER, REGISTRY, SERVING)


def telemetry_name(node_id: str) -> str:
    """Name the telemetry actor pinned to `node_id`."""
    return f"{TELEMETRY_PREFIX}{node_id}"


def named_actors(prefix: str = "") -> set[str]:
    """Names of the actors in the factory's namespace (alive or restarting) that start with `prefix`."""
    return {
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(prefix)
    }


def factory_actor_names() -> list[str]:
    """List the factory's actors that exist on the cluster (alive or restarting)."""
    names = named_actors()
    telemetry = sorted(name for name in names if name.startswith(TELEMETRY_PREFIX))
    return [name for name in CONTROL_PLANE_NAMES if name in names] + telemetry


def expected_actor_names() -> list[str]:
    """List the actors a complete factory has now: the control plane and one agent per alive node."""
    agents = sorted(telemetry_name(node_id) for node_id in alive_node_ids())
    return [*CONTROL_PLANE_NAMES, *agents]


def get_actor(name: str) -> ActorHandle:
    """Return the handle of a factory actor; `ClusterError` if the factory is not up."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise ClusterError(
            f"the factory's '{name}' actor is not on this cluster; run `factory up`"
        ) from None


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


@dataclass(frozen=True)
class NoAnswer:
    """Why an actor gave no answer to a fanned-out call."""

    reason: str


def gather(calls: dict[str, Callable[[], ray.ObjectRef]], timeout_s: float) -> dict[str, Any]:
    """Start every call, wait for all at once up to `timeout_s`; {key: answer, or a `NoAnswer`}.

    A call whose actor is gone, failed, or did not answer in time gives a `NoAnswer` with the
    reason in one line; nothing raises, so one sick actor never hides the others' answers.
    """
    answers: dict[str, Any] = {}
    refs: dict[str, ray.ObjectRef] = {}
    for key, call in calls.items():
        try:
            refs[key] = call()
        except ClusterError as exc:  # gone between listing and lookup
            answers[key] = NoAnswer(str(exc))
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    for key, ref in refs.items():
        if ref not in ready:
            answers[key] = NoAnswer(f"no answer within {timeout_s:.0f} s")
            continue
        try:
            answers[key] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            answers[key] = NoAnswer(summary_line(exc))
    return answers


def cluster_nodes() -> list[dict[str, Any]]:
    """Every node Ray knows, alive or dead: {node_id, node_ip, alive, is_head}."""
    return [
        {"node_id": node["NodeID"], "node_ip": node.get("NodeManagerAddress"), "alive": node["Alive"],
         "is_head": HEAD_NODE_RESOURCE in node.get("Resources", {})}
        for node in ray.nodes()
    ]


def alive_node_ids() -> list[str]:
    """Ids of the nodes Ray sees alive now."""
    return [node["node_id"] for node in cluster_nodes() if node["alive"]]


def _failure_reason(error: BaseException) -> str:
    for line in reversed(str(error).splitlines()):
        marker = line.find("factory.errors.")
        if marker >= 0 and ": " in line[marker:]:
            return line[marker:].split(": ", 1)[1].strip()
    return summary_line(error)
