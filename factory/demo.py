"""`factory demo`: the story of the whole product, told on an embedded local Ray cluster.

Each capability adds its chapter to `CHAPTERS`; a chapter gets the running factory and prints
what a person should see. The demo ends cleanly: by default it takes the factory (and the local
Ray head it started) down, keeping the durable state, and says how to explore the dashboard;
with `--keep` it leaves the factory running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from factory import lifecycle
from factory.cli import render
from factory.client import FactoryClient
from factory.config import ClockConfig, FactoryConfig
from factory.control_plane import SCHEDULER
from factory.errors import FactoryError

Echo = Callable[[str], None]
# A July day of real prices replays in 48 s at one factory hour per 2 real seconds.
DEMO_REPLAY_START = datetime(2024, 7, 1, tzinfo=UTC)
DEMO_SPEED_FACTOR = 1800.0


def demo_config(config: FactoryConfig, explicit_config: bool) -> FactoryConfig:
    """The demo replays the past unless the user gave a config of their own."""
    if explicit_config or config.clock.mode == "replay":
        return config
    return config.model_copy(update={"clock": ClockConfig(
        mode="replay", replay_start=DEMO_REPLAY_START, speed_factor=DEMO_SPEED_FACTOR)})


def chapter_clock(client: FactoryClient, echo: Echo, watch_s: float) -> None:
    """One clock: every actor and client reads the same accelerated time."""
    clock = client.clock()
    echo(f"mode {clock.mode}, {clock.speed_factor:g} factory seconds per real second")
    steps = 3
    for _ in range(steps):
        echo(f"  factory time {clock.now():%Y-%m-%d %H:%M:%S} UTC")
        time.sleep(watch_s / steps)


def chapter_state(client: FactoryClient, echo: Echo, watch_s: float) -> None:
    """Durable state: the audit log survives restarts and `factory down`."""
    events = client.audit_log(limit=5)
    echo(f"state store {client.info()['state_store']['path']}; newest audit events:")
    echo(render.audit_text(events))


CHAPTERS: list[tuple[str, Callable[[FactoryClient, Echo, float], None]]] = [
    ("One clock for the whole factory", chapter_clock),
    ("Durable state and the audit log", chapter_state),
]


def run(config: FactoryConfig, explicit_config: bool, take_down: bool, watch_s: float,
        echo: Echo = print) -> None:
    """Bring the factory up, tell each chapter, then leave it running or take it down."""
    config = demo_config(config, explicit_config)
    echo("== Bringing the factory up")
    result = lifecycle.up(config)
    # Take down only a factory the demo brought up itself, never one that was already running.
    brought_up = SCHEDULER in result.created
    try:
        where = "on a local Ray head it started" if result.started_local_head else "on the running Ray"
        echo(f"factory up {where}: created {len(result.created)} actors, reused {len(result.reused)}")
        status = result.client.status()
        echo(render.status_text(status))
        for number, (title, chapter) in enumerate(CHAPTERS, start=1):
            echo(f"\n== {number}. {title}")
            chapter(result.client, echo, watch_s)
        echo("")
    finally:
        if take_down and brought_up:
            try:
                lifecycle.down(config)
                echo(f"factory taken down; durable state kept in {config.state_dir}")
            except FactoryError as exc:  # keep the error that ended the demo, if there was one
                echo(f"could not take the factory down ({exc}); run `factory down -y`")
    if take_down and brought_up:
        echo(f"To explore: `factory up`, then the Ray dashboard at {status.dashboard_url} "
             "(or `factory demo --keep`); `factory down -y` stops it.")
        return
    if take_down:
        echo("The factory was already running before the demo, so the demo leaves it running.")
    echo(f"The factory keeps running. Ray dashboard: {status.dashboard_url}")
    echo("Look around with `factory status` and `factory audit`; stop it with `factory down -y`.")
