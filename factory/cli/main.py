"""`factory`: bring a factory up, look at it, take it down, run the demo.

Exit codes: 0 ok, 1 the operation failed, 2 usage or config error. User errors print one line,
never a traceback.
"""

from __future__ import annotations

import itertools
import sys
import time

import click

from factory.cli import render
from factory.cli.options import address_option, config_option, json_option, load, yes_option
from factory.cli.output import json_text
from factory.errors import FactoryError
from factory.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="factory")
def cli() -> None:
    """AI factory on Ray: price- and energy-aware training, model registry, serving."""


@cli.command()
@config_option
@address_option
@json_option
def up(config_path: str | None, address: str | None, as_json: bool) -> None:
    """Start the factory (and a local Ray head if no cluster is running). Safe to repeat."""
    from factory import lifecycle

    config = load(config_path)
    result = lifecycle.up(config, address)
    status = result.client.status()
    if as_json:
        click.echo(json_text({
            "started_local_head": result.started_local_head,
            "created": result.created,
            "reused": result.reused,
            "status": status.model_dump(mode="json"),
        }, indent=2))
        return
    cluster = "started a local Ray head" if result.started_local_head else "connected to Ray"
    click.echo(f"{cluster}; created {len(result.created)} actors, reused {len(result.reused)}")
    if result.reused and result.config_differs:
        click.echo(
            f"warning: the running factory uses config {result.running_fingerprint}, not "
            f"{result.wanted_fingerprint}; run `factory down -y` then `factory up` to apply it",
            err=True,
        )
    click.echo(render.status_text(status))


@cli.command()
@config_option
@address_option
@json_option
def status(config_path: str | None, address: str | None, as_json: bool) -> None:
    """Show each actor's health, the clock, the state store and the dashboard URL."""
    import factory.client

    config = load(config_path)
    current = factory.client.connect(address, config=config).status()
    if as_json:
        click.echo(json_text(current.model_dump(mode="json") | {"healthy": current.healthy},
                              indent=2))
    else:
        click.echo(render.status_text(current))
    if not current.healthy:
        sys.exit(1)


@cli.command()
@config_option
@address_option
@json_option
def nodes(config_path: str | None, address: str | None, as_json: bool) -> None:
    """Show every node's power, GPUs and energy, the nodes that went down, and the facility."""
    import factory.client

    client = factory.client.connect(address, config=load(config_path))
    nodes = client.nodes()
    view = client.facility(nodes)
    if as_json:
        click.echo(json_text({"facility": view.model_dump(mode="json"),
                               "nodes": [node.model_dump(mode="json") for node in nodes]}, indent=2))
    else:
        click.echo(render.nodes_text(view, nodes))


@cli.command()
@config_option
@address_option
@json_option
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (with --json: one JSON line each).")
@click.option("--interval-s", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="With --watch: real seconds between refreshes.")
@click.option("--count", default=None, type=click.IntRange(min=1),
              help="With --watch: stop after this many refreshes.")
def gpus(config_path: str | None, address: str | None, as_json: bool, watch: bool, interval_s: float,
         count: int | None) -> None:
    """Show every GPU's utilisation, memory, power, temperature, energy and jobs."""
    import factory.client

    client = factory.client.connect(address, config=load(config_path))
    refreshes = itertools.count(1)
    try:
        while True:
            current = client.gpus()
            if as_json:
                payload = [gpu.model_dump(mode="json") for gpu in current]
                click.echo(json_text(payload) if watch else json_text(payload, indent=2))
            else:
                if watch and sys.stdout.isatty():
                    click.clear()
                if watch:
                    click.echo(f"factory time {client.now():%Y-%m-%d %H:%M:%S} UTC")
                click.echo(render.gpus_text(current))
            shown = next(refreshes)
            if not watch or (count is not None and shown >= count):
                return
            time.sleep(interval_s)
    except KeyboardInterrupt:  # the way to leave --watch
        return


@cli.command()
@config_option
@address_option
@json_option
@click.option("--hours", default=24.0, show_default=True, type=click.FloatRange(min=0.25, max=24 * 14),
              help="How far ahead to forecast.")
def price(config_path: str | None, address: str | None, as_json: bool, hours: float) -> None:
    """Show the electricity price and carbon now, and the forecast for the next hours."""
    import factory.client
    from factory.cli.price_chart import price_text

    client = factory.client.connect(address, config=load(config_path))
    feed = client.price_feed()
    now = client.price()
    forecast = client.forecast(hours=hours)
    if as_json:
        click.echo(json_text({"price": now.model_dump(mode="json"),
                               "forecast": forecast.model_dump(mode="json"),
                               "feed": feed.model_dump(mode="json")}, indent=2))
    else:
        click.echo(price_text(now, forecast, feed, hours))


@cli.command()
@config_option
@address_option
@yes_option
def down(config_path: str | None, address: str | None, yes: bool) -> None:
    """Remove the factory's actors (and the local Ray head `up` started). State stays on disk."""
    from factory import lifecycle

    config = load(config_path)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to take the factory down without -y (no terminal)")
        click.confirm("Take the factory down?", abort=True)
    result = lifecycle.down(config, address)
    if result.cleared_stale_record:
        click.echo("forgot a stale record of a local Ray head that is no longer running")
    if not result.removed and not result.stopped_local_head:
        click.echo("no factory is running; nothing to do")
        return
    click.echo(f"removed {len(result.removed)} actors")
    if result.stopped_local_head:
        click.echo("stopped the local Ray head that `factory up` started")
    click.echo(f"durable state kept in {result.state_dir}")


@cli.command()
@config_option
@address_option
@json_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest events to show.")
@click.option("--action", "action_prefix", default=None,
              help="Only actions under this prefix, e.g. 'factory' or 'actor.restarted'.")
def audit(config_path: str | None, address: str | None, as_json: bool, limit: int,
          action_prefix: str | None) -> None:
    """Show the audit log: who did what, when (factory time)."""
    import factory.client

    events = factory.client.connect(address, config=load(config_path)).audit_log(
        limit, action_prefix
    )
    if as_json:
        click.echo(json_text([event.model_dump(mode="json") for event in events], indent=2))
    else:
        click.echo(render.audit_text(events))


@cli.command()
@config_option
@click.option("--down/--keep", "take_down", default=True, show_default=True,
              help="Take the factory down at the end (default), or leave it running to explore.")
@click.option("--watch-s", default=4.0, show_default=True, type=click.FloatRange(min=0),
              help="Real seconds to watch the replay clock run.")
def demo(config_path: str | None, take_down: bool, watch_s: float) -> None:
    """The whole product in one run, on an embedded local Ray cluster."""
    from factory import demo as demo_module

    demo_module.run(load(config_path), explicit_config=config_path is not None,
                    take_down=take_down, watch_s=watch_s, echo=click.echo)


from factory.cli.grid import grid  # noqa: E402
from factory.cli.jobs import cancel, job, jobs, logs, submit  # noqa: E402 - commands in their own modules
from factory.cli.models import model, models, promote, register  # noqa: E402
from factory.cli.serving import deploy, endpoints, rollback, undeploy  # noqa: E402
from factory.cli.simulate import simulate  # noqa: E402

for command in (simulate, submit, jobs, job, cancel, logs, models, model, promote, register, deploy,
                endpoints, undeploy, rollback, grid):
    cli.add_command(command)


def main() -> None:
    """Console entry point: user errors become one line and an exit code."""
    from factory.cli.streams import route_ray_notices_to_stderr

    route_ray_notices_to_stderr()  # stdout is the command's output (JSON for scripts), nothing else
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FactoryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
