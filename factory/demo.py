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
from factory.demo_live import chapter_live
from factory.errors import FactoryError
from factory.telemetry.attribution import FACTORY_JOB_ENV
from factory.telemetry.backends.nvml import NvmlBackend

Echo = Callable[[str], None]
# A July day replays in 48 s at one factory hour per 2 real seconds.
DEMO_REPLAY_START = datetime(2024, 7, 1, tzinfo=UTC)
DEMO_SPEED_FACTOR = 1800.0
DEMO_SIMULATED_GPUS = 4
DEMO_JOB = "demo-train"
WAIT_S = 15.0


def demo_config(config: FactoryConfig, explicit_config: bool) -> FactoryConfig:
    """The demo replays the past unless the user gave a config of their own.

    A local head whose GPU count is not configured declares `DEMO_SIMULATED_GPUS` GPUs to Ray on
    a machine without NVIDIA GPUs, so that telemetry has GPUs to simulate.
    """
    if config.ray.num_gpus is None and not NvmlBackend.is_available():
        config = config.model_copy(update={"ray": config.ray.model_copy(
            update={"num_gpus": DEMO_SIMULATED_GPUS})})
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


class DemoTrainer:
    """Stands in for a training worker: it only holds the GPUs Ray gave it (issue 6 trains)."""

    def gpu_ids(self) -> list[int]:
        """The GPUs Ray assigned to this worker."""
        import ray

        return [int(index) for index in ray.get_gpu_ids()]


def _wait(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def chapter_telemetry(client: FactoryClient, echo: Echo, watch_s: float) -> None:
    """Telemetry: every GPU's power and energy, the facility's, and a job's kWh."""
    import ray

    gpus = client.gpus()
    echo(render.facility_text(client.facility()))
    if not gpus:
        echo("(no GPUs here: set ray.num_gpus to simulate some, e.g. 4)")
        return
    wanted = min(2, len(gpus))
    echo(f"\nA job '{DEMO_JOB}' takes {wanted} GPUs (a Ray actor with num_gpus={wanted}):")
    worker = ray.remote(DemoTrainer).options(
        num_gpus=wanted, num_cpus=0, runtime_env={"env_vars": {FACTORY_JOB_ENV: DEMO_JOB}}).remote()
    try:
        ray.get(worker.gpu_ids.remote(), timeout=120)
        _wait(lambda: sum(DEMO_JOB in gpu.consumers for gpu in client.gpus()) == wanted)
        time.sleep(watch_s)
        echo(render.gpus_text(client.gpus()))
        echo(render.facility_text(client.facility()))
    finally:
        ray.kill(worker)
    _wait(lambda: not any(DEMO_JOB in gpu.consumers for gpu in client.gpus()))
    energy = client.job_energy(DEMO_JOB)
    simulated = all(gpu.source == "simulated" for gpu in gpus)
    clock = "on the factory clock, simulated GPUs" if simulated else "real GPUs"
    echo(f"\n'{DEMO_JOB}' finished: {energy.energy_kwh:.2f} kWh over {energy.gpu_seconds / 3600:.2f} "
         f"GPU-hours ({clock}). `factory gpus --watch` shows it live.")


DEMO_JOB_POWER_KW = 2.8  # four simulated GPUs at 700 W
DEMO_JOB_HOURS = 3


def chapter_prices(client: FactoryClient, echo: Echo, watch_s: float) -> None:
    """The grid: the price and carbon now, the forecast, and what a job costs now or later."""
    from factory.cli.price_chart import price_text

    feed = client.price_feed()
    echo(price_text(client.price(), client.forecast(hours=24), feed, 24))
    for note in feed.notes:
        echo(f"  repaired: {note}")
    steps = 3
    for _ in range(steps):
        time.sleep(watch_s / steps)
        now = client.price()
        carbon = "" if now.carbon_g_per_kwh is None else f", {now.carbon_g_per_kwh:.0f} gCO2/kWh"
        echo(f"  {client.now():%Y-%m-%d %H:%M} UTC  {now.price_per_mwh:8.2f} {now.unit}{carbon}")
    forecast = client.forecast(hours=24)
    known = [point for point in forecast.points if point.known and point.price_per_mwh is not None]
    width = max(1, round(DEMO_JOB_HOURS * 3600 / forecast.interval_s))
    if len(known) < width:
        return
    means = [sum(p.price_per_mwh for p in known[i:i + width]) / width  # type: ignore[misc]
             for i in range(len(known) - width + 1)]
    best = min(range(len(means)), key=means.__getitem__)
    energy_kwh = DEMO_JOB_POWER_KW * DEMO_JOB_HOURS

    def cost(start_s: float) -> float:
        return client.energy_cost([{"start_s": start_s, "end_s": start_s + DEMO_JOB_HOURS * 3600,
                                    "energy_kwh": energy_kwh}]).cost

    now_cost, best_cost = cost(known[0].start_s), cost(known[best].start_s)
    best_at = datetime.fromtimestamp(known[best].start_s, tz=UTC)
    echo(f"\nA {DEMO_JOB_HOURS} h job drawing {DEMO_JOB_POWER_KW} kW ({energy_kwh:.1f} kWh) costs "
         f"{now_cost:.2f} {forecast.currency} if it starts now, {best_cost:.2f} at {best_at:%H:%M} UTC, "
         "the cheapest known start: the price-aware scheduler's opportunity.")


DEMO_SIM_JOBS = 12  # one every two hours of the first day
DEMO_SIM_HOURS = 72


def chapter_scheduling(client: FactoryClient, echo: Echo, watch_s: float) -> None:
    """The policies: a day of training jobs on this factory's prices, under fifo and price-aware."""
    import numpy as np

    from factory.prices.series import IntervalSeries
    from factory.simulation.run import SimulationSettings, prices_from_series, run_policy
    from factory.simulation.trace import JobTrace

    forecast = client.forecast(hours=DEMO_SIM_HOURS)
    values = [point.price_per_mwh for point in forecast.points]
    if None in values or len(values) * forecast.interval_s < DEMO_SIM_HOURS * 3600:
        echo("(the price feed does not reach 72 hours ahead here; `factory simulate` replays a trace)")
        return
    series = IntervalSeries(forecast.points[0].start_s, forecast.interval_s, np.array(values, dtype=float))
    prices = prices_from_series(series, forecast.currency, "this factory's price forecast")
    count = DEMO_SIM_JOBS
    trace = JobTrace(  # 2-hour jobs of 1 or 2 GPUs, each due 12 hours after it is submitted
        job_id=np.array([f"train-{i:02d}" for i in range(count)], dtype=object),
        submit_s=7200.0 * np.arange(count), duration_s=np.full(count, 7200.0),
        num_gpus=np.array([1 + i % 2 for i in range(count)]), deadline_s=np.full(count, 12 * 3600.0),
        preemptible=np.ones(count, dtype=bool), power_w=np.full(count, 700.0),
        team=np.full(count, "", dtype=object), priority=np.zeros(count, dtype=np.int64),
    )
    settings = SimulationSettings(gpus=DEMO_SIMULATED_GPUS)
    reports = {name: run_policy(trace, prices, settings, name)[1] for name in ("fifo", "price-aware")}
    echo(f"{count} two-hour training jobs over a day on {DEMO_SIMULATED_GPUS} GPUs, each due 12 h after "
         "submission, through the policies the scheduler runs (prices as this factory's feed shows them):")
    for name, report in reports.items():
        echo(f"  {name:<12} {report.cost:6.2f} {forecast.currency}  {report.energy_kwh:5.1f} kWh  "
             f"deadline misses {report.deadline_misses} (promises broken {report.missed_promises})  "
             f"mean wait {report.mean_wait_s / 3600:4.1f} h  "
             f"preemptions {report.preemptions}")
    fifo, aware = reports["fifo"].cost, reports["price-aware"].cost
    saved = (fifo - aware) / abs(fifo) * 100 if fifo else 0.0
    echo(f"price-aware saves {saved:.0f} % of the energy cost. Replay real market and job traces with "
         "`factory simulate --prices FILE --jobs FILE --gpus N`.")


CHAPTERS: list[tuple[str, Callable[[FactoryClient, Echo, float], None]]] = [
    ("One clock for the whole factory", chapter_clock),
    ("Durable state and the audit log", chapter_state),
    ("GPU telemetry, facility power and a job's energy", chapter_telemetry),
    ("The electricity price, carbon and forecast", chapter_prices),
    ("Scheduling: the same jobs under fifo and price-aware", chapter_scheduling),
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
        echo(f"\n== {len(CHAPTERS) + 1}. Live training: waiting for cheap hours, pausing through a spike")
        if brought_up and result.started_local_head:
            lifecycle.down(config)  # the chapter runs a factory of its own (a slower replay)
            chapter_live(config, echo, grid_heading=f"== {len(CHAPTERS) + 2}. Answering the grid: a "
                         "demand-response event met on measured power")
            if not take_down:
                result = lifecycle.up(config)
                status = result.client.status()
        else:
            echo("(this chapter runs its own local factory, so only when the demo started the factory)")
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
