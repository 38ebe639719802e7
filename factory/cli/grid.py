"""`factory grid`: demand-response events, the grid's requests to draw less (`factory.prices.grid_events`).

    factory grid event add --start T --end T (--target-kw KW | --reduce-pct P) [--source S] [--json]
    factory grid events [--json]
    factory grid event cancel ID

Times are ISO 8601 with a UTC offset (`2024-07-01T14:00:00Z`), in factory time (the replay's, in
replay mode). A bad time or target is one line naming the flag, before the cluster is touched.
"""

from __future__ import annotations

from typing import Any

import click

from factory.cli.options import address_option, cli_user, config_option, connect, factory_time, json_option
from factory.cli.output import json_text
from factory.cli.render import table
from factory.errors import ConfigError


@click.group()
def grid() -> None:
    """Demand-response events: keep the facility's measured power under the grid's targets."""


@grid.group()
def event() -> None:
    """Add or cancel one grid event."""


@event.command("add")
@click.option("--start", required=True, help="When the event begins: ISO 8601 with offset (factory time).")
@click.option("--end", required=True, help="When it ends: ISO 8601 with offset.")
@click.option("--target-kw", type=float, default=None, help="Facility power to stay at or under (kW).")
@click.option("--reduce-pct", type=float, default=None,
              help="Or: draw this many percent less than the power measured just before the start.")
@click.option("--source", default="cli", show_default=True, help="Who asked (the utility, a programme).")
@config_option
@address_option
@json_option
def add(start: str, end: str, target_kw: float | None, reduce_pct: float | None, source: str,
        config_path: str | None, address: str | None, as_json: bool) -> None:
    """Add a grid event; the scheduler plans around it at once."""
    start_s, end_s = _time("--start", start), _time("--end", end)
    if (target_kw is None) == (reduce_pct is None):
        raise ConfigError("give either --target-kw or --reduce-pct (one of them)")
    view = connect(config_path, address).add_grid_event(start_s, end_s, target_kw=target_kw,
                                                        reduce_pct=reduce_pct, source=source,
                                                        created_by=cli_user())
    click.echo(json_text(view, indent=2) if as_json else f"{view['event_id']} {view['state']}: {_what(view)}")


@event.command("cancel")
@click.argument("event_id")
@config_option
@address_option
def cancel(event_id: str, config_path: str | None, address: str | None) -> None:
    """Cancel a grid event from now on."""
    view = connect(config_path, address).cancel_grid_event(event_id, cancelled_by=cli_user())
    click.echo(f"{view['event_id']} {view['state']}")


@grid.command("events")
@config_option
@address_option
@json_option
def events(config_path: str | None, address: str | None, as_json: bool) -> None:
    """Every grid event: its target, the baseline, the most measured, whether the facility complied."""
    client = connect(config_path, address)
    views = client.grid_events()
    if as_json:
        click.echo(json_text(views, indent=2))
        return
    feed = client.grid_event_feed()
    if feed is not None:
        age = "" if feed["age_s"] is None else f"; last answer {feed['age_s']:.0f} s ago"
        state = f"STALE ({feed['stale_reason']})" if feed["stale"] else "answering"
        click.echo(f"events also from the {feed['source']}: {state}{age}")
    if not views:
        click.echo("no grid events; `factory grid event add` adds one")
        return
    click.echo(table(["id", "state", "start", "end", "target", "baseline", "max", "to target", "complied"],
                     [[v["event_id"], v["state"], factory_time(v["start_s"]), factory_time(v["end_s"]),
                       _kw(v["target_now_kw"]), _kw(v["baseline_kw"]), _kw(v["max_kw"]),
                       _response(v),
                       {True: "yes", False: "NO", None: "-"}[v["complied"]]] for v in views]))
    for view in views:
        if view.get("unmet_reason"):
            click.echo(f"{view['event_id']}: {view['unmet_reason']}")


def _time(flag: str, text: str) -> float:
    from factory.clock import aware_time_s

    try:
        return aware_time_s(text)
    except ValueError as error:
        raise ConfigError(f"{flag} {error}") from None


def _response(view: dict[str, Any]) -> str | None:
    """Seconds from the start to under the target: real ones, with the factory's where a replay differs."""
    factory_s, real_s = view["seconds_to_target"], view.get("real_seconds_to_target")
    if factory_s is None:
        return None
    if real_s is None or abs(real_s - factory_s) < 0.5:
        return f"{factory_s:.0f} s"
    return f"{real_s:.1f} s ({factory_s:.0f} s replayed)"


def _kw(value: float | None) -> str | None:
    return None if value is None else f"{value:,.1f} kW"


def _what(view: dict[str, Any]) -> str:
    target = f"at most {view['target_kw']:g} kW" if view["target_kw"] is not None else \
        f"{view['reduce_pct']:g} % under the power measured before it"
    return f"{target} from {factory_time(view['start_s'])} to {factory_time(view['end_s'])}"
