"""On a multi-node cluster, `up` pins a telemetry actor to every node and the control plane to the
head; the scheduler's loop gives nodes that join later their agent and reports nodes that leave as
down; simulated GPUs follow a real Ray actor that holds them, its energy is charged to its factory
job, and every documented metric is on the node's Prometheus endpoint; status names what is
missing. Uses `ray.cluster_utils.Cluster` (real raylets, one GCS) and the SDK from this driver."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

import factory
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.control_plane import CONTROL_PLANE_NAMES, factory_actor_names, get_actor
from factory.errors import ClusterError
from tests.integration.conftest import DEADLINE_S, scrape_metrics, wait_until, write_config

pytestmark = pytest.mark.integration


GPU_NODE_GPUS = 2
IDLE_W, BUSY_W = 75.0, 700.0


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[Cluster]:
    # Metrics reach the Prometheus endpoint every second instead of every 10.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "_system_config": {"metrics_report_interval_ms": 1000}})
    cluster.add_node(num_cpus=1, num_gpus=GPU_NODE_GPUS)  # a CPU machine declaring 2 GPUs: simulated
    cluster.add_node(num_cpus=0)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def config(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("multinode")
    path = write_config(tmp / "f.yaml", tmp / "state", scheduler={"interval_s": 0.5},
                        telemetry={"interval_s": 0.5, "attribution_interval_s": 0.5,
                                   "simulated_idle_power_w": IDLE_W, "simulated_busy_power_w": BUSY_W})
    config = load_config(path, env={})
    yield config
    lifecycle.down(config)


def test_up_on_three_nodes_places_every_actor(cluster: Cluster, config: FactoryConfig) -> None:
    result = lifecycle.up(config)
    assert not result.started_local_head  # an existing cluster is never replaced
    health = {actor.name: actor for actor in result.client.health()}
    node_ids = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    head_id = cluster.head_node.node_id

    telemetry = {a.node_id for name, a in health.items() if name.startswith("telemetry:")}
    assert telemetry == node_ids and len(node_ids) == 3
    for name in ("grid_price", "scheduler", "registry"):
        assert health[name].status == "ok" and health[name].node_id == head_id


def test_a_node_that_joins_gets_its_agent_without_another_up(
    cluster: Cluster, config: FactoryConfig
) -> None:
    client = factory.connect()
    new_node = cluster.add_node(num_cpus=0)  # as an autoscaler would
    cluster.wait_for_nodes()
    name = f"telemetry:{new_node.node_id}"
    wait_until(lambda: name in factory_actor_names(), "the scheduler creates the new node's agent")
    wait_until(lambda: all(a.status == "ok" for a in client.health()), "the new agent answers")
    agent = {a.name: a for a in client.health()}[name]
    assert agent.node_id == new_node.node_id
    assert [e.subject for e in client.audit_log(action_prefix="actor.created")] == [name]
    assert lifecycle.up(config).created == []  # nothing left for `up` to do


def test_status_names_an_actor_that_is_gone_and_up_brings_it_back(config: FactoryConfig) -> None:
    client = factory.connect()
    ray.kill(get_actor("registry"), no_restart=True)  # gone for good, as after a failed start
    wait_until(lambda: "registry" not in factory_actor_names(), "registry removed")

    status = client.status()
    registry = {a.name: a for a in status.actors}["registry"]
    assert registry.status == "missing" and "factory up" in (registry.last_error or "")
    assert not status.healthy

    assert lifecycle.up(config).created == ["registry"]
    assert client.status().healthy


def gpu_node_id(cluster: Cluster) -> str:
    return next(node["NodeID"] for node in ray.nodes()
                if node["Alive"] and node["Resources"].get("GPU") == GPU_NODE_GPUS)


def test_simulated_gpus_follow_a_ray_actor_that_holds_them_and_charge_its_job(
    cluster: Cluster, config: FactoryConfig
) -> None:
    client = factory.connect()
    node_id = gpu_node_id(cluster)
    gpus = client.gpus()
    assert [(g.node_id, g.index, g.source, g.power_w) for g in gpus] == [
        (node_id, 0, "simulated", IDLE_W), (node_id, 1, "simulated", IDLE_W)]

    class HoldsGpus:  # defined here so Ray ships it by value to the worker
        """A Ray actor that holds GPUs, as a training worker does."""

        def gpu_ids(self) -> list[int]:
            return [int(i) for i in ray.get_gpu_ids()]

    trainer = ray.remote(num_gpus=GPU_NODE_GPUS, num_cpus=0)(HoldsGpus).options(
        runtime_env={"env_vars": {"FACTORY_JOB_ID": "train-42"}}).remote()
    assert sorted(ray.get(trainer.gpu_ids.remote(), timeout=DEADLINE_S)) == [0, 1]
    wait_until(lambda: all(g.consumers == ["train-42"] for g in client.gpus()), "GPUs show the job")
    busy = client.gpus()
    assert all(g.busy and g.power_w == BUSY_W and g.utilization_pct == 100.0 for g in busy)
    view = client.facility()
    assert (view.gpus_total, view.gpus_busy, view.gpus_idle) == (2, 2, 0)
    assert view.facility_power_w == pytest.approx(view.it_power_w * config.telemetry.pue)
    assert view.it_power_w >= 2 * BUSY_W and view.sources == ["host", "simulated"]

    ray.kill(trainer)
    wait_until(lambda: all(not g.consumers and g.power_w == IDLE_W for g in client.gpus()),
               "GPUs idle again once the actor is gone")
    energy = client.job_energy("train-42")
    assert set(energy.by_node_kwh) == {node_id}
    # Charged on factory time at the GPUs' power: between idle and busy power per GPU-second.
    assert energy.gpu_seconds > 0
    assert IDLE_W * energy.gpu_seconds <= energy.energy_kwh * 3.6e6 <= BUSY_W * energy.gpu_seconds
    assert energy.energy_kwh * 3.6e6 > 0.5 * BUSY_W * energy.gpu_seconds
    assert client.job_energy("never-ran").energy_kwh == 0.0
    history = client.gpu_history(node_id, 0)
    assert BUSY_W in history["power_w"] and history["time_s"] == sorted(history["time_s"])
    mean_w = client.gpu_averages(node_id, 0)["power_w"]
    assert IDLE_W < mean_w < BUSY_W  # over a window holding idle and busy samples
    last = history["time_s"][-1]
    assert client.gpu_averages(node_id, 0, since_s=last)["power_w"] == IDLE_W


def test_every_documented_metric_is_on_the_nodes_prometheus_endpoint(cluster: Cluster) -> None:
    from factory.telemetry.metrics import METRICS

    node_id = gpu_node_id(cluster)
    wanted = {f"ray_{spec.name}" for spec in METRICS if spec.simulated}

    def complete() -> bool:
        families = scrape_metrics(node_id, wanted)
        jobs = {s.labels["job"] for s in families.get("ray_factory_job_energy_kwh", [])}
        return set(families) == wanted and "train-42" in jobs  # the job of the test above

    wait_until(complete, f"all of {sorted(wanted)} scraped from node {node_id}, with job train-42")
    families = scrape_metrics(node_id, wanted)
    power = [s for s in families["ray_dcgm_fi_dev_power_usage"] if s.labels["node"] == node_id]
    assert sorted((s.labels["gpu"], s.labels["source"]) for s in power) == [
        ("0", "simulated"), ("1", "simulated")]
    assert all(s.value in (IDLE_W, BUSY_W) for s in power)


def test_the_grid_price_metrics_are_on_the_head_nodes_endpoint(cluster: Cluster) -> None:
    from factory.prices.metrics import PRICE_METRICS

    head_id = cluster.head_node.node_id
    wanted = {f"ray_{spec.name}" for spec in PRICE_METRICS}
    wait_until(lambda: set(scrape_metrics(head_id, wanted)) == wanted, f"all of {sorted(wanted)} scraped")
    families = scrape_metrics(head_id, wanted)
    price = families["ray_factory_grid_price_per_mwh"][0]
    assert price.labels["source"] == "tariff" and price.labels["currency"] == "USD"  # the default
    assert families["ray_factory_price_feed_stale"][0].value == 0.0
    assert families["ray_factory_grid_carbon_g_per_kwh"][0].value > 0


def test_a_node_that_leaves_is_reported_down_and_its_agent_removed(
    cluster: Cluster, config: FactoryConfig
) -> None:
    client = factory.connect()
    leaving = next(node for node in cluster.worker_nodes if node.node_id != gpu_node_id(cluster)
                   and f"telemetry:{node.node_id}" in factory_actor_names())
    cluster.remove_node(leaving)

    def reported_down() -> bool:
        states = {n.node_id: n.state for n in client.nodes()}
        return states.get(leaving.node_id) == "down"

    wait_until(reported_down, "the departed node is reported down")
    wait_until(lambda: f"telemetry:{leaving.node_id}" not in factory_actor_names(),
               "its telemetry actor is removed")
    wait_until(lambda: client.audit_log(action_prefix="node.down"), "the scheduler audits it")
    assert [e.subject for e in client.audit_log(action_prefix="node.down")] == [leaving.node_id]
    gone = {n.node_id: n for n in client.nodes()}[leaving.node_id]
    assert gone.since_s is not None  # from the scheduler's durable record, kept after Ray forgets
    assert client.status().healthy  # a node that left is not a missing actor
    assert client.facility().nodes_down == 1


def test_down_leaves_a_cluster_it_did_not_start(config: FactoryConfig) -> None:
    alive_before = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    down = lifecycle.down(config)
    assert not down.stopped_local_head
    assert len(down.removed) == len(CONTROL_PLANE_NAMES) + len(alive_before) and factory_actor_names() == []
    assert {node["NodeID"] for node in ray.nodes() if node["Alive"]} == alive_before
    with pytest.raises(ClusterError, match="run `factory up`"):
        factory.connect()


def test_a_store_from_a_newer_factory_is_refused_in_one_line(
    config: FactoryConfig, tmp_path: Path
) -> None:
    state_dir = tmp_path / "newer"
    state_dir.mkdir()
    with sqlite3.connect(state_dir / "factory.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    newer = config.model_copy(update={"state_dir": state_dir})

    with pytest.raises(ClusterError) as info:
        lifecycle.up(newer)

    message = str(info.value)
    assert "\n" not in message and "newer than this factory" in message and "upgrade" in message
    with sqlite3.connect(state_dir / "factory.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99  # left untouched
    lifecycle.down(newer)
