"""`factory models | model | promote | register`: the registry commands, a thin layer over the SDK."""

from __future__ import annotations

import click

from factory.cli.options import (
    address_option,
    cli_user,
    config_option,
    connect,
    factory_time,
    json_option,
)
from factory.cli.output import json_text
from factory.cli.render import duration, shorten, table
from factory.cli.serving import describe
from factory.errors import ConfigError, FactoryError
from factory.jobs.states import JobState
from factory.registry.artifacts import KINDS
from factory.registry.refs import alias_ref, parse_ref, version_ref
from factory.registry.views import ModelCard


def _size(size_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


@click.command()
@config_option
@address_option
@json_option
def models(config_path: str | None, address: str | None, as_json: bool) -> None:
    """List the registered models: versions, the newest, aliases, bytes stored."""
    rows = connect(config_path, address).models()
    if as_json:
        click.echo(json_text([row.model_dump(mode="json") for row in rows], indent=2))
        return
    if not rows:
        click.echo("no models; a job with register_as adds one, or `factory register PATH --name NAME`")
        return
    click.echo(table(
        ["name", "versions", "latest", "kind", "size", "aliases", "registered", "description"],
        [[row.name, row.versions, row.latest, row.kind, _size(row.size_bytes),
          " ".join(f"{alias}->{version}" for alias, version in row.aliases.items()) or "-",
          factory_time(row.registered_s), shorten(row.description, 40) or "-"] for row in rows]))


@click.command()
@click.argument("ref", metavar="NAME[:VERSION|@ALIAS]")
@config_option
@address_option
@json_option
def model(ref: str, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Show a model version's card: lineage, metrics, energy and cost, files and checksums, aliases."""
    parsed = parse_ref(ref)
    card = connect(config_path, address).model(parsed.name, parsed.version, parsed.alias)
    if as_json:
        click.echo(json_text(card.model_dump(mode="json"), indent=2))
        return
    click.echo(card_text(card))


@click.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--alias", required=True, help="The alias to move, e.g. production, staging, champion.")
@config_option
@address_option
@json_option
def promote(name: str, version: int, alias: str, config_path: str | None, address: str | None,
            as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION (atomically; the previous target is kept in its history).

    Endpoints that follow NAME@ALIAS roll to VERSION before this returns (a canary of VERSION completes).
    """
    client = connect(config_path, address)
    change = client.set_alias(name, alias, version, set_by=cli_user())
    try:
        views = client.serving.sync()
    except FactoryError as error:
        raise FactoryError(f"{alias_ref(name, alias)} now points at v{change.version}, but its endpoints did "
                           f"not follow yet ({error}); they retry every serving.watch_interval_s") from None
    rolled = [view for view in views if view["model"] == name and view["follows"] == alias]
    if as_json:
        click.echo(json_text({**change.model_dump(mode="json"), "endpoints": rolled}, indent=2))
        return
    before = f"from v{change.from_version}" if change.from_version is not None else "new"
    click.echo(f"{alias_ref(name, alias)} -> v{change.version} ({before})")
    for view in rolled:
        click.echo(describe(view))


@click.command()
@click.argument("path", type=click.Path(exists=True), required=False)
@click.option("--name", default=None, help="The model's name; the version is the next one of that name.")
@click.option("--job", "job_id", default=None, metavar="ID",
              help="Instead of PATH: register the model of succeeded job ID again after its registration "
                   "failed (REGISTRATION_FAILED); never creates a second version of one job's model.")
@click.option("--kind", type=click.Choice(KINDS), default=None,
              help="state_dict (a .pt file), checkpoint (a Ray Train checkpoint) or directory; "
                   "default: a .pt/.pth file is a state_dict, anything else a directory.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--description", default="", help="What the model is.")
@click.option("--predictor", default=None, metavar="MODULE:CLASS",
              help="The class that serves this version (`factory deploy`), e.g. "
                   "factory.examples.regression:RegressionPredictor.")
@config_option
@address_option
@json_option
def register(path: str | None, name: str | None, job_id: str | None, kind: str | None, tags: tuple[str, ...],
             description: str, predictor: str | None, config_path: str | None, address: str | None,
             as_json: bool) -> None:
    """Register the file or directory PATH as the next version of model NAME (checksummed, atomic).

    With --job ID instead: retry the registration of a job's model, and follow it until it ends.
    """
    if job_id is not None:
        if path is not None or name is not None:
            raise ConfigError("--job ID registers the job's own checkpoint under its register_as: "
                              "give PATH and --name, or --job alone")
        _register_job(job_id, config_path, address, as_json)
        return
    if path is None or name is None:
        raise ConfigError("register needs PATH and --name NAME (or --job ID to retry a job's registration)")
    parsed_tags = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {tag!r}: write KEY=VALUE, e.g. --tag stage=baseline")
        parsed_tags[key] = value
    row = connect(config_path, address).register(path, name, kind=kind, tags=parsed_tags,
                                                 description=description, registered_by=cli_user(),
                                                 predictor=predictor)
    if as_json:
        click.echo(json_text(row.model_dump(mode="json"), indent=2))
        return
    click.echo(f"registered {version_ref(row.name, row.version)} ({row.kind}, {len(row.files)} files, "
               f"{_size(row.size_bytes)}, sha256 {row.digest[:16]}...)")


def _register_job(job_id: str, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Retry a job's registration and wait for its outcome; exit 1 unless it is REGISTERED."""
    client = connect(config_path, address)
    client.retry_registration(job_id, retried_by=cli_user())
    job = client.wait(job_id)
    if as_json:
        click.echo(json_text(job.model_dump(mode="json"), indent=2))
    else:
        click.echo(f"{job.job_id}: {job.state} ({job.reason})")
    if job.state != JobState.REGISTERED:
        raise SystemExit(1)


def card_text(card: ModelCard) -> str:
    """A model card as text: identity, lineage, what it cost, files."""
    lineage = card.lineage
    lines = [f"{version_ref(card.name, card.version)}  ({card.kind}, {_size(card.size_bytes)}, "
             f"registered {factory_time(card.registered_s)} by {card.registered_by or '-'})"]
    if card.description:
        lines.append(f"  {card.description}")
    lines.append(f"  aliases here: {', '.join(card.aliases) or '-'}   "
                 f"all aliases: {' '.join(f'{a}->{v}' for a, v in card.all_aliases.items()) or '-'}   "
                 f"versions: {', '.join(map(str, card.versions))}")
    if card.tags:
        lines.append("  tags: " + "  ".join(f"{k}={v}" for k, v in sorted(card.tags.items())))
    lines.append(f"  digest: sha256 {card.digest}")
    lines.append(f"  served by: {card.serving.get('predictor') or '- (no predictor: not servable)'}")
    if lineage:
        code = lineage.get("code") or {}
        dataset = lineage.get("dataset") or {}
        commit = code.get("git_commit")
        metrics = lineage.get("metrics") or {}
        lines += [
            "lineage",
            f"  job: {lineage.get('job_id')} ({lineage.get('job_name')}, team {lineage.get('team')}, "
            f"{lineage.get('kind')}), spec sha256 {str(lineage.get('spec_hash'))[:16]}...",
            f"  code: {code.get('entry_point') or '-'} at "
            f"{(commit[:12] + (' (dirty)' if code.get('git_dirty') else '')) if commit else 'no git commit'}",
            f"  dataset: {dataset.get('ref') or '-'}"
            + (f" ({dataset['fingerprint'][:23]}...)" if dataset.get("fingerprint") else ""),
            f"  parent: {lineage.get('parent') or '-'}",
            "  metrics: " + ("  ".join(f"{k}={_value(v)}" for k, v in sorted(metrics.items())) or "-"),
            f"  training: {duration(lineage.get('training_time_s')) or '-'}, "
            f"{_value(lineage.get('gpu_hours'))} GPU-h, {_value(lineage.get('energy_kwh'))} kWh "
            f"({lineage.get('energy_source') or '-'}), cost {_value(lineage.get('cost'))} "
            f"{lineage.get('currency') or ''}, carbon {_value(lineage.get('carbon_kg'))} kg",
        ]
    lines.append(f"files ({len(card.files)})")
    for path, entry in sorted(card.files.items())[:20]:
        lines.append(f"  {path}  {_size(int(entry['size_bytes']))}  sha256 {str(entry['sha256'])[:16]}...")
    if len(card.files) > 20:
        lines.append(f"  ... and {len(card.files) - 20} more (--json lists them all)")
    return "\n".join(lines)


def _value(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
