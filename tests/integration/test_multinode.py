"""On a multi-node cluster, `up` pins a telemetry actor to every node and the control plane to the
head; the scheduler's loop gives nodes that join later their agent; status names what is missing.
Uses `ray.cluster_utils.Cluster` (real raylets, one GCS) and the SDK from this driver."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

import factory
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.control_plane import factory_actor_names, get_actor
from factory.errors import ClusterError
from tests.integration.conftest import write_config

pytestmark = pytest.mark.integration
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=0)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def config(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("multinode")
    path = write_config(tmp / "f.yaml", tmp / "state", scheduler={"interval_s": 0.5})
    config = load_config(path, env={})
    yield config
    lifecycle.down(config)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(0.5)


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


def test_down_leaves_a_cluster_it_did_not_start(config: FactoryConfig) -> None:
    down = lifecycle.down(config)
    assert not down.stopped_local_head
    assert len(down.removed) == 7 and factory_actor_names() == []
    assert all(node["Alive"] for node in ray.nodes())
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
