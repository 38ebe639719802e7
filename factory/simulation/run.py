"""One `factory simulate` run: read the inputs, simulate the policy and the `fifo` baseline, report.

Time zero of the job trace is the first price timestamp. The policy sees prices through a
`PriceFeed` on a `TraceProvider` whose known horizon is `forecast_hours`: exactly what a
GridPriceActor replaying the same file would reveal. Under a carbon objective it sees, the same
way, the series that objective plans on (`factory.prices.objective.signal_series`: the carbon
intensity, or the price with carbon priced in); energy is always charged on the true price and carbon.

Prices come from a trace, or from a tariff over the span of a carbon trace (a facility on a fixed
time-of-use tariff that schedules for carbon).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from factory.errors import SimulationInputError
from factory.price_config import CarbonTraceConfig, PricesConfig, TraceConfig
from factory.prices.feed import PriceFeed
from factory.prices.objective import Objective, signal_series, weigh
from factory.prices.series import IntervalSeries
from factory.prices.tariff import TariffProvider, load_tariff
from factory.prices.trace import LoadedTrace, TraceProvider, load_trace
from factory.scheduling import make_policy
from factory.simulation.engine import Cluster, Outcome, simulate
from factory.simulation.grid_events import GridEvents, compliance
from factory.simulation.jobs import JobColumns, check_fits, load_jobs, refuse_first
from factory.simulation.report import (
    OptimumReport,
    PolicyReport,
    SimulationReport,
    captured_share,
    savings_pct,
    summarize,
)
from factory.simulation.trace import JobTrace

DEFAULT_COLUMNS = JobColumns()


@dataclass(frozen=True)
class PriceInput:
    """Where the prices (and carbon) come from: trace options as in the `prices` config section.

    `trace` None: the prices of the tariff at `tariff_path` (None: the built-in one), over the span of
    the `carbon` trace, which is then required.
    """

    trace: TraceConfig | None
    carbon: CarbonTraceConfig | None = None
    currency: str = "USD"
    tariff_path: Path | None = None


@dataclass
class LoadedPrices:
    """The true series (for charging energy) and the trace the feed replays to the policy."""

    loaded: LoadedTrace
    price: IntervalSeries
    carbon: IntervalSeries | None
    currency: str
    carbon_loaded: LoadedTrace | None = None

    @property
    def time_zero_s(self) -> float:
        """The first price timestamp: time zero of the job trace."""
        return self.price.start_s

    def feed(self, forecast_hours: float) -> PriceFeed:
        """A feed replaying the trace with prices known `forecast_hours` ahead."""
        config = PricesConfig(source="trace", trace=TraceConfig(paths=list(self.loaded.files)),
                              known_horizon_h=forecast_hours, currency=self.currency)
        carbon = None if self.carbon_loaded is None else TraceProvider(self.carbon_loaded, forecast_hours)
        return PriceFeed(TraceProvider(self.loaded, forecast_hours), config, carbon_provider=carbon)

    def planning(self, objective: Objective, carbon_price_per_tonne: float | None) -> LoadedPrices:
        """The prices the policy is shown under `objective`: itself for cost, else the objective's series.

        Raises:
            ObjectiveError: a carbon objective without a carbon series (or a carbon price).
        """
        if objective == "cost":
            return self
        signal = signal_series(objective, self.price, self.carbon, carbon_price_per_tonne)
        return prices_from_series(signal, self.currency, f"{objective} of {', '.join(self.loaded.files)}")


def prices_from_series(price: IntervalSeries, currency: str, name: str) -> LoadedPrices:
    """Prices already in memory (e.g. the factory's own feed), replayed like a trace called `name`."""
    return LoadedPrices(LoadedTrace(price=price, carbon=None, files=[name]), price, None, currency)


def load_prices(source: PriceInput) -> LoadedPrices:
    """Read the price trace (and a separate carbon trace); errors name the file and row."""
    if source.trace is None:
        return _tariff_prices(source)
    loaded = load_trace(source.trace, "--prices")
    if loaded.price is None:
        raise SimulationInputError(f"{', '.join(loaded.files)}: no price column; pass --price-column")
    carbon_loaded = load_trace(source.carbon, "--carbon") if source.carbon is not None else None
    carbon = carbon_loaded.carbon if carbon_loaded is not None else loaded.carbon
    return LoadedPrices(loaded, loaded.price, carbon, source.currency, carbon_loaded)


def _tariff_prices(source: PriceInput) -> LoadedPrices:
    """The tariff's prices over the carbon trace's span."""
    if source.carbon is None:
        raise SimulationInputError("--prices: a tariff has prices for any time, so the run needs a carbon "
                                   "trace to say which: pass --carbon FILE (or set prices.carbon)")
    carbon_loaded = load_trace(source.carbon, "--carbon")
    carbon = carbon_loaded.carbon
    if carbon is None:
        raise SimulationInputError(f"{', '.join(carbon_loaded.files)}: no carbon column; name it with "
                                   "--carbon-column")
    tariff = load_tariff(source.tariff_path)
    if tariff.currency != source.currency:
        raise SimulationInputError(f"tariff {source.tariff_path or 'built-in'} is in {tariff.currency} but "
                                   f"the prices' currency is {source.currency}; make them agree (--currency)")
    provider = TariffProvider(tariff, source.tariff_path)
    price = provider.price(carbon.start_s, carbon.end_s)
    assert price is not None  # a tariff prices every time
    loaded = LoadedTrace(price=price, carbon=None, files=[provider.description])
    return LoadedPrices(loaded, price, carbon, source.currency, carbon_loaded)


@dataclass(frozen=True)
class SimulationSettings:
    """The cluster and policy options of one run (the CLI flags)."""

    gpus: int
    policy: str = "price-aware"
    power_w: float = 700.0
    forecast_hours: float = 24.0
    preempt_overhead_s: float = 0.0
    default_slack: float = 2.0
    gpus_per_node: int | None = None
    power_budget_kw: float | None = None
    quotas: dict[str, int] = field(default_factory=dict)
    optimum: bool = False
    objective: Objective = "cost"
    carbon_price_per_tonne: float | None = None
    grid_events: GridEvents | None = None
    min_power_cap_pct: float = 50.0  # during a grid event, GPUs may be capped down to this (100: no caps)


def load_job_trace(path: str | Path, settings: SimulationSettings, prices: LoadedPrices,
                   columns: JobColumns = DEFAULT_COLUMNS) -> JobTrace:
    """The job trace, checked against the cluster and the price trace."""
    trace = load_jobs(path, default_slack=settings.default_slack, default_power_w=settings.power_w,
                      columns=columns)
    trace_s = prices.price.end_s - prices.time_zero_s  # the price trace's length: job times end there
    check_fits(trace, path, gpus=settings.gpus, trace_end_s=trace_s, columns=columns)
    per_node = settings.gpus_per_node
    if per_node is not None:
        refuse_first(path, trace.num_gpus > per_node, lambda i: (
            f"{columns.label('num_gpus')}: job '{trace.job_id[i]}' needs {trace.num_gpus[i]} GPUs on one "
            f"node but nodes have {per_node}; pass --gpus-per-node {int(trace.num_gpus.max())} or more"))
    due_s = trace.submit_s + trace.deadline_s
    refuse_first(path, due_s > trace_s, lambda i: (
        f"{columns.label('deadline_s')}: job '{trace.job_id[i]}' is due {due_s[i] / 86400:.2f} days after "
        f"time zero, after the price trace ends ({trace_s / 86400:.2f} days); use a longer price trace or "
        "a shorter deadline_s (or --default-slack)"))
    _check_quotas(trace, path, settings, columns)
    budget_kw = settings.power_budget_kw
    if budget_kw is not None:
        draw_kw = trace.num_gpus * trace.power_w / 1000.0
        refuse_first(path, draw_kw > budget_kw, lambda i: (
            f"{columns.label('power_w')}: job '{trace.job_id[i]}' draws {draw_kw[i]:.1f} kW, over the power "
            f"budget of {budget_kw:g} kW; raise --power-budget-kw"))
    return trace


def _check_quotas(trace: JobTrace, path: str | Path, settings: SimulationSettings,
                  columns: JobColumns) -> None:
    """Quotas that fit the cluster, and no non-preemptible job that quotas would keep waiting forever."""
    if not settings.quotas:
        return
    guaranteed = sum(settings.quotas.values())
    if guaranteed > settings.gpus:
        raise SimulationInputError(f"--quota: the guarantees add up to {guaranteed} GPUs but the cluster has "
                                   f"{settings.gpus}; lower them or raise --gpus")
    unguaranteed = settings.gpus - guaranteed
    reach = np.array([settings.quotas.get(str(team), 0) for team in trace.team]) + unguaranteed
    refuse_first(path, ~trace.preemptible & (trace.num_gpus > reach), lambda i: (
        f"{columns.label('num_gpus')}: non-preemptible job '{trace.job_id[i]}' of team '{trace.team[i]}' "
        f"needs {trace.num_gpus[i]} GPUs, but it may use only its team's guarantee and the {unguaranteed} "
        f"GPUs no team is guaranteed ({reach[i]}); raise its team's --quota"))


def run_policy(trace: JobTrace, prices: LoadedPrices, settings: SimulationSettings,
               policy_name: str, grid_events: bool = True) -> tuple[Outcome, PolicyReport]:
    """Simulate one policy and report it (`grid_events` False: as if the grid had asked nothing)."""
    cluster = Cluster.uniform(
        settings.gpus, settings.gpus_per_node,
        power_budget_w=None if settings.power_budget_kw is None else settings.power_budget_kw * 1000.0,
        quotas=dict(settings.quotas),
        min_cap_share=settings.min_power_cap_pct / 100.0 if settings.min_power_cap_pct < 100.0 else None,
    )
    planning = prices.planning(settings.objective, settings.carbon_price_per_tonne)
    outcome = simulate(trace, planning.feed(settings.forecast_hours), cluster, make_policy(policy_name),
                       time_zero_s=prices.time_zero_s, preempt_overhead_s=settings.preempt_overhead_s,
                       grid_events=settings.grid_events if grid_events else None)
    report = summarize(outcome, trace, time_zero_s=prices.time_zero_s, total_gpus=cluster.total_gpus,
                       price=prices.price, carbon=prices.carbon)
    return outcome, report


def run_simulation(trace: JobTrace, prices: LoadedPrices,
                   settings: SimulationSettings) -> tuple[Outcome, Outcome, SimulationReport]:
    """The policy and the `fifo` baseline on the same input: both outcomes and the report.

    With `settings.optimum` the LP bound is solved first, so that a missing scipy or a job the LP cannot
    place is said before minutes of simulation, not after.
    """
    prices.planning(settings.objective, settings.carbon_price_per_tonne)  # a carbon objective's errors first
    optimum = solve_optimum(trace, prices, settings) if settings.optimum else None
    outcome, report = run_policy(trace, prices, settings, settings.policy)
    baseline_outcome, baseline = (outcome, report) if settings.policy == "fifo" else \
        run_policy(trace, prices, settings, "fifo")

    def goal(cost: float | None, carbon_kg: float | None) -> float | None:
        return weigh(settings.objective, cost, carbon_kg, settings.carbon_price_per_tonne)

    events, compliance_cost, capped_gpu_h = None, None, None
    if settings.grid_events is not None:
        capped_gpu_h = outcome.capped_gpu_s / 3600.0
        events = compliance(settings.grid_events, outcome.segment_start_s, outcome.segment_end_s,
                            outcome.segment_power_w, outcome.segment_fixed_w)
        _, unasked = run_policy(trace, prices, settings, settings.policy, grid_events=False)
        compliance_cost = report.cost - unasked.cost

    share = None
    ours, theirs = goal(report.cost, report.carbon_kg), goal(baseline.cost, baseline.carbon_kg)
    if optimum is not None and ours is not None and theirs is not None:
        share = captured_share(ours, theirs, goal(optimum.cost, optimum.carbon_kg))
    return outcome, baseline_outcome, SimulationReport(
        **report.model_dump(), currency=prices.currency, baseline=baseline,
        savings_pct=savings_pct(report.cost, baseline.cost), objective=settings.objective,
        carbon_savings_pct=None if report.carbon_kg is None or baseline.carbon_kg is None else
        savings_pct(report.carbon_kg, baseline.carbon_kg), optimum=optimum, captured_share=share,
        grid_events=events, compliance_cost=compliance_cost, capped_gpu_h=capped_gpu_h)


def solve_optimum(trace: JobTrace, prices: LoadedPrices, settings: SimulationSettings) -> OptimumReport:
    """The offline LP bound of the same input, with the same GPUs, power budget and carbon series.

    Raises:
        SimulationInputError: one line, without scipy (naming the install) or when a job's LP window
            leaves the price trace (the LP never guesses a price, unlike the replay, which charges
            energy after the trace at its last interval).
    """
    from factory.simulation.optimum import SCIPY_MISSING, offline_optimum

    # `load_job_trace` keeps submit + deadline inside the trace; the LP stretches a deadline shorter
    # than the run time to the run time, which can leave it. Said here in hours after time zero, not
    # in the Unix seconds of optimum.py's own ValueError (still caught below for anything else).
    trace_h = (prices.price.end_s - prices.time_zero_s) / 3600
    end_h = (trace.submit_s + np.maximum(trace.duration_s, trace.deadline_s)) / 3600
    past = np.flatnonzero(end_h > trace_h)
    if past.size:
        i = int(past[0])
        raise SimulationInputError(
            f"--optimum: job '{trace.job_id[i]}' runs {trace.duration_s[i] / 3600:g} h, longer than its "
            f"deadline, so the LP lets it finish {end_h[i]:g} h after time zero, after the price trace ends "
            f"({trace_h:g} h); use a longer price trace or run without --optimum")
    try:
        optimum = offline_optimum(
            trace, prices.price, time_zero_s=prices.time_zero_s, gpus=settings.gpus,
            power_budget_w=None if settings.power_budget_kw is None else settings.power_budget_kw * 1000.0,
            carbon=prices.carbon, objective=None if settings.objective == "cost" else
            signal_series(settings.objective, prices.price, prices.carbon, settings.carbon_price_per_tonne),
            preempt_overhead_s=settings.preempt_overhead_s)
    except ImportError:
        raise SimulationInputError(f"--optimum: {SCIPY_MISSING}") from None
    except ValueError as exc:
        raise SimulationInputError(f"--optimum: {exc}") from None
    return OptimumReport(cost=optimum.cost if optimum.feasible else None, carbon_kg=optimum.carbon_kg,
                         feasible=optimum.feasible)
