"""`up` and `down` as library calls, shared by the CLI, the demo and tests.

Invariants:
  * `up` is idempotent: a second call connects, finds the actors and reuses them.
  * `down` writes its audit event before it removes anything, and never touches durable state:
    the next `up` continues from the same store (jobs, registry, audit log, clock anchor).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

from factory.client import FactoryClient
from factory.config import FactoryConfig
from factory.control_plane import ensure_actors, factory_actor_names, remove_actors
from factory.errors import ClusterError
from factory.ray_cluster import connect_ray, started_local_head, stop_local_head


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


def up(config: FactoryConfig, address: str | None = None) -> UpResult:
    """Connect to (or start) Ray, create the factory's missing actors, record it in the audit log."""
    connection = connect_ray(config, address=address, start_local=True)
    created = ensure_actors(config)
    client = FactoryClient(connection)
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
    """Remove the factory's actors, and stop the local Ray head if `up` started it."""
    try:
        connection = connect_ray(config, address=address, start_local=False)
    except ClusterError:
        if started_local_head(config):  # the head died on its own; clear the stale record
            stop_local_head(config)
        return DownResult(removed=[], stopped_local_head=False)
    if factory_actor_names():
        try:
            FactoryClient(connection).record_audit(cli_user(), "factory.down", connection.address)
        except ClusterError:
            pass  # the scheduler is already gone; there is nobody to write through
    removed = remove_actors()
    stop = started_local_head(config)
    if stop:
        stop_local_head(config)
    return DownResult(removed=removed, stopped_local_head=stop)
