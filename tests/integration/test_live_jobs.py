"""Live jobs on a real local Ray cluster with simulated GPUs: real Ray Train, Tune and Ray Jobs.

One cluster (4 CPUs, 2 simulated GPUs, a dashboard for Ray's job API) and one factory for the
module, with the `fifo` policy so that jobs start at once (the price-aware behaviour is in
`test_live_prices.py`). Jobs are submitted through the CLI and the SDK, as users do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster
from ray.exceptions import GetTimeoutError, RayActorError

import factory.client
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.control_plane import RUNNER_PREFIX, SCHEDULER, named_actors
from factory.jobs.states import InvalidTransitionError, JobState
from factory.ray_cluster import NAMESPACE
from tests.integration.conftest import REPO_ROOT, cli_at, scrape_metrics, wait_until
from tests.price_server import FeedServer

pytestmark = pytest.mark.integration
DASHBOARD_PORT = 8267


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "num_gpus": 2, "include_dashboard": True, "dashboard_port": DASHBOARD_PORT,
        "_system_config": {"metrics_report_interval_ms": 1000}})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def event_feed() -> Iterator[FeedServer]:
    """The utility's demand-response API on 127.0.0.1: no events until a test serves some."""
    server = FeedServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def config(cluster: Cluster, event_feed: FeedServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("live")
    path = tmp / "factory.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"),
        "clock": {"mode": "replay", "replay_start": "2024-07-01T00:00:00Z", "speed_factor": 60},
        "scheduler": {"policy": "fifo", "tick_s": 0.5},
        "prices": {"grid_events_http": {"url": event_feed.url, "poll_interval_s": 1.0}},
    }))
    config = load_config(path, env={})
    lifecycle.up(config)
    yield config
    lifecycle.down(config)


@pytest.fixture(scope="module")
def client(config: FactoryConfig) -> factory.client.FactoryClient:
    return factory.client.connect(config=config)


@pytest.fixture(autouse=True)
def no_job_left_unfinished(client: factory.client.FactoryClient) -> Iterator[None]:
    """After each test, cancel what it left queued, running or paused, so that one failure (a 500-epoch job
    left holding both GPUs) does not leave every later test waiting for GPUs."""
    yield
    left = [job.job_id for job in client.jobs() if not JobState(job.state).is_finished]
    for job_id in left:
        try:
            client.cancel(job_id)
        except InvalidTransitionError:  # finished in between
            pass
    if left:
        wait_until(lambda: ray.available_resources().get("GPU", 0) == 2, "the GPUs are free after the test")


def spec(name: str, **overrides: Any) -> dict[str, Any]:
    """The shipped regression example, small: 2 workers x 1 GPU, 2 epochs."""
    base = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "train-regression.yaml").read_text())
    base.update(name=name, deadline="30d", max_retries=0)
    base["config"] = {**base["config"], "epochs": 2}
    for key, value in overrides.items():
        if key == "config":
            base["config"] = {**base["config"], **value}
        else:
            base[key] = value
    return base


def cli(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli_at(cluster.address, *args, check=check)


def states(client: factory.client.FactoryClient, job_id: str) -> list[str]:
    return [event.state for event in client.job(job_id).events]


def runner_exists(job_id: str) -> bool:
    """Whether a live runner actor on the cluster reports that it runs `job_id`."""
    for name in named_actors(RUNNER_PREFIX):
        try:
            report = ray.get(ray.get_actor(name, namespace=NAMESPACE).report.remote(), timeout=5.0)
        except (ValueError, GetTimeoutError, RayActorError):  # gone since the listing, or dying
            continue
        if isinstance(report, dict) and report["job_id"] == job_id:
            return True
    return False


def test_a_submitted_training_job_runs_on_ray_train_and_learns(cluster: Cluster, config: FactoryConfig,
                                                                tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(spec("learns")))
    result = cli(cluster, "submit", str(job_file), "--wait")
    # Every transition, in order, though SUCCEEDED and REGISTERING may pass between two polls.
    followed = [line.split()[2] for line in result.stdout.splitlines()[1:-1]]
    assert followed == ["QUEUED", "RUNNING", "SUCCEEDED", "REGISTERING", "REGISTERED"], result.stdout
    job_id = result.stdout.splitlines()[0]  # the id first, then the progress

    listed = json.loads(cli(cluster, "jobs", "--json").stdout)
    job = next(item for item in listed if item["job_id"] == job_id)
    assert job["state"] == "REGISTERED" and job["attempt"] == 1  # ran, then registered its model
    assert job["progress"]["loss"] < 0.5 * job["progress"]["baseline_loss"]  # it learned
    assert job["progress"]["epoch"] == 2

    shown = cli(cluster, "job", job_id).stdout
    assert "Timeline" in shown and "QUEUED" in shown and "RUNNING" in shown and "SUCCEEDED" in shown
    log = cli(cluster, "logs", job_id).stdout
    assert "attempt 1: starting train job 'learns'" in log and "epoch=2" in log and "succeeded" in log
    assert not runner_exists(job_id)  # released once the outcome was written
    wait_until(lambda: bool(json.loads(cli(cluster, "job", job_id, "--json").stdout)["job"]["accounting"]),
               "the job is accounted")
    record = json.loads(cli(cluster, "job", job_id, "--json").stdout)["job"]["accounting"]
    assert record["gpu_hours"] > 0 and record["energy_kwh"] > 0 and record["cost"] > 0
    assert "Accounting" in cli(cluster, "job", job_id).stdout
    assert "Per team (ended jobs)" in cli(cluster, "jobs").stdout


def test_a_bad_spec_is_one_line_and_nothing_is_queued(cluster: Cluster, client: factory.client.FactoryClient,
                                                      tmp_path: Path) -> None:
    before = len(client.jobs())
    wide = tmp_path / "wide.yaml"
    wide.write_text(yaml.safe_dump(spec("too-wide", num_workers=3)))  # 3 GPUs; the cluster has 2
    result = cli(cluster, "submit", str(wide), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "GPU" in result.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**spec("typo"), "num_worker": 2}))
    result = cli(cluster, "submit", str(typo), check=False)
    assert result.returncode == 2 and "did you mean 'num_workers'" in result.stderr
    assert len(client.jobs()) == before


def test_cancel_stops_a_running_job_and_frees_its_gpus(cluster: Cluster,
                                                       client: factory.client.FactoryClient) -> None:
    job_id = client.submit(spec("long", config={"epochs": 500}))
    wait_until(lambda: "step" in client.job(job_id).job.progress, "the long job reports a first epoch")
    assert ray.available_resources().get("GPU", 0) == 0
    cancelled = cli(cluster, "cancel", job_id).stdout
    assert f"{job_id} CANCELLED" in cancelled
    wait_until(lambda: not runner_exists(job_id), "the cancelled job's runner is gone")
    wait_until(lambda: ray.available_resources().get("GPU", 0) == 2, "the GPUs are free again")
    assert states(client, job_id)[-1] == "CANCELLED"
    assert "cancelled" in client.logs(job_id)
    second = cli(cluster, "cancel", job_id, check=False)
    assert second.returncode == 1 and "already CANCELLED" in second.stderr


def test_a_grid_event_pauses_a_job_while_it_lasts_and_the_facility_is_measured(
        cluster: Cluster, client: factory.client.FactoryClient) -> None:
    job_id = client.submit(spec("flexible", config={"epochs": 500}))  # 2 GPUs: 1.4 kW planned
    wait_until(lambda: "step" in client.job(job_id).job.progress, "the job reports a first epoch")
    now_s = client.clock().now_s()  # factory time runs 60 times real time here
    # 15 real seconds ahead: the CLI that adds it starts Python and joins Ray first, slowly on a busy machine.
    start, end = (datetime.fromtimestamp(now_s + offset_s, UTC).isoformat() for offset_s in (900, 2100))
    added = json.loads(cli(cluster, "grid", "event", "add", "--start", start, "--end", end,
                           "--target-kw", "1", "--source", "test", "--json").stdout)
    assert (added["state"], added["target_kw"], added["source"]) == ("scheduled", 1.0, "test")

    # 1 kW at the meter is 0.71 kW of GPUs at PUE 1.4: the job pauses from the start, not before.
    wait_until(lambda: "PAUSING" in states(client, job_id), "the job is asked to pause for the event")
    pausing = next(e for e in client.job(job_id).events if e.state == "PAUSING")
    assert pausing.time_s >= added["start_s"] and pausing.reason.startswith("power budget"), pausing
    wait_until(lambda: client.job(job_id).job.state == "RUNNING" and states(client, job_id).count("RUNNING")
               >= 2, "the job resumes once the event is over")
    resumed = [e for e in client.job(job_id).events if e.state == "RUNNING"][-1]
    assert resumed.time_s >= added["end_s"]

    wait_until(lambda: next(v for v in client.grid_events() if v["event_id"] == added["event_id"])["state"]
               == "ended", "the event is over")
    event = next(v for v in client.grid_events() if v["event_id"] == added["event_id"])
    assert event["baseline_kw"] > 0 and event["max_kw"] > 0 and event["intervals"]  # measured, not assumed
    listed = cli(cluster, "grid", "events").stdout
    assert added["event_id"] in listed and "ended" in listed
    audited = client.audit_log(action_prefix="grid")
    assert {"grid.event_added", "grid.event_started"} <= {e.action for e in audited}
    assert any(e.action == "grid.event_action" and e.detail["taken"] == "paused"
               and e.detail["job_id"] == job_id and e.detail["reason"].startswith("power budget")
               for e in audited), audited  # what was done for it
    client.cancel(job_id)
    wait_until(lambda: ray.available_resources().get("GPU", 0) == 2, "the GPUs are free again")


def test_an_event_a_cap_can_meet_caps_the_gpus_and_a_restarted_scheduler_restores_them(
        cluster: Cluster, client: factory.client.FactoryClient, config: FactoryConfig) -> None:
    from factory.jobs.power_caps import STATE_NAME
    from factory.store import open_store

    def recorded() -> dict[str, Any]:  # what the scheduler's successor reads back: the GPUs left capped
        store = open_store(config.store_path)
        try:
            return (store.get_actor_state(STATE_NAME) or {}).get("nodes", {})
        finally:
            store.close()

    def limits_w() -> dict[int, float | None]:
        return {gpu.index: gpu.power_limit_w for gpu in client.gpus()}

    job_id = client.submit(spec("capped", config={"epochs": 500}))  # 2 GPUs: 1.4 kW planned
    wait_until(lambda: "step" in client.job(job_id).job.progress, "the job reports a first epoch")
    assert set(limits_w().values()) == {700.0}
    now_s = client.clock().now_s()
    added = client.add_grid_event(now_s + 120, now_s + 1500, target_kw=1.6, source="test")

    # 1.6 kW at the meter is 1.14 kW of GPUs at PUE 1.4: both GPUs capped at about 0.55 kW keep it
    # training, where pausing would cost a resume.
    wait_until(lambda: all(limit is not None and limit < 700.0 for limit in limits_w().values()),
               "the job's GPUs are capped for the event")
    assert client.job(job_id).job.state == "RUNNING"
    capped_w = max(limit for limit in limits_w().values() if limit is not None)
    assert 350.0 <= capped_w <= 1143.0 / 2  # within the simulated GPUs' range, under the target
    wait_until(lambda: any(gpus for gpus in recorded().values()), "the capped GPUs are in the store")
    assert sorted(int(index) for gpus in recorded().values() for index in gpus) == [0, 1]
    wait_until(lambda: client.facility().facility_power_w <= 1600.0, "measured power is under the target")
    # Measured during the event before the crash, so that it has an outcome however long the restart takes
    # (an event the factory never measured has none).
    wait_until(lambda: next(v for v in client.grid_events() if v["event_id"] == added["event_id"])["max_kw"]
               is not None, "the event under way is measured")

    # The scheduler crashes while the GPUs are capped; its successor finds the caps in the store and, once
    # the event is over, restores them.
    ray.kill(ray.get_actor(SCHEDULER, namespace=NAMESPACE), no_restart=False)
    wait_until(lambda: next(v for v in client.grid_events() if v["event_id"] == added["event_id"])["state"]
               == "ended", "the event is over")
    wait_until(lambda: set(limits_w().values()) == {700.0}, "the caps are restored after the event")
    wait_until(lambda: recorded() == {}, "the record says nothing is capped any more")
    assert "PAUSING" not in states(client, job_id)  # capped, never paused
    event = next(v for v in client.grid_events() if v["event_id"] == added["event_id"])
    assert event["complied"] is True, event
    assert any(e.action == "grid.event_action" and e.detail["taken"] == "capped"
               and e.detail["job_id"] == job_id for e in client.audit_log(action_prefix="grid"))
    client.cancel(job_id)
    wait_until(lambda: ray.available_resources().get("GPU", 0) == 2, "the GPUs are free again")


def test_an_event_from_the_utilitys_http_feed_is_added_once(
        cluster: Cluster, client: factory.client.FactoryClient, event_feed: FeedServer) -> None:
    now_s = client.clock().now_s()
    start, end = (datetime.fromtimestamp(now_s + offset_s, UTC).isoformat() for offset_s in (86400, 90000))
    event_feed.serve([{"id": "dr-7", "start": start, "end": end, "target_kw": 5, "source": "utility"}])

    wait_until(lambda: any(v["event_id"] == "http-dr-7" for v in client.grid_events()),
               "the scheduler reads the feed")
    polls = len(event_feed.requests)
    wait_until(lambda: len(event_feed.requests) >= polls + 2, "two more polls")
    ours = [v for v in client.grid_events() if v["event_id"] == "http-dr-7"]
    assert len(ours) == 1 and (ours[0]["target_kw"], ours[0]["source"]) == (5.0, "utility")
    listed = cli(cluster, "grid", "events").stdout
    assert f"events also from the grid event feed {event_feed.url}: answering" in listed
    assert "http-dr-7" in listed
    client.cancel_grid_event("http-dr-7")  # the other tests' jobs run as they would without it
    event_feed.serve([])


def test_a_worker_failure_is_retried_from_the_checkpoint_and_a_hopeless_job_fails_with_its_error(
        client: factory.client.FactoryClient) -> None:
    flaky = client.submit(spec("flaky", train_loop="factory.examples.faulty:train_loop_per_worker",
                               num_workers=1, max_retries=1, config={"fail": "once"}))
    hopeless = client.submit(spec("hopeless", train_loop="factory.examples.faulty:train_loop_per_worker",
                                  num_workers=1, max_retries=1, config={"fail": "always"}))
    done = client.wait(flaky, timeout_s=240)
    assert done.state == "REGISTERED" and done.progress["resumed_from_step"] == 1
    failed = client.wait(hopeless, timeout_s=240)
    assert failed.state == "FAILED" and "injected failure" in failed.error
    assert failed.reason.startswith("failed: ")
    assert "Traceback" in client.logs(hopeless)  # the logs are kept, with the error


def test_a_killed_scheduler_is_restarted_and_the_running_job_finishes_without_a_second_start(
        client: factory.client.FactoryClient) -> None:
    job_id = client.submit(spec("survivor", config={"epochs": 6}))
    # Mid-run: its runner has reported an epoch (a kill between writing RUNNING and handing the job to
    # a runner is repaired differently: the job is set back to PAUSED and started as a new attempt).
    wait_until(lambda: "step" in client.job(job_id).job.progress, "the job runs and reports")
    ray.kill(ray.get_actor(SCHEDULER, namespace=NAMESPACE), no_restart=False)
    done = client.wait(job_id, timeout_s=240)
    assert done.state == "REGISTERED" and done.attempt == 1 and done.progress["epoch"] == 6
    assert states(client, job_id).count("RUNNING") == 1
    assert "attempt 2" not in client.logs(job_id)
    restarts = [event for event in client.audit_log(action_prefix="actor.restarted")
                if event.subject == SCHEDULER]
    assert restarts


def test_a_command_job_is_a_ray_job_and_a_tune_job_sweeps(cluster: Cluster,
                                                           client: factory.client.FactoryClient) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    hello = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "command-hello.yaml").read_text())
    hello["deadline"] = "30d"
    # A secret the command needs: it reaches the job, and no view of the job shows it.
    hello["runtime_env"]["env_vars"]["HELLO_TOKEN"] = "tok-s3cr3t"
    hello["entrypoint"] = "python -c \"import os; print('token', len(os.environ['HELLO_TOKEN']))\""
    command = client.submit(hello)
    tune_spec = yaml.safe_load((REPO_ROOT / "configs" / "jobs" / "tune-regression.yaml").read_text())
    tune_spec["deadline"] = "30d"
    tune_spec["tune"]["num_samples"] = 2
    tune_spec["config"] = {**tune_spec.get("config", {}), "epochs": 2, "num_samples": 512}
    sweep = client.submit(tune_spec)

    assert client.wait(command, timeout_s=240).state == "SUCCEEDED", client.logs(command)
    ray_jobs = JobSubmissionClient(f"http://127.0.0.1:{DASHBOARD_PORT}")
    assert ray_jobs.get_job_status(f"factory-{command}-1") == JobStatus.SUCCEEDED
    assert "token 10" in ray_jobs.get_job_logs(f"factory-{command}-1")
    for view in (("job", command, "--json"), ("jobs", "--json"), ("job", command)):
        shown = cli(cluster, *view).stdout
        assert "tok-s3cr3t" not in shown
    shown_spec = json.loads(cli(cluster, "job", command, "--json").stdout)["job"]["spec"]
    assert shown_spec["runtime_env"]["env_vars"] == {"FACTORY_JOB": "***", "HELLO_TOKEN": "***"}

    swept = client.wait(sweep, timeout_s=300)
    assert swept.state == "REGISTERED", client.logs(sweep)
    assert swept.progress["trials"] == 2 and "loss" in swept.progress


def test_the_queue_and_gpus_in_use_are_ray_metrics(client: factory.client.FactoryClient) -> None:
    head = next(node["NodeID"] for node in ray.nodes() if node["Alive"])
    # Counters are families without their `_total` suffix to Prometheus' parser.
    names = {"ray_factory_jobs", "ray_factory_gpus_in_use", "ray_factory_job_energy_kwh"}

    def exported() -> dict[str, Any]:
        return scrape_metrics(head, names)

    finished = sum(1 for job in client.jobs() if job.state == "SUCCEEDED")
    assert finished >= 1

    def agrees() -> bool:
        """The queue as the scheduler exports it matches the store: 0 running, every success counted.

        Grouped by Ray worker: a scheduler killed earlier in the module may still have its series.
        """
        samples = exported()
        if not names <= set(samples):
            return False
        workers: dict[str, dict[str, float]] = {}
        for sample in samples["ray_factory_jobs"]:
            workers.setdefault(sample.labels["WorkerId"], {})[sample.labels["state"]] = sample.value
        for sample in samples["ray_factory_gpus_in_use"]:
            workers.setdefault(sample.labels["WorkerId"], {})["gpus"] = sample.value
        return any(values.get("SUCCEEDED") == finished and values.get("RUNNING") == 0
                   and values.get("gpus") == 0 for values in workers.values())

    scheduler = next(actor for actor in client.health() if actor.name == SCHEDULER)
    wait_until(agrees, f"the scheduler's metrics show the queue (its last error: {scheduler.last_error})")
    assert sum(sample.value for sample in exported()["ray_factory_job_energy_kwh"]) > 0
