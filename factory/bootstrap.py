"""Bringing the factory's actors up and taking them down: the only module that spawns them all.

It sits at the top of the layers (with `factory.lifecycle`, its one user): it imports every actor
class, and nothing below it imports it. The SDK never starts actors; it finds them by name
(`factory.control_plane`).

Invariants:
  * `ensure_actors` is idempotent: it creates what is missing and reuses what exists
    (`get_if_exists`), so concurrent or repeated `factory up`s converge on one set of actors.
  * The grid price actor is created first: it resolves the clock that every other actor gets.
  * Nodes that join later get their telemetry actor from the scheduler's reconcile loop
    (`actors.spawn.ensure_telemetry_actors`), or from the next `up`; the same loop removes the
    actors of nodes that left, after recording the node as down.
"""

from __future__ import annotations

import ray

from actors.grid_price import GridPriceActor
from actors.registry import RegistryActor
from actors.scheduler import SchedulerActor
from actors.serving import ServingActor
from actors.spawn import create_actor, ensure_telemetry_actors, kill_actor, on_head
from factory.config import FactoryConfig
from factory.control_plane import (
    GRID_PRICE,
    REGISTRY,
    RUNNER_PREFIX,
    SCHEDULER,
    SERVING,
    call_actor,
    factory_actor_names,
    named_actors,
)
from factory.errors import ClusterError

ACTOR_READY_TIMEOUT_S = 120.0


def ensure_actors(config: FactoryConfig) -> dict[str, bool]:
    """Create the factory's missing actors and wait until all answer; return {name: created}."""
    existing = set(factory_actor_names())
    config_json = config.model_dump(mode="json")
    grid_price = create_actor(GridPriceActor, GRID_PRICE, (GRID_PRICE, config_json), on_head())
    spec_json = call_actor(
        grid_price.clock_spec.remote(), f"the factory's '{GRID_PRICE}' actor", ACTOR_READY_TIMEOUT_S
    ).model_dump()
    handles = {GRID_PRICE: grid_price}
    for cls, name in ((SchedulerActor, SCHEDULER), (RegistryActor, REGISTRY), (ServingActor, SERVING)):
        handles[name] = create_actor(cls, name, (name, config_json, spec_json), on_head())
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


def remove_actors() -> list[str]:
    """Kill every factory actor for good (no restart); return their names. State stays on disk.

    Job runners go too (their training with them): a job that was running is found without a runner
    by the next `up` and resumes from its latest checkpoint.
    """
    runners = sorted(named_actors(RUNNER_PREFIX))
    return [name for name in [*factory_actor_names(), *runners] if kill_actor(name)]
