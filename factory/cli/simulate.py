"""`factory simulate`: replay a job trace against a price trace through a policy, with the fifo baseline.

The flag names and JSON keys are a contract (other tools read them): `--prices`, `--jobs`, `--gpus`,
`--policy`, `--power-w`, `--forecast-hours`, `--preempt-overhead-s`, `--json`, `--default-slack`,
`--plot`, `--optimum`, `--objective`, `--carbon-price-per-tonne`, `--carbon`, `--grid-events`,
`--min-power-cap-pct`; JSON keys as in
`factory.simulation.report`. Every float flag is finite.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import click
from pydantic import ValidationError

from factory.cli.output import json_text
from factory.errors import PriceDataError, SimulationInputError
from factory.prices.objective import OBJECTIVES
from factory.scheduling import DEFAULT_POLICY, POLICY_NAMES

PRICE_FILE_SUFFIXES = (".csv", ".parquet", ".pq")
CONFIG_SUFFIXES = (".yaml", ".yml")


@click.command()
@click.option("--prices", "prices_path", required=True,
              help="Price trace: CSV or Parquet with `timestamp` and `price_per_mwh` (optional "
              "`carbon_g_per_kwh`), or a factory config YAML whose prices.trace (and prices.carbon) to use; "
              "a config whose prices.source is 'tariff' prices the span of the carbon trace by its tariff.")
@click.option("--jobs", "jobs_path", required=True, type=click.Path(dir_okay=False),
              help="Job trace CSV: job_id, submit_s, duration_s, num_gpus [, deadline_s, preemptible, "
              "power_w, team, priority].")
@click.option("--gpus", required=True, type=click.IntRange(min=1), help="GPUs in the cluster.")
@click.option("--policy", type=click.Choice(POLICY_NAMES), default=DEFAULT_POLICY, show_default=True)
@click.option("--power-w", default=700.0, show_default=True, type=click.FloatRange(min=0),
              help="Power per GPU of a job whose trace row names none (W).")
@click.option("--forecast-hours", default=24.0, show_default=True, type=click.FloatRange(min=0),
              help="How far ahead the policy sees real prices; beyond, the forecaster's estimate.")
@click.option("--preempt-overhead-s", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Extra run time each resume costs (restart from the checkpoint).")
@click.option("--default-slack", default=2.0, show_default=True, type=float,
              help="A job without deadline_s must finish within this many times its duration.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=None,
              help="Split the GPUs into nodes of this size (gang placement); default: one pool.")
@click.option("--power-budget-kw", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Facility power budget for the GPUs of running jobs (kW).")
@click.option("--quota", "quotas", multiple=True, metavar="TEAM=GPUS",
              help="Guaranteed GPUs of a team (repeat for several teams).")
@click.option("--optimum", is_flag=True,
              help="Also solve the offline LP lower bound (needs scipy) and report the share of its "
              "savings the policy captured (JSON: `optimum`, `captured_share`).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="cost", show_default=True,
              help="What the policy minimises (and the LP bound, with --optimum): the energy cost, the "
              "carbon emitted, or the cost with carbon priced in (--carbon-price-per-tonne).")
@click.option("--carbon-price-per-tonne", type=click.FloatRange(min=0), default=None,
              help="With --objective cost+carbon: the price of a tonne of CO2, in the prices' currency.")
@click.option("--carbon", "carbon_path", default=None,
              help="A carbon trace of its own (CSV or Parquet of gCO2/kWh; its column: --carbon-column, "
              "default carbon_g_per_kwh), e.g. EIA-930 hourly data.")
@click.option("--grid-events", "grid_events_path", type=click.Path(dir_okay=False), default=None,
              help="Demand-response events: a CSV of start, end (ISO 8601), target_kw [, id, announced]; the "
              "facility's power stays under each target while it lasts (JSON: `grid_events`, "
              "`compliance_cost`).")
@click.option("--min-power-cap-pct", type=click.FloatRange(min=1, max=100), default=50.0, show_default=True,
              help="During a grid event, cap running jobs' GPUs down to this share of their power before "
              "pausing any (the simulated GPU's floor); 100 turns caps off (JSON: `capped_gpu_h`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of price, power and queue over time.")
@click.option("--timestamp-column", default=None, help="Price file column of the timestamps.")
@click.option("--price-column", default=None, help="Price file column of the price per MWh.")
@click.option("--carbon-column", default=None, help="Column of the carbon intensity (gCO2/kWh).")
@click.option("--skip-rows", type=click.IntRange(min=0), default=None, help="Title lines above the header.")
@click.option("--timestamp-marks", type=click.Choice(["start", "end"]), default=None,
              help="Whether a timestamp opens or closes its interval.")
@click.option("--timezone", default=None, help="IANA zone of timestamps written without an offset.")
@click.option("--local-time-dst", type=click.Choice(["strict", "evened"]), default=None,
              help="Naive local times: follow clock changes exactly, or 24 rows every day.")
@click.option("--resolution-min", type=click.Choice(["5", "15", "60"]), default=None,
              help="Minutes per price row (default: the most common step between rows).")
@click.option("--currency", default=None, help="Currency of the prices (default USD).")
@click.option("--job-id-column", default="job_id", show_default=True)
@click.option("--submit-column", default="submit_s", show_default=True)
@click.option("--duration-column", default="duration_s", show_default=True)
@click.option("--gpus-column", default="num_gpus", show_default=True)
@click.option("--deadline-column", default="deadline_s", show_default=True)
@click.option("--preemptible-column", default="preemptible", show_default=True)
@click.option("--power-column", default="power_w", show_default=True)
@click.option("--team-column", default="team", show_default=True)
@click.option("--priority-column", default="priority", show_default=True)
def simulate(prices_path: str, jobs_path: str, gpus: int, policy: str, power_w: float, forecast_hours: float,
             preempt_overhead_s: float, default_slack: float, gpus_per_node: int | None,
             power_budget_kw: float | None, quotas: tuple[str, ...], optimum: bool, objective: str,
             carbon_price_per_tonne: float | None, carbon_path: str | None, grid_events_path: str | None,
             min_power_cap_pct: float, as_json: bool,
             plot_path: str | None, **columns: str | None) -> None:
    """Replay JOBS against PRICES through a policy; compare with fifo on the same input.

    Time zero of the job trace is the first price timestamp. Example with the real data:

      factory simulate --prices configs/examples/ercot-2024.yaml
      --jobs ../shared/data/jobs/pai_1k.csv --submit-column arrival_time
      --duration-column length --gpus-column cpus --gpus 40
    """
    from factory.simulation.grid_events import load_grid_events
    from factory.simulation.jobs import JobColumns
    from factory.simulation.run import SimulationSettings, load_job_trace, load_prices, run_simulation

    _finite(("--power-w", power_w), ("--forecast-hours", forecast_hours),
            ("--preempt-overhead-s", preempt_overhead_s), ("--default-slack", default_slack),
            ("--power-budget-kw", power_budget_kw), ("--carbon-price-per-tonne", carbon_price_per_tonne),
            ("--min-power-cap-pct", min_power_cap_pct))
    if objective == "cost+carbon" and carbon_price_per_tonne is None:
        raise SimulationInputError("--objective cost+carbon needs --carbon-price-per-tonne (e.g. 100)")
    if objective != "cost+carbon" and carbon_price_per_tonne is not None:
        raise SimulationInputError("--carbon-price-per-tonne prices carbon for --objective cost+carbon only; "
                                   "add that objective or drop the flag")
    price_input = _price_input(prices_path, columns, carbon_path)
    job_columns = JobColumns(**{_job_field(name): value for name, value in columns.items()
                                if name in _JOB_COLUMN_OPTIONS})
    settings = SimulationSettings(
        gpus=gpus, policy=policy, power_w=power_w, forecast_hours=forecast_hours,
        preempt_overhead_s=preempt_overhead_s, default_slack=default_slack, gpus_per_node=gpus_per_node,
        power_budget_kw=power_budget_kw, quotas=_quotas(quotas), optimum=optimum,
        objective=objective, carbon_price_per_tonne=carbon_price_per_tonne,  # type: ignore[arg-type]
        grid_events=load_grid_events(grid_events_path) if grid_events_path else None,
        min_power_cap_pct=min_power_cap_pct,
    )
    try:
        prices = load_prices(price_input)
    except PriceDataError as exc:  # the loader names config fields; here they are flags
        raise PriceDataError(re.sub(r"--prices\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"),
                                    str(exc))) from None
    trace = load_job_trace(jobs_path, settings, prices, job_columns)
    outcome, baseline_outcome, report = run_simulation(trace, prices, settings)
    if plot_path is not None:
        from factory.simulation.plot import plot

        baseline = None if policy == "fifo" else baseline_outcome
        plot(outcome, baseline, prices.price, prices.currency, plot_path,
             power_budget_w=None if power_budget_kw is None else power_budget_kw * 1000)
    if as_json:
        click.echo(json_text(report.to_json(), indent=2))
        return
    click.echo(_summary(report, gpus, forecast_hours, prices.loaded.files, plot_path))


_JOB_COLUMN_OPTIONS = ("job_id_column", "submit_column", "duration_column", "gpus_column", "deadline_column",
                       "preemptible_column", "power_column", "team_column", "priority_column")
_JOB_FIELD = {"submit": "submit_s", "duration": "duration_s", "gpus": "num_gpus", "deadline": "deadline_s",
              "power": "power_w"}


def _job_field(option: str) -> str:
    base = option.removesuffix("_column")
    return _JOB_FIELD.get(base, base)


def _price_input(path: str, options: dict[str, str | None],  # noqa: ANN202 - PriceInput, imported lazily
                 carbon_path: str | None = None):
    """The price (and carbon) trace options from a data file plus flags, or from a factory config.

    With `carbon_path` (--carbon), --carbon-column names that file's column, not one of the prices'.
    """
    from factory.price_config import TraceConfig
    from factory.simulation.run import PriceInput

    suffix = Path(path).suffix.lower()
    names = ("timestamp_column", "price_column", "carbon_column", "skip_rows", "timestamp_marks", "timezone",
             "local_time_dst", "resolution_min")
    overrides = {name: options[name] for name in names if options.get(name) is not None}
    carbon = _carbon_trace(carbon_path, overrides.pop("carbon_column", None)) if carbon_path else None
    currency = options.get("currency")
    if suffix in CONFIG_SUFFIXES:
        from factory.config import load_config

        config = load_config(path)
        carbon = carbon or config.prices.carbon
        if config.prices.source == "tariff":
            return PriceInput(None, carbon, currency or config.prices.currency, config.prices.tariff_path)
        if config.prices.source != "trace":
            raise SimulationInputError(f"{path}: prices.source is '{config.prices.source}'; --prices needs a "
                                       "config whose prices.source is 'trace' or 'tariff' (or pass a "
                                       "CSV/Parquet file)")
        try:
            trace = TraceConfig.model_validate({**config.prices.trace.model_dump(), **overrides})
        except ValidationError as exc:
            raise SimulationInputError(_flag_error(exc)) from None
        return PriceInput(trace, carbon, currency or config.prices.currency)
    if suffix not in PRICE_FILE_SUFFIXES and "*" not in path:
        raise SimulationInputError(f"--prices {path}: expected a .csv or .parquet price file or a factory "
                                   "config .yaml")
    try:
        trace = TraceConfig(paths=[path], **overrides)
    except ValidationError as exc:
        raise SimulationInputError(_flag_error(exc)) from None
    return PriceInput(trace, carbon, currency or "USD")


def _carbon_trace(path: str, column: str | None):  # noqa: ANN202 - CarbonTraceConfig, imported lazily
    """--carbon FILE (its column: --carbon-column, else the carbon trace's default)."""
    from factory.price_config import CarbonTraceConfig

    if Path(path).suffix.lower() not in PRICE_FILE_SUFFIXES and "*" not in path:
        raise SimulationInputError(f"--carbon {path}: expected a .csv or .parquet carbon file")
    try:
        return CarbonTraceConfig(paths=[path], **({"carbon_column": column} if column else {}))
    except ValidationError as exc:
        raise SimulationInputError(_flag_error(exc)) from None


# The unit and a sensible value of each float flag, for the message that refuses inf and nan.
_FINITE_FLAGS = {
    "--power-w": ("watts per GPU", "700"),
    "--forecast-hours": ("hours", "24"),
    "--preempt-overhead-s": ("seconds", "600"),
    "--default-slack": ("multiples of a job's duration", "2"),
    "--power-budget-kw": ("kilowatts", "50"),
    "--carbon-price-per-tonne": ("currency per tonne of CO2", "100"),
}


def _finite(*flags: tuple[str, float | None]) -> None:
    """Refuse inf and nan: click's FloatRange (and plain float) accept them, and no run could honour them.

    An infinite resume overhead would leave a paused job paused forever, an infinite horizon or slack
    has no price or deadline to plan against, and nan compares false with everything, so it would slip
    through every later check.
    """
    for flag, value in flags:
        if value is not None and not math.isfinite(value):
            unit, example = _FINITE_FLAGS[flag]
            raise SimulationInputError(f"{flag} {value:g}: must be a finite number ({unit}); pass e.g. "
                                       f"{flag} {example}")


def _flag_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}"


def _quotas(values: tuple[str, ...]) -> dict[str, int]:
    quotas: dict[str, int] = {}
    for value in values:
        team, sep, gpus = value.partition("=")
        if not sep or not team or not gpus.strip().isdigit():
            raise SimulationInputError(f"--quota {value}: expected TEAM=GPUS, e.g. --quota vision=8")
        if team.strip() in quotas:
            raise SimulationInputError(f"--quota {value}: team '{team.strip()}' has a quota already; give "
                                       "each team once")
        quotas[team.strip()] = int(gpus)
    return quotas


def _pauses(pauses) -> str:  # noqa: ANN001 - PausesPerJob
    return f"{pauses.p50:g}/{pauses.p90:g}/{pauses.max}"


def _summary(report, gpus: int, forecast_hours: float, files: list[str],  # noqa: ANN001
             plot_path: str | None) -> str:
    base = report.baseline
    names = ", ".join(Path(name).name for name in files[:2]) + (" ..." if len(files) > 2 else "")

    def fmt(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    def hours(value: float | None) -> str:
        return "—" if value is None else f"{value / 3600:,.2f} h"

    rows = [
        ("cost", f"{fmt(report.cost, 2)} {report.currency}", f"{fmt(base.cost, 2)} {report.currency}"),
        ("energy", f"{fmt(report.energy_kwh)} kWh", f"{fmt(base.energy_kwh)} kWh"),
        ("carbon", f"{fmt(report.carbon_kg)} kg", f"{fmt(base.carbon_kg)} kg"),
        ("completed", f"{report.completed}/{report.jobs}", f"{base.completed}/{base.jobs}"),
        ("deadline misses", str(report.deadline_misses), str(base.deadline_misses)),
        ("infeasible at admission", str(report.infeasible_at_admission), str(base.infeasible_at_admission)),
        ("missed promises", str(report.missed_promises), str(base.missed_promises)),
        ("mean JCT", hours(report.mean_jct_s), hours(base.mean_jct_s)),
        ("p95 JCT", hours(report.p95_jct_s), hours(base.p95_jct_s)),
        ("mean wait", hours(report.mean_wait_s), hours(base.mean_wait_s)),
        ("GPU utilization", f"{report.gpu_utilization:.1%}", f"{base.gpu_utilization:.1%}"),
        ("preemptions", str(report.preemptions), str(base.preemptions)),
        ("pauses per job (p50/p90/max)", _pauses(report.pauses_per_job), _pauses(base.pauses_per_job)),
        ("simulated in", f"{report.wall_s:.2f} s", f"{base.wall_s:.2f} s"),
    ]
    width = max(len(row[0]) for row in rows)
    left = max(len(row[1]) for row in rows + [("", report.policy, "")])
    minimising = "" if report.objective == "cost" else f"; minimising {report.objective}"
    lines = [f"{report.jobs} jobs on {gpus} GPUs; prices {names}; "
             f"real prices known {forecast_hours:g} h ahead{minimising}",
             "",
             f"{'':{width}}  {report.policy:>{left}}  {'fifo (baseline)':>16}"]
    lines += [f"{label:{width}}  {ours:>{left}}  {theirs:>16}" for label, ours, theirs in rows]
    saved = "—" if report.savings_pct is None else f"{report.savings_pct:.1f} %"
    lines += ["", f"cost saved against fifo: {saved}"]
    if report.carbon_savings_pct is not None:
        lines.append(f"carbon saved against fifo: {report.carbon_savings_pct:.1f} %")
    if report.optimum is not None:
        feasible = report.optimum.feasible
        bound = f"{fmt(report.optimum.cost, 2)} {report.currency}" if feasible else "infeasible"
        if feasible and report.objective != "cost":  # a bound on the objective, and what its schedule costs
            bound = (f"{fmt(report.optimum.carbon_kg)} kg CO2 at {fmt(report.optimum.cost, 2)} "
                     f"{report.currency}")
        share = (f"{report.captured_share:.3f}" if report.captured_share is not None
                 else "— (the optimum saves nothing against fifo)" if feasible else "—")
        lines.append(f"offline optimum (LP lower bound): {bound}; share of its savings captured: {share}")
    for event in report.grid_events or ():
        met = "met" if event.complied else "NOT met"
        why = f" ({event.unmet_reason})" if event.unmet_reason else ""
        lines.append(f"grid event {event.id} {event.start} to {event.end}: target {event.target_kw:,.1f} kW, "
                     f"at most {event.max_kw:,.1f} kW drawn: {met}{why}")
    if report.compliance_cost is not None:
        lines.append(f"cost of answering the grid: {report.compliance_cost:,.2f} {report.currency}")
    if report.capped_gpu_h:
        lines.append(f"GPU power capped for {report.capped_gpu_h:,.1f} GPU-hours during grid events")
    if report.uncovered_kwh > 0:
        lines.append(f"note: {report.uncovered_kwh:,.1f} kWh ran after the price trace ended and was priced "
                     "at its last interval")
    if plot_path:
        lines.append(f"plot written to {plot_path}")
    return "\n".join(lines)
