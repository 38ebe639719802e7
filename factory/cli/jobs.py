"""`factory submit | jobs | job | cancel | logs`: the job commands, a thin layer over the SDK."""

from __future__ import annotations

import sys
from typing import Any

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
from factory.cli.render import compact_times, duration, shorten, table
from factory.jobs.accounting import by_team
from factory.jobs.masking import masked_spec
from factory.jobs.snapshot import DAY_S, learnt_resume_overhead_s, num_gpus, pauses_since
from factory.jobs.states import JobState
from factory.jobs.stored import schedule_of, stored_spec
from factory.store import JobEvent, JobRow


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the job until it ends (exit 1 unless it succeeds).")
@config_option
@address_option
@json_option
def submit(file: str, wait: bool, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Submit the job described in FILE (YAML; see configs/jobs/). Prints its id once it is stored."""
    from factory.jobs.spec import load_job_spec

    spec = load_job_spec(file)  # a bad spec fails here, in one line, before touching the cluster
    client = connect(config_path, address)
    job_id = client.submit(spec, submitted_by=cli_user())
    if not wait:
        click.echo(json_text({"job_id": job_id}) if as_json else job_id)
        return
    if not as_json:
        click.echo(job_id)
        click.echo("following it until it ends (Ctrl-C stops following, not the job)", err=True)
    job = client.wait(job_id, on_event=None if as_json else _progress_line)
    if as_json:
        click.echo(json_text(_shown(job), indent=2))
    else:
        click.echo(_summary(job))
    # 0 once it did what was asked: ran (and registered its model, for a job with register_as)
    sys.exit(0 if job.state in (JobState.SUCCEEDED, JobState.REGISTERED) else 1)


@click.command()
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]),
              help="Only jobs in this state (repeatable).")
@config_option
@address_option
@json_option
def jobs(states: tuple[str, ...], config_path: str | None, address: str | None, as_json: bool) -> None:
    """List the jobs: state (and why), GPUs, deadline, latest safe start, run time so far."""
    client = connect(config_path, address)
    rows = client.jobs(list(states) or None)
    if as_json:
        click.echo(json_text([_shown(job) for job in rows], indent=2))
        return
    if not rows:
        click.echo("no jobs" + (" in " + ", ".join(states) if states else "; `factory submit FILE` adds one"))
        return
    today = client.now().date()  # times of today in the reasons read as 02:00
    click.echo(table(
        ["id", "team", "kind", "gpus", "state", "submitted", "deadline", "latest start", "ran", "why"],
        [[job.job_id, job.team, job.kind, num_gpus(job), job.state, factory_time(job.submitted_s),
          factory_time(job.deadline_s), factory_time(job.latest_safe_start_s),
          duration(schedule_of(job).run_s), shorten(compact_times(job.reason, today), 72)]
         for job in rows]))
    teams = by_team(rows)
    if teams:
        currencies = [job.accounting["currency"] for job in rows if job.accounting.get("currency")]
        currency = currencies[0] if currencies else ""
        click.echo("\nPer team (ended jobs):")
        click.echo(table(
            ["team", "jobs", "gpu-hours", "kWh", f"cost {currency}".strip(), "if at once", "saved"],
            [[team, int(t["jobs"]), f"{t['gpu_hours']:.2f}", f"{t['energy_kwh']:.2f}", f"{t['cost']:.4f}",
              f"{t['cost_if_run_at_once']:.4f}", f"{t['savings']:.4f}"]
             for team, t in sorted(teams.items())]))


@click.command()
@click.argument("job_id")
@config_option
@address_option
@json_option
def job(job_id: str, config_path: str | None, address: str | None, as_json: bool) -> None:
    """Show one job: its state and why, latest safe start, pauses, progress, accounting and timeline."""
    client = connect(config_path, address)
    detail = client.job(job_id)
    if as_json:
        click.echo(json_text({"job": _shown(detail.job),
                               "events": [event.model_dump(mode="json") for event in detail.events]},
                              indent=2))
        return
    click.echo(job_text(detail.job, detail.events, now_s=client.clock().now_s()))


@click.command()
@click.argument("job_id")
@config_option
@address_option
def cancel(job_id: str, config_path: str | None, address: str | None) -> None:
    """Cancel a job wherever it is (waiting, running or paused)."""
    job = connect(config_path, address).cancel(job_id, cancelled_by=cli_user())
    click.echo(f"{job.job_id} {job.state}")


@click.command()
@click.argument("job_id")
@click.option("--tail", "tail_lines", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many of the last lines to show.")
@config_option
@address_option
def logs(job_id: str, tail_lines: int, config_path: str | None, address: str | None) -> None:
    """Show a job's log: its runs, reported metrics, and errors (kept after the job ends)."""
    text = connect(config_path, address).logs(job_id, tail_lines)
    click.echo(text or f"{job_id} has no log yet")


# -- rendering --------------------------------------------------------------------------------------


def job_text(job: JobRow, events: list[JobEvent], now_s: float | None = None) -> str:
    """A job for people: what it is, where it is, what it did, and its timeline (`now_s`: factory time now,
    for the pauses of the last 24 h)."""
    spec, schedule = stored_spec(job), schedule_of(job)
    lines = [
        f"Job        {job.job_id}  ({job.kind}, team {job.team})",
        f"State      {job.state}" + (f": {job.reason}" if job.reason else ""),
        f"GPUs       {spec.total_gpus} ({spec.num_workers} workers x {spec.gpus_per_worker})",
        f"Submitted  {factory_time(job.submitted_s)}    deadline {factory_time(job.deadline_s) or 'none'}",
        f"Ran        {duration(schedule.run_s)} of about "
        f"{duration(spec.estimated_duration_s)}, attempt {job.attempt}",
    ]
    if job.latest_safe_start_s is not None:
        lines.append(f"Start by   {factory_time(job.latest_safe_start_s)} (its latest safe start: started by "
                     "then, it meets its deadline beside every job admitted before it)")
    lines.append(f"Pauses     {_pauses(job, now_s)}")
    if schedule.infeasible:
        lines.append(f"At risk    reported at admission: {schedule.infeasible}")
    if job.progress:
        lines.append("Progress   " + _pairs(job.progress))
    if job.accounting:
        lines.append("Accounting " + _pairs(job.accounting))
    if job.error:
        lines.append(f"Error      {job.error}  (`factory logs {job.job_id}` has the traceback)")
    lines += ["", "Timeline (factory time)"]
    lines.append(table(["time", "state", "why"],
                       [[factory_time(e.time_s), e.state, e.reason] for e in events]))
    return "\n".join(lines)


def _pauses(job: JobRow, now_s: float | None) -> str:
    """'2 (1 in the last 24 h); a resume costs it about 4m10s (measured over 2)', or as much as is known."""
    text = str(job.pauses)
    if job.pauses and now_s is not None:
        text += f" ({pauses_since(job, now_s - DAY_S)} in the last 24 h)"
    overhead_s = learnt_resume_overhead_s(job)
    if overhead_s is not None:
        measured = len(schedule_of(job).resume_overheads_s)
        text += f"; a resume costs it about {duration(overhead_s)} (measured over {measured})"
    return text


def _progress_line(event: JobEvent, job: JobRow) -> None:
    """One transition of a followed job, at its factory time; the run's metrics on the one it is in."""
    metrics = ""
    if (event.state, event.reason) == (job.state, job.reason):
        metrics = "  ".join(f"{key}={_value(job.progress[key])}" for key in ("epoch", "step", "loss")
                            if key in job.progress)
    click.echo(f"{factory_time(event.time_s)}  {event.state:<9} {shorten(event.reason, 70)}"
               + (f"  [{metrics}]" if metrics else ""))


def _summary(job: JobRow) -> str:
    ran = duration(schedule_of(job).run_s)
    text = f"{job.job_id} {job.state} after {ran} of run time in {job.attempt} attempt(s)"
    return text + (f": {job.error}" if job.error else "")


def _pairs(values: dict[str, Any]) -> str:
    return "  ".join(f"{key}={_value(value)}" for key, value in values.items())


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _shown(job: JobRow) -> dict[str, Any]:
    """The job as JSON for people: its spec's secrets (`runtime_env.env_vars` values) masked."""
    shown = job.model_dump(mode="json")
    shown["spec"] = masked_spec(shown["spec"])
    return shown
