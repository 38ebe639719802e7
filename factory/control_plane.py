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
  * Clients ride out an actor's restart in one place (`NamedActor.call`): a call lost because the
    actor is restarting is sent again, after one line on stderr; all the waiting from the restart on
    (for the actor to come back and for its answer) takes at most `ray.actor_restart_wait_s` seconds.
    A mutating call carries a request id (`new_request_id`) that stays the same on every try, and the
    actor keeps it with the mutation's effect, so the retry never acts twice.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from factory import ray_compat
from factory.errors import ClusterError, FactoryError, summary_line
from factory.ray_cluster import HEAD_NODE_RESOURCE, NAMESPACE

GRID_PRICE = "grid_price"
SCHEDULER = "scheduler"
REGISTRY = "registry"
SERVING = "serving"
TELEMETRY_PREFIX = "telemetry:"
RUNNER_PREFIX = "runner:"
CONTROL_PLANE_NAMES = (GRID_PRICE, SCHEDULER, REGISTRY, SERVING)
DEFAULT_RESTART_WAIT_S = 60.0  # `ray.actor_restart_wait_s`: how long a client waits for a restarting actor
RETRY_PAUSE_S = 0.5


COMING_BACK = frozenset({"RESTARTING", "PENDING_CREATION", "DEPENDENCIES_UNREADY"})  # Ray's actor states


class ActorRestartingError(ClusterError):
    """A call was lost, or is not answered, because Ray is restarting its actor: worth waiting for."""


class ActorTimeoutError(ClusterError):
    """An actor did not answer a call in time (busy, starting or restarting); the call may still run."""


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
    own message where Ray's wrapped traceback holds one (e.g. a store from a newer schema): an
    `ActorRestartingError` when Ray may be restarting it, an `ActorTimeoutError` for no answer in time.
    One try; `NamedActor.call` is the one that tries again.
    """
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ActorTimeoutError(
            f"{who} did not answer within {timeout_s:.0f} s (starting or restarting?); it may still act on "
            "the call: look (`factory status`, the Ray dashboard's Actors page) before trying again"
        ) from None
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, FactoryError):
            raise exc.cause from None
        raise ClusterError(f"{who} failed: {_failure_reason(exc)}") from None
    except ray.exceptions.RayActorError as exc:
        # Unavailable: the actor's process is unreachable (restarting, or dying); died: it may be
        # restarting (all factory actors are restartable) unless its constructor failed, for good.
        restarting = isinstance(exc, ray.exceptions.ActorUnavailableError) or (
            isinstance(exc, ray.exceptions.ActorDiedError) and not exc.actor_init_failed)
        error = ActorRestartingError if restarting else ClusterError
        raise error(f"{who} is unavailable: {_failure_reason(exc)}") from None


def new_request_id() -> str:
    """A fresh id for one logical mutating call, sent unchanged on each of its retries."""
    return uuid.uuid4().hex


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ride_out_restart(attempt: Callable[[float], Any], name: str, timeout_s: float, restart_wait_s: float,
                     *, notice: Callable[[str], None] = _to_stderr,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> Any:
    """`attempt(wait_s)` until it answers, trying again while its actor is restarting, up to `restart_wait_s`.

    The first try waits `timeout_s` for its answer, as a call to a live actor does. From the first
    restart seen on, every wait (pauses and tries) comes out of one bound of `restart_wait_s`: a try
    waits what the bound has left (the restarted actor answers only once its constructor has reloaded
    its state), so riding out a restart never takes longer than the bound, whatever `timeout_s` is.
    `notice` gets one line the first time; after the bound, one `ClusterError` names the actor and
    `factory status`, or an `ActorTimeoutError` if the actor came back but has not answered (it may
    still act). Every other error reaches the caller at once.
    """
    give_up_s: float | None = None
    wait_s = timeout_s
    while True:
        try:
            return attempt(wait_s)
        except ActorRestartingError:
            if give_up_s is None:
                give_up_s = clock() + restart_wait_s
                notice(f"waiting for the {name} to come back…")
            sleep(min(RETRY_PAUSE_S, max(0.0, give_up_s - clock())))
            wait_s = give_up_s - clock()
            if wait_s <= 0:
                raise ClusterError(
                    f"the factory's '{name}' actor did not come back within {restart_wait_s:.0f} s; "
                    "`factory status` shows its health") from None
        except ActorTimeoutError:
            if give_up_s is None:  # a live actor's own timeout
                raise
            raise ActorTimeoutError(
                f"the factory's '{name}' actor came back but did not answer within {restart_wait_s:.0f} s of "
                "its restart; it may still act on the call: look (`factory status`) before trying again"
            ) from None


class NamedActor:
    """A factory actor reached by its name, whose calls ride out its restarts (`ride_out_restart`).

    Ray keeps a handle valid across restarts; the name is looked up again before each retry all the
    same, so an actor removed for good (`factory down`) ends the wait at once with `factory up`'s hint.
    """

    def __init__(self, name: str, restart_wait_s: float = DEFAULT_RESTART_WAIT_S) -> None:
        self.name = name
        self.restart_wait_s = restart_wait_s
        self.handle: ActorHandle = get_actor(name)

    def call(self, method: str, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
        """`handle.<method>.remote(*args, **kwargs)`'s answer, or one `FactoryError` line (see `call_actor`).

        A call lost with the actor's old process is sent again; a call that waits in the queue of an
        actor Ray is restarting, or has restarted since it was sent, is waited for further, not sent
        twice. Every mutating method takes a `request_id` (in `kwargs`), so that a resent call returns
        what the lost one did instead of acting twice.
        """
        who = f"the factory's '{self.name}' actor"
        in_flight: list[ray.ObjectRef] = []
        life_when_sent: list[tuple[str | None, int | None]] = []  # the actor's (state, restarts) then
        tries = [0]

        def attempt(wait_s: float) -> Any:
            if not in_flight:
                life_when_sent[:] = [ray_compat.actor_life(self.handle)]
                in_flight.append(getattr(self.handle, method).remote(*args, **kwargs))
            tries[0] += 1
            try:
                return call_actor(in_flight[0], who, wait_s)
            except ActorRestartingError:
                in_flight.clear()
                self.handle = get_actor(self.name)  # a `ClusterError` if it is gone for good
                raise
            except ActorTimeoutError:
                state_now, restarts_now = ray_compat.actor_life(self.handle)
                if state_now in COMING_BACK:
                    raise ActorRestartingError(f"{who} is restarting") from None
                # Alive again, but it was restarting when the call was sent (Ray held the call until the
                # new process was up; its constructor reloads the store and its first step may hold the
                # jobs a while), or it restarted since: on the first wait, a restart to ride out (within
                # its bound from now on), not a live actor too busy to answer.
                state_then, restarts_then = life_when_sent[0]
                restarted = state_then in COMING_BACK or (
                    restarts_then is not None and restarts_now is not None and restarts_now > restarts_then)
                if tries[0] == 1 and restarted and state_now != "DEAD":
                    raise ActorRestartingError(f"{who} restarted while the call waited") from None
                raise

        return ride_out_restart(attempt, self.name, timeout_s, self.restart_wait_s)


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
