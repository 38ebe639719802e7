"""`factory deploy | endpoints | undeploy | rollback`: the serving commands, a thin layer over the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from factory.cli.options import address_option, cli_user, config_option, connect, json_option
from factory.cli.output import json_text
from factory.cli.render import table
from factory.errors import ConfigError
from factory.registry.refs import parse_ref


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def _serving(view: dict[str, Any]) -> str:
    return " / ".join(f"v{version.rsplit(':', 1)[1]} {percent:g}%"
                      for version, percent in view["traffic"].items())


def describe(view: dict[str, Any]) -> str:
    """One line about an endpoint after a change."""
    follows = f", follows @{view['follows']}" if view["follows"] else ", pinned"
    return f"endpoint {view['name']}: {_serving(view)}{follows}; {view['url']}"


@click.command()
@click.argument("ref", metavar="NAME[@ALIAS|:VERSION]")
@click.option("--route", default=None, metavar="/PATH", help="Route prefix (default /models/NAME).")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="A fixed number of replicas (default: autoscaling within serving.min/max_replicas).")
@click.option("--canary", "canary_version", type=click.IntRange(min=1), default=None, metavar="VERSION",
              help="Send --percent of endpoint NAME's requests to this version, watched and rolled back "
                   "automatically past the configured error and latency thresholds.")
@click.option("--percent", type=float, default=10.0, show_default=True,
              help="The canary's share of requests.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write a Serve config for this endpoint (for `serve deploy FILE`) instead of deploying.")
@config_option
@address_option
@json_option
def deploy(ref: str, route: str | None, replicas: int | None, canary_version: int | None, percent: float,
           export_path: str | None, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Serve model REF over HTTP: NAME@ALIAS follows the alias as it moves; NAME:VERSION is pinned."""
    parsed = parse_ref(ref)
    client = connect(config_path, address)
    if export_path is not None:
        config = client.serving.export(ref, route, replicas)
        Path(export_path).write_text(yaml.safe_dump(config, sort_keys=False))
        click.echo(json_text(config, indent=2) if as_json else
                   f"wrote {export_path}; deploy it with `serve deploy {export_path}`")
        return
    if canary_version is not None:
        if parsed.version is not None or parsed.alias is not None:
            raise ConfigError(f"--canary applies to an endpoint: write `factory deploy {parsed.name} "
                              f"--canary {canary_version}`, not {ref}")
        view = client.serving.canary(parsed.name, canary_version, percent, cli_user())
    else:
        view = client.serving.deploy(ref, route, replicas, cli_user())
    click.echo(json_text(view, indent=2) if as_json else describe(view))


@click.command()
@config_option
@address_option
@json_option
def endpoints(config_path: str | None, address: str | None, as_json: bool) -> None:
    """List the endpoints: route, versions and traffic split, replicas, request rate, latency, errors."""
    views = connect(config_path, address).endpoints()
    if as_json:
        click.echo(json_text(views, indent=2))
        return
    if not views:
        click.echo("no endpoints; serve a model with `factory deploy NAME@ALIAS`")
        return
    rows: list[list[Any]] = []
    for v in views:
        rows.append([v["name"], v["route"], _serving(v), f"@{v['follows']}" if v["follows"] else "pinned",
                     f"{v['serve']['running']}/{v['serve']['replicas']}", *_figures(v), _note(v)])
        if len(v["versions"]) > 1:  # a canary, or a rollout within the window: each version's own
            rows += [[f"  {version}", None, None, None, None, *_figures(stats), None]
                     for version, stats in sorted(v["versions"].items())]
    click.echo(table(["name", "route", "serving", "follows", "replicas", "req/s", "p50 ms", "p99 ms",
                      "errors", "note"], rows))


def _figures(stats: dict[str, Any]) -> list[str | None]:
    rate = stats["rate_per_s"]
    return [None if rate is None else f"{rate:.1f}", _ms(stats["p50_ms"]), _ms(stats["p99_ms"]),
            f"{stats['error_rate']:.1%}" if stats["requests"] else None]


def _note(view: dict[str, Any]) -> str | None:
    rollback = view.get("last_rollback")
    if rollback is None:
        return None
    how = "auto-rolled back" if rollback["automatic"] else "rolled back"
    return f"{how} v{rollback['version']}: {rollback['reason']}"


@click.command()
@click.argument("name")
@config_option
@address_option
@json_option
def undeploy(name: str, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Delete endpoint NAME (its model stays in the registry)."""
    endpoint = connect(config_path, address).serving.undeploy(name, cli_user())
    click.echo(json_text(endpoint, indent=2) if as_json
               else f"endpoint {name} deleted ({endpoint['route']})")


@click.command()
@click.argument("name")
@config_option
@address_option
@json_option
def rollback(name: str, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Take endpoint NAME's canary out, or return it to the version it served before."""
    view = connect(config_path, address).serving.rollback(name, cli_user())
    click.echo(json_text(view, indent=2) if as_json else describe(view))
