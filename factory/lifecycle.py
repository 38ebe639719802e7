"""`up` and `down` as library calls, shared by the CLI, the demo and tests.

Invariants:
  * `up` is idempotent: a second call connects, finds the actors and reuses them.
  * `down` writes its audit event before it removes anything, and keeps durable state: the next
    `up` continues from the same store (jobs, registry, audit log), and the replay clock resumes
    from the factory time at which `down` paused it.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path

from factory.bootstrap import ensure_actors, remove_actors
from factory.client import FactoryClient
from factory.config import FactoryConfig
from factory.control_plane import factory_actor_names
from factory.errors import ClusterError, FactoryError
from factory.prices.sources import build_feed
from factory.ray_cluster import (
    clear_marker,
    connect_ray,
    local_head_answers,
    marker_matches_cluster,
    resolve_address,
    stop_local_head,
)


def cli_user() -> str:
    """Who is acting, as written to the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@dataclass
class UpResult:
    """What `up` did."""

    client: FactoryClient
    started_local_head: bool
    created: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    running_fingerprint: str = ""
    wanted_fingerprint: str = ""

    @property
    def config_differs(self) -> bool:
        """The reused factory runs another config than the one `up` was given."""
        return self.running_fingerprint != self.wanted_fingerprint


@dataclass
class DownResult:
    """What `down` did."""

    removed: list[str]
    stopped_local_head: bool
    state_dir: Path
    cleared_stale_record: bool = False


def up(config: FactoryConfig, address: str | None = None) -> UpResult:
    """Connect to (or start) Ray, create the factory's missing actors, record it in the audit log.

    The price source's files are read here first, so a bad file is one line naming its row before
    anything starts (the grid price actor reads them again on the head node).
    """
    build_feed(config.prices)
    connection = connect_ray(config, address=address, start_local=True)
    created = ensure_actors(config)
    client = FactoryClient(connection, config.ray.actor_restart_wait_s)
    running = client.info()["config_fingerprint"]
    new = sorted(name for name, was_created in created.items() if was_created)
    client.record_audit(cli_user(), "factory.up", connection.address,
                        {"created": len(new), "config_fingerprint": running})
    return UpResult(
        client=client,
        started_local_head=connection.started_local_head,
        created=new,
        reused=sorted(name for name, was_created in created.items() if not was_created),
        running_fingerprint=running,
        wanted_fingerprint=config.fingerprint(),
    )


def down(config: FactoryConfig, address: str | None = None) -> DownResult:
    """Remove the factory's actors, and stop the local Ray head if `up` started this very head.

    A named cluster (`--address`, `RAY_ADDRESS`, `ray.address`) that cannot be reached is an
    error, never "nothing to do". The running factory's own state dir decides about the local head,
    whatever the caller's working directory.
    """
    named = resolve_address(config, address) is not None
    try:
        connection = connect_ray(config, address=address, start_local=False)
    except ClusterError:
        if named:
            raise
        if local_head_answers(config.state_dir):
            raise ClusterError(
                "the local Ray head that `factory up` started still listens but cannot be joined; "
                "stop it with `ray stop`"
            ) from None
        # No cluster here: a local-head record can only be stale (the head died, a reboot).
        return DownResult(removed=[], stopped_local_head=False, state_dir=config.state_dir,
                          cleared_stale_record=clear_marker(config.state_dir))
    state_dir = config.state_dir
    if factory_actor_names():
        # Best effort: a factory whose store or actors are broken must still come down.
        try:
            client = FactoryClient(connection, config.ray.actor_restart_wait_s)
            state_dir = Path(client.info()["config"]["state_dir"])
            client.record_audit(cli_user(), "factory.down", connection.address)  # before acting
            client.stop_control_loop()  # so that no step re-creates an actor being removed
            client.pause_clock()
            client.take_down_endpoints()  # they load weights through the registry, which goes
        except FactoryError:
            pass
    removed = remove_actors()
    if marker_matches_cluster(state_dir):
        stop_local_head(state_dir)
        return DownResult(removed=removed, stopped_local_head=True, state_dir=state_dir)
    stale = not named and clear_marker(state_dir)  # a record of some earlier, other local head
    return DownResult(removed=removed, stopped_local_head=False, state_dir=state_dir,
                      cleared_stale_record=stale)
