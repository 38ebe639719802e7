"""The demo's live-training chapter: real Ray Train jobs under the price-aware scheduler.

It runs a factory of its own, because it needs a slower replay than the other chapters (training
takes real seconds): a local Ray head with simulated GPUs, a replay of 60 factory seconds per
real second (an hour in a minute) from 2024-07-01 00:00 UTC, and a generated price trace with a story
(a dear hour, a cheap one, a price spike, a cheap hour again, then a flat day for the grid chapter,
`factory.demo_grid`, and ordinary days around it). Its state lives in
`<state_dir>/live-demo/`, wiped at the start so the replay always starts at midnight.

Three jobs of the shipped regression example are submitted at midnight (on a slow machine a few
factory minutes later: their deadlines are times of day, so the story does not move with that delay):
  * `nlp-large` (2 GPUs, 2 h, due at 06:00) waits for the cheap hour, is paused through the spike
    and resumes from its checkpoint in the next cheap hour;
  * `vision-small` (1 GPU, 0.6 h, due at 03:00) waits for the cheap hour;
  * `ops-urgent` (1 GPU, 0.5 h, due at 01:20) cannot wait for the cheap hour (it could run only 20 of its
    30 minutes in it) and starts at once, in the dear hour.
Why a minute per hour: what a job takes in factory time is its real time times the replay's speed, and
the real time is mostly Ray Train's start-up, 12-15 s on an idle 2-core machine and 25-35 s beside a busy
process. The epochs are paced (about 2 s each, Ray Train's reporting), so each job's epochs are sized for
its estimate at this speed, and the story's margins (the cheap hour before the spike, each deadline) hold
a start-up of up to about 40 real seconds. At 120x the same start-up took 50-110 factory minutes, and the
story changed with the machine: jobs ran into the spike and finished late.
A resume costs the same start-up, so the chapter's factory plans with a 20-minute resume overhead
(`scheduler.preempt_overhead_s`): no job is paused for a saving that a restart would eat.
A job held back for a price says why and what it is promised, as `factory job ID` shows it:
"nlp-large waits: cheap window at 01:00; latest safe start 03:48; deadline 06:00" (started by its latest
safe start, it meets its deadline beside every job admitted before it).
Each registers its trained model (`register_as`, served by the example's `predictor`). The chapter
ends with the registry: the models, `nlp-regressor` promoted to `production`, and their cards
(lineage, energy, cost, checksums); then `nlp-regressor@production` is deployed on Ray Serve and
a few requests are sent to it over HTTP.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from factory import lifecycle
from factory.cli.render import compact_times, shorten, table
from factory.client import FactoryClient
from factory.config import FactoryConfig, load_config
from factory.demo_grid import show_grid_event
from factory.jobs.states import JobState, settled
from factory.jobs.stored import stored_spec
from factory.prices.series import utc_label
from factory.store import JobEvent, JobRow

Echo = Callable[[str], None]
LIVE_START = datetime(2024, 7, 1, tzinfo=UTC)
LIVE_SPEED = 60.0
LIVE_GPUS = 4
STORY = {0: 95.0, 1: 25.0, 2: 420.0, 3: 30.0}  # UTC hour of 2024-07-01 -> USD/MWh
ORDINARY_DAY = [70, 65, 60, 58, 60, 68, 80, 95, 105, 100, 90, 85, 80, 78, 82, 95, 120, 140, 130, 110,
                95, 88, 80, 74]
FLAT_FROM_HOUR, FLAT_PRICE = 4, 80.0  # the story day after the story: flat, for the grid chapter
TIMEOUT_S = 600.0
REGRESSION = "factory.examples.regression:train_loop_per_worker"
PREDICTOR = "factory.examples.regression:RegressionPredictor"
DEMO_POINTS = ((0.0, 0.0), (1.57, 0.5), (-1.0, 1.2))  # (x1, x2) sent to the served model


def price_of(moment: datetime) -> float:
    """The demo trace: the story on 2024-07-01 00:00-04:00 UTC, then a flat day (the grid chapter's: no
    job waits for a price there), an ordinary day's shape elsewhere."""
    if moment.date() == LIVE_START.date() and moment.hour in STORY:
        return STORY[moment.hour]
    if moment.date() == LIVE_START.date() and moment.hour >= FLAT_FROM_HOUR:
        return FLAT_PRICE
    return float(ORDINARY_DAY[moment.hour])


def live_config(base: FactoryConfig) -> FactoryConfig:
    """A factory of the demo's own: slower replay, the generated prices, price-aware, its state dir."""
    state_dir = Path(base.state_dir) / "live-demo"
    shutil.rmtree(state_dir, ignore_errors=True)  # demo scratch: the replay must start at midnight
    state_dir.mkdir(parents=True)
    first = LIVE_START - timedelta(days=8)  # a week of history for the forecaster
    hours = [first + timedelta(hours=h) for h in range(24 * 16)]
    prices = state_dir / "demo-prices.csv"
    rows = "".join(f"{hour.isoformat()},{price_of(hour)}\n" for hour in hours)
    prices.write_text("timestamp,price_per_mwh\n" + rows)
    raw: dict[str, Any] = {
        "state_dir": str(state_dir),
        "ray": {"num_cpus": max(4, os.cpu_count() or 1), "num_gpus": LIVE_GPUS,
                "dashboard_port": base.ray.dashboard_port},
        "clock": {"mode": "replay", "replay_start": LIVE_START.isoformat(), "speed_factor": LIVE_SPEED},
        "prices": {"source": "trace", "trace": {"paths": [str(prices)]}},
        # A restart is Ray Train's start-up again: 12-35 real seconds, as many minutes of this replay.
        "scheduler": {"policy": "price-aware", "tick_s": 1.0, "preempt_overhead_s": 1200.0},
        "serving": {"http_host": base.serving.http_host, "http_port": base.serving.http_port,
                    "replica_cpus": 0.5},
    }
    path = state_dir / "factory.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return load_config(path, env={})


def jobs() -> list[dict[str, Any]]:
    """The three jobs of the story (see the module docstring)."""
    def job(name: str, team: str, workers: int, hours: float, due: timedelta, epochs: int) -> dict[str, Any]:
        return {"name": name, "team": team, "kind": "train", "train_loop": REGRESSION, "num_workers": workers,
                "gpus_per_worker": 1, "cpus_per_worker": 1, "estimated_duration_s": hours * 3600,
                "deadline": (LIVE_START + due).isoformat(), "preemptible": True, "config": {"epochs": epochs},
                "register_as": f"{team}-regressor", "predictor": PREDICTOR}

    # Epochs for each estimate at this speed on an idle machine: 2 factory minutes each, plus the start-up.
    return [job("nlp-large", "nlp", 2, 2.0, timedelta(hours=6), 48),
            job("vision-small", "vision", 1, 0.6, timedelta(hours=3), 8),
            job("ops-urgent", "ops", 1, 0.5, timedelta(minutes=80), 4)]


def chapter_live(base: FactoryConfig, echo: Echo, grid_heading: str | None = None) -> None:
    """Bring the live factory up, submit the jobs, narrate their states, print their accounts; then,
    under `grid_heading` (if given), the grid chapter on the same factory (`factory.demo_grid`)."""
    config = live_config(base)
    echo(f"A factory of its own for this chapter: {LIVE_GPUS} simulated GPUs, an hour of prices every "
         f"{3600 / LIVE_SPEED:.0f} s, prices {', '.join(f'{h:02d}h {p:g}' for h, p in STORY.items())} "
         "USD/MWh from midnight.")
    result = lifecycle.up(config)
    try:
        follow(result.client, echo)
        if grid_heading is not None:
            echo(f"\n{grid_heading}")
            show_grid_event(result.client, echo)
    finally:
        lifecycle.down(config)


def follow(client: FactoryClient, echo: Echo) -> None:
    """Submit the story's jobs and print every change of state until all have ended."""
    ids = {client.submit(spec, submitted_by="demo"): spec["name"] for spec in jobs()}
    read_at: dict[str, tuple[float, str, str]] = {}  # each job's row when its timeline was last read
    events_seen: dict[str, int] = dict.fromkeys(ids, 0)
    promised: dict[str, str | None] = {}  # the promise last told for each job
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        rows = {job.job_id: job for job in client.jobs() if job.job_id in ids}
        # Every transition since the last poll, from the jobs' timelines (a poll alone would miss those
        # that came in between), in the order they happened, each at its own factory time.
        new: list[tuple[JobEvent, JobRow]] = []
        for job_id, job in rows.items():
            if read_at.get(job_id) != (job.updated_s, job.state, job.reason):
                read_at[job_id] = (job.updated_s, job.state, job.reason)
                events = client.job(job_id).events
                new += [(event, job) for event in events[events_seen[job_id]:]]
                events_seen[job_id] = len(events)
        for event, job in sorted(new, key=lambda pair: (pair[0].time_s, pair[0].id or 0)):
            at = datetime.fromtimestamp(event.time_s, UTC)
            price = price_of(at.replace(minute=0, second=0, microsecond=0))
            echo(f"  {at:%H:%M} UTC {price:5.0f} USD/MWh  {ids[job.job_id]:<13} {event.state:<11} "
                 f"{shorten(compact_times(event.reason, at.date()), 70)}".rstrip())
        # A waiting job's promise, whenever it is new: the scheduler refines a wait's reason (a new
        # planned start) without a new transition, so this follows the rows, not the timelines.
        today = client.now().date()
        for job_id, job in rows.items():
            promise = wait_line(ids[job_id], job, today) if job.state == "WAITING" else None
            if promise and promise != promised.get(job_id):
                echo(promise)
            promised[job_id] = promise
        if rows and all(_settled(job) for job in rows.values()):
            break
        time.sleep(0.5)
    final = {job.job_id: job for job in client.jobs() if job.job_id in ids}
    for job_id in ids:
        log = client.logs(job_id, tail_lines=1000)
        resumed = [line for line in log.splitlines() if "start_step=" in line and "start_step=0 " not in line]
        if resumed:
            step = resumed[-1].split("start_step=")[1].split()[0]
            echo(f"  {ids[job_id]} resumed from its checkpoint at step {step}: no step repeated")
    rows = []
    for job_id, name in ids.items():
        job = final[job_id]
        record = job.accounting
        # When its run ended (registering its model comes after, and is no part of the deadline).
        ended_s = next((event.time_s for event in reversed(client.job(job_id).events)
                        if JobState(event.state).is_finished and event.from_state
                        and not JobState(event.from_state).is_finished), job.updated_s)
        on_time = job.deadline_s is None or ended_s <= job.deadline_s
        rows.append([name, job.team, job.state, job.attempt, "yes" if on_time else "NO",
                     f"{record.get('energy_kwh', 0):.2f}", f"{record.get('cost', 0):.4f}",
                     f"{record.get('cost_if_run_at_once', 0):.4f}", f"{record.get('savings', 0):.4f}"])
    echo("")
    headers = ["job", "team", "state", "runs", "on time", "kWh", "cost USD", "at once USD", "saved USD"]
    echo(table(headers, rows))
    total = sum(float(final[job_id].accounting.get("savings", 0)) for job_id in ids)
    spent = sum(float(final[job_id].accounting.get("cost", 0)) for job_id in ids)
    echo(f"Total: {spent:.4f} USD spent, {total:.4f} USD saved against starting every job at once. "
         "`factory submit configs/jobs/train-regression.yaml --wait` runs one yourself.")
    show_registry(client, echo)
    if any(m.name == "nlp-regressor" for m in client.models()):
        show_serving(client, echo)


def wait_line(name: str, job: JobRow, today: date) -> str | None:
    """'  nlp-large waits: cheap window at 01:00; latest safe start 03:48; deadline 06:00' for a job held
    back with a promise (a latest safe start), times of `today` as HH:MM; None for any other job."""
    if job.latest_safe_start_s is None:
        return None
    category, _, detail = job.reason.partition(": ")
    if "latest safe start" not in detail:  # a reason that does not name it: say it anyway
        detail += f"; latest safe start {utc_label(job.latest_safe_start_s)}"
    why = "" if category == "price" else f" for {category}"
    return f"  {name} waits{why}: {compact_times(detail, today)}"


def show_serving(client: FactoryClient, echo: Echo) -> None:
    """The production model behind an HTTP endpoint, and a few requests to it with their answers."""
    import json
    import math
    import urllib.request

    from factory.cli.serving import describe

    view = client.deploy("nlp-regressor@production", deployed_by="demo")
    echo("")
    echo(f"`factory deploy nlp-regressor@production`: {describe(view)}")
    for x1, x2 in DEMO_POINTS:
        body = json.dumps({"x1": x1, "x2": x2})
        request = urllib.request.Request(view["url"], data=body.encode(),
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
        except OSError as error:  # HTTPError, a refused connection: say so and go on with the story
            echo(f"  POST {view['url']} {body} -> failed: {error}")
            continue
        echo(f"  POST {view['url']} {body} -> {json.dumps(answer)}  "
             f"(true y = sin(x1) + x2^2 = {math.sin(x1) + x2 ** 2:.3f})")
    echo(f"The endpoint takes one JSON object per POST; GET {view['url']}/health and /schema describe it. "
         "`factory endpoints` lists endpoints with their traffic and latency.")


def show_registry(client: FactoryClient, echo: Echo) -> None:
    """The models the jobs registered, one promoted to production, and its card."""
    from factory.cli.models import card_text

    models = client.models()
    echo("")
    echo("The models the jobs registered (`factory models`):")
    echo(table(["name", "versions", "latest", "kind", "size"],
               [[m.name, m.versions, m.latest, m.kind, f"{m.size_bytes / 1e3:.1f} kB"] for m in models]))
    if any(m.name == "nlp-regressor" for m in models):
        change = client.set_alias("nlp-regressor", "production", 1, set_by="demo")
        echo("`factory promote nlp-regressor 1 --alias production`: "
             f"nlp-regressor@production -> v{change.version}")
    echo("Their cards (`factory model NAME`):")
    for summary in models:
        echo(card_text(client.model(summary.name)))
        echo("")


def _settled(job: JobRow) -> bool:
    """Over (a model it registers registered, or why not said) and accounted."""
    return settled(JobState(job.state), stored_spec(job).register_as is not None) and bool(job.accounting)
