"""The price-aware policy live: real Ray Train jobs wait for cheap hours, pause through price spikes
and resume from their checkpoints, on a local cluster with simulated GPUs and an accelerated replay.

The price trace alternates every hour between cheap (10/MWh, even UTC hours) and a spike (500/MWh,
odd hours); the replay starts at 2024-07-01 00:00 UTC and runs 120 factory seconds per real second
(an hour in 30 s). Each test first waits for the phase of the cycle it needs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

import factory.client
from factory import lifecycle
from factory.config import load_config
from factory.prices.series import utc_label
from tests.integration.conftest import REPO_ROOT, cli_at, wait_until

pytestmark = pytest.mark.integration
HOUR_S = 3600.0
SPEED = 120.0
TICK_S = 1.0  # scheduler.tick_s: real seconds between decisions
TICK_FACTORY_S = TICK_S * SPEED
CHEAP, SPIKE = 10.0, 500.0


def price_at(time_s: float) -> float:
    return CHEAP if int(time_s // HOUR_S) % 2 == 0 else SPIKE


def mean_price(spans: list[tuple[float, float]]) -> float:
    """The time-weighted price over the spans (start_s, end_s), hour by hour."""
    total = weighted = 0.0
    for start_s, end_s in spans:
        at = start_s
        while at < end_s:
            upto = min(end_s, (at // HOUR_S + 1) * HOUR_S)
            total, weighted = total + upto - at, weighted + (upto - at) * price_at(at)
            at = upto
    return weighted / total


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[Cluster]:
    # The dashboard serves Ray's state API, which telemetry needs to attribute GPU energy to jobs.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": 2, "include_dashboard": True, "dashboard_port": 8268})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def client(cluster: Cluster,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[factory.client.FactoryClient]:
    tmp = tmp_path_factory.mktemp("live-prices")
    start = datetime(2024, 6, 20, tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h in range(24 * 20)]
    (tmp / "prices.csv").write_text("timestamp,price_per_mwh\n" + "".join(
        f"{hour.isoformat()},{price_at(hour.timestamp())}\n" for hour in hours))
    path = tmp / "factory.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"),
        "clock": {"mode": "replay", "replay_start": "2024-07-01T00:00:00Z", "speed_factor": SPEED},
        "prices": {"source": "trace", "trace": {"paths": [str(tmp / "prices.csv")]}},
        "scheduler": {"policy": "price-aware", "tick_s": TICK_S},
    }))
    config = load_config(path, env={})
    lifecycle.up(config)
    yield factory.client.connect(config=config)
    lifecycle.down(config)


def spec(name: str, *, estimate_s: float, deadline: str, epochs: int) -> dict[str, Any]:
    base = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "train-regression.yaml").read_text())
    base.update(name=name, estimated_duration_s=estimate_s, deadline=deadline, max_retries=0)
    base["config"] = {**base["config"], "epochs": epochs}
    return base


def wait_for_phase(client: factory.client.FactoryClient, price: float, at_least_left_s: float) -> float:
    """Wait until the price is `price` with at least `at_least_left_s` factory seconds of it left."""
    deadline = time.monotonic() + 3 * HOUR_S / SPEED
    while time.monotonic() < deadline:
        now_s = client.clock().now_s()
        left_s = HOUR_S - now_s % HOUR_S
        if price_at(now_s) == price and left_s >= at_least_left_s:
            return now_s
        time.sleep(0.2)
    raise AssertionError(f"the replay never reached a {price}/MWh hour")


def events(client: factory.client.FactoryClient, job_id: str) -> list[tuple[str, float, str]]:
    return [(event.state, event.time_s, event.reason) for event in client.job(job_id).events]


def test_a_job_waits_through_the_spike_and_starts_when_the_cheap_hour_opens(
        cluster: Cluster, client: factory.client.FactoryClient) -> None:
    submitted_s = wait_for_phase(client, SPIKE, at_least_left_s=0.5 * HOUR_S)  # 15 s to look at it waiting
    job_id = client.submit(spec("waits", estimate_s=0.25 * HOUR_S, deadline="3h", epochs=3))
    wait_until(lambda: client.job(job_id).job.state == "WAITING", "the job waits")
    waiting = client.job(job_id).job
    assert waiting.reason.startswith("price: cheap window at") and waiting.schedule["admitted"]
    # Its promise, as the CLI and the SDK show it: started by then, it meets its deadline.
    shown = json.loads(cli_at(cluster.address, "job", job_id, "--json").stdout)["job"]
    assert shown["state"] == "WAITING", shown
    latest_s = shown["latest_safe_start_s"]
    assert submitted_s < latest_s <= waiting.deadline_s - 0.25 * HOUR_S  # type: ignore[operator]
    assert datetime.fromisoformat(shown["latest_safe_start"]).timestamp() == latest_s
    assert f"latest safe start {utc_label(latest_s)}" in shown["reason"] and shown["pauses"] == 0
    assert waiting.latest_safe_start_s is not None and waiting.latest_safe_start is not None
    done = client.wait(job_id, timeout_s=180)
    assert done.state == "REGISTERED"
    started_s = next(time_s for state, time_s, _ in events(client, job_id) if state == "RUNNING")
    cheap_opens_s = (submitted_s // HOUR_S + 1) * HOUR_S
    assert cheap_opens_s <= started_s < cheap_opens_s + 0.5 * HOUR_S  # in the cheap hour, not before
    assert price_at(started_s) == CHEAP

    # Its accounting: measured energy, priced exactly over the time it ran, against starting at once in
    # the spike. How long it ran is the machine's speed against the replay's (a busy machine may run it
    # on into the next spike), so the price is that of its actual runs.
    wait_until(lambda: bool(client.job(job_id).job.accounting), "the job is accounted")
    accounted = client.job(job_id).job
    record = accounted.accounting
    assert record["energy_source"] == "telemetry" and record["energy_kwh"] > 0
    assert record["gpu_hours"] > 0 and record["wait_s"]["price"] > 0
    runs = [(start_s, end_s) for start_s, end_s, _ in accounted.schedule["runs"]]
    assert record["cost"] == pytest.approx(record["energy_kwh"] * mean_price(runs) / 1000, rel=0.05)
    ran_s = sum(end_s - start_s for start_s, end_s in runs)
    at_once = [(accounted.submitted_s, accounted.submitted_s + ran_s)]
    assert record["cost_if_run_at_once"] == pytest.approx(
        record["energy_kwh"] * mean_price(at_once) / 1000, rel=0.05)
    assert record["savings"] == pytest.approx(record["cost_if_run_at_once"] - record["cost"])
    if runs[-1][1] <= cheap_opens_s + HOUR_S:  # it ran within the cheap hour: a fraction of the spike's
        assert record["cost"] == pytest.approx(record["energy_kwh"] * CHEAP / 1000, rel=0.05)
        assert record["cost_if_run_at_once"] > 5 * record["cost"] and record["savings"] > 0


def test_a_deadline_that_forbids_waiting_starts_the_job_in_the_spike(
        client: factory.client.FactoryClient) -> None:
    wait_for_phase(client, SPIKE, at_least_left_s=0.5 * HOUR_S)
    job_id = client.submit(spec("urgent", estimate_s=0.3 * HOUR_S, deadline="30m", epochs=200))
    wait_until(lambda: client.job(job_id).job.state == "RUNNING", "the urgent job starts")
    started_s = next(time_s for state, time_s, _ in events(client, job_id) if state == "RUNNING")
    assert price_at(started_s) == SPIKE
    assert client.cancel(job_id).state == "CANCELLED"


def test_a_price_spike_pauses_a_running_job_which_resumes_from_its_checkpoint(
        client: factory.client.FactoryClient) -> None:
    wait_for_phase(client, CHEAP, at_least_left_s=0.85 * HOUR_S)
    # A deadline far enough that however slowly this machine trains (a replayed hour is 30 real seconds),
    # the job never has to run in a spike to keep it: its runs are the policy's choice of cheap hours.
    job_id = client.submit(spec("pauses", estimate_s=1.5 * HOUR_S, deadline="12h", epochs=20))
    done = client.wait(job_id, timeout_s=420)
    assert done.state == "REGISTERED", client.logs(job_id)
    timeline = events(client, job_id)
    states = [state for state, _, _ in timeline]
    assert states[:2] == ["QUEUED", "RUNNING"] and states[-3:] == ["SUCCEEDED", "REGISTERING", "REGISTERED"]
    assert "PAUSING" in states and "PAUSED" in states and states.count("RUNNING") >= 2
    told = "\n".join(f"{utc_label(time_s)} {price_at(time_s):g}/MWh {state} {reason}"
                      for state, time_s, reason in timeline)
    for state, time_s, reason in timeline:
        # A decision is made every tick (two factory minutes here) and at each hour's start, so one made
        # in the last tick of an hour may already act for the next: a pause for the spike may come a
        # minute before it, and that is the policy's choice, not a race the test may lose.
        if state == "PAUSING":
            assert SPIKE in (price_at(time_s), price_at(time_s + TICK_FACTORY_S)), told
            assert reason.startswith("price:"), told
        if state == "RUNNING":
            assert CHEAP in (price_at(time_s), price_at(time_s + TICK_FACTORY_S)), told

    # The step counter proves no work was repeated: each attempt starts where the last one stopped.
    log = client.logs(job_id, tail_lines=1000)
    attempts = re.split(r"attempt \d+: starting", log)[1:]
    last_step = 0
    for attempt in attempts:
        steps = [int(step) for step in re.findall(r"report .*?step=(\d+)", attempt)]
        assert steps and steps[0] > last_step and steps == sorted(steps)
        last_step = steps[-1]
    assert len(attempts) == done.attempt >= 2
    assert done.progress["start_step"] > 0 and done.progress["epoch"] == 20
    assert done.progress["loss"] < 0.2 * done.progress["baseline_loss"]
