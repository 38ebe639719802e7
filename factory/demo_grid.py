"""The demo's grid chapter: a demand-response event met on measured power, in the live chapter's factory.

After the live-training story (the replay's morning is flat-priced, so no job here waits for a price),
two jobs train on 3 of the 4 simulated GPUs: `grid-flex` (2 GPUs, preemptible) and `grid-steady`
(1 GPU, not preemptible: the fixed load). The utility then asks for less than the facility's measured
power for 75 real seconds (an hour and a quarter of the live replay), starting five real seconds later
(`client.add_grid_event`): about 23 % less, the share that capping `grid-flex` can shed with room to spare
(taken from the power measured then, so that a host whose CPUs draw more is asked for a share it can meet
the same way). At the start the scheduler caps the GPUs of `grid-flex` (its 1.4 kW do not fit under the
target beside the fixed load, but capped to a little over half they do: a cap costs less than a pause),
and `grid-late`, submitted once the cap is set, waits for the power budget. When the event ends the caps
are restored and both run. The chapter prints the jobs' transitions with the facility's measured power,
then the event's outcome as `factory grid events` has it: baseline, target, the seconds from the start
until measured power was under the target (real ones: no replay speeds up a checkpoint) and whether the
facility complied. The jobs are long; the chapter cancels them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from factory.cli.render import compact_times, shorten
from factory.client import FactoryClient
from factory.telemetry.backends.simulated import MIN_LIMIT_SHARE

Echo = Callable[[str], None]
FLEX_GPUS = 2
SHED_SHARE = 0.7  # of what capping grid-flex's GPUs to their floor sheds: the event asks for this much
# Real seconds, whatever the replay's speed: from adding the event to its start, and its length (longer
# than the 60 s a response may take, so that staying under the target afterwards is judged too).
LEAD_REAL_S, EVENT_REAL_S = 5.0, 75.0
TIMEOUT_S = 300.0  # real seconds for the whole chapter
REGRESSION = "factory.examples.regression:train_loop_per_worker"


def grid_job(name: str, gpus: int, *, preemptible: bool) -> dict[str, Any]:
    """A long regression run (the chapter cancels it) of one worker, due in 12 h; no model registered.

    One worker and one CPU each: the three jobs and the story's endpoint (half a CPU) fit the chapter
    factory's four CPUs, so none waits for Ray rather than for the scheduler.
    """
    return {"name": name, "team": "grid", "kind": "train", "train_loop": REGRESSION, "num_workers": 1,
            "gpus_per_worker": gpus, "cpus_per_worker": 1, "estimated_duration_s": 7200, "deadline": "12h",
            "preemptible": preemptible, "config": {"epochs": 100_000}}


def show_grid_event(client: FactoryClient, echo: Echo) -> None:
    """Run the chapter (see the module docstring) on the live factory `client` reaches."""
    speed = client.clock().speed_factor
    lead_s, event_s = LEAD_REAL_S * speed, EVENT_REAL_S * speed  # factory seconds
    echo(f"Two jobs train; then the utility asks for less power for {event_s / 3600:g} hours "
         "(`factory grid event add --reduce-pct P`).")
    flex_spec = grid_job("grid-flex", FLEX_GPUS, preemptible=True)
    names = {client.submit(flex_spec, submitted_by="demo"): "grid-flex",
             client.submit(grid_job("grid-steady", 1, preemptible=False), submitted_by="demo"): "grid-steady"}
    seen: dict[str, int] = {}
    deadline = time.monotonic() + TIMEOUT_S

    def narrate() -> None:
        """Print every new transition of the chapter's jobs, with the facility's power now."""
        facility_kw = client.facility().facility_power_w / 1000.0
        for job_id, name in names.items():
            events = client.job(job_id).events
            for event in events[seen.get(job_id, 0):]:
                at = datetime.fromtimestamp(event.time_s, UTC)
                echo(f"  {at:%H:%M} UTC  facility {facility_kw:4.2f} kW  {name:<11} {event.state:<8} "
                     f"{shorten(compact_times(event.reason, at.date()), 90)}".rstrip())
            seen[job_id] = len(events)

    def until(condition: Callable[[], bool], what: str) -> bool:
        while time.monotonic() < deadline:
            narrate()
            if condition():
                return True
            time.sleep(0.5)
        echo(f"  (gave up waiting until {what})")
        return False

    def training(job_id: str) -> bool:
        job = client.job(job_id).job
        return job.state == "RUNNING" and "step" in job.progress

    try:
        if not until(lambda: all(training(job_id) for job_id in names), "both jobs train"):
            return
        reduce_pct = sheddable_pct(client)
        now_s = client.clock().now_s()
        event = client.add_grid_event(now_s + lead_s, now_s + lead_s + event_s, reduce_pct=reduce_pct,
                                      source="demo", created_by="demo")
        start, end = (datetime.fromtimestamp(t, UTC) for t in (event["start_s"], event["end_s"]))
        echo(f"  grid event {event['event_id']}: {start:%H:%M}-{end:%H:%M} UTC, {reduce_pct:g} % under the "
             "power measured just before it starts")
        flex = next(job_id for job_id, name in names.items() if name == "grid-flex")
        if not until(lambda: bool(capped_w(client, flex)) or client.job(flex).job.state != "RUNNING",
                     "grid-flex is capped (or paused) for the event"):
            return
        caps = capped_w(client, flex)
        if caps:
            echo(f"  {client.now():%H:%M} UTC  grid-flex trains on: its {len(caps)} GPUs capped at "
                 f"{max(caps):.0f} W each for the event")
        late = client.submit(grid_job("grid-late", 1, preemptible=True), submitted_by="demo")
        names[late] = "grid-late"
        target_kw = _view(client, event["event_id"])["target_now_kw"]
        if target_kw is not None and until(lambda: client.facility().facility_power_w / 1000.0 <= target_kw,
                                           "the measured power is under the target"):
            measured_kw = client.facility().facility_power_w / 1000.0
            echo(f"  {client.now():%H:%M} UTC  facility {measured_kw:4.2f} kW measured: under the "
                 f"{target_kw:.2f} kW target")
        if not until(lambda: _view(client, event["event_id"])["complied"] is not None,
                     "the event is over and judged"):
            return
        if until(lambda: training(flex) and training(late) and not capped_w(client, flex),
                 "grid-flex's caps are restored and grid-late starts"):
            echo(f"  {client.now():%H:%M} UTC  the event is over: grid-flex's GPUs are back at their full "
                 "limit")
        echo(outcome_line(_view(client, event["event_id"])))
    finally:
        for job_id in names:
            if client.job(job_id).job.state not in ("CANCELLED", "SUCCEEDED", "FAILED"):
                client.cancel(job_id, cancelled_by="demo")
        echo("The chapter's jobs are cancelled. `factory grid events` lists events and their outcomes.")


def sheddable_pct(client: FactoryClient) -> float:
    """The reduction (% of the facility's power now) that capping grid-flex sheds with room to spare."""
    facility = client.facility()
    gpu_power_kw = client.info()["config"]["scheduler"]["gpu_power_w"] / 1000.0
    shed_kw = SHED_SHARE * (1.0 - MIN_LIMIT_SHARE) * FLEX_GPUS * gpu_power_kw * facility.pue
    return float(round(100.0 * shed_kw / max(facility.facility_power_w / 1000.0, shed_kw)))


def capped_w(client: FactoryClient, job_id: str) -> list[float]:
    """The power limits of the job's GPUs that are below the facility's highest (its GPUs' default)."""
    gpus = client.gpus()
    full_w = max((gpu.power_limit_w or 0.0 for gpu in gpus), default=0.0)
    return [gpu.power_limit_w for gpu in gpus if job_id in gpu.consumers and gpu.power_limit_w is not None
            and gpu.power_limit_w < 0.99 * full_w]


def _view(client: FactoryClient, event_id: str) -> dict[str, Any]:
    return next(view for view in client.grid_events() if view["event_id"] == event_id)


def outcome_line(view: dict[str, Any]) -> str:
    """'grid event ID: baseline 3.05 kW, target 1.83 kW; under it 4.1 s (real) after the start; ...'."""
    response = view.get("real_seconds_to_target")
    under = "never under it" if response is None else f"under it {response:.1f} s (real) after the start"
    complied = {True: "yes", False: "NO", None: "-"}[view["complied"]]
    mean_kw = [row[1] for row in view["intervals"]]
    during = f"; {min(mean_kw):.2f}-{max(mean_kw):.2f} kW per 5 minutes during it" if mean_kw else ""
    return (f"grid event {view['event_id']}: baseline {view['baseline_kw']:.2f} kW, target "
            f"{view['target_now_kw']:.2f} kW; {under}{during}; complied: {complied}")
