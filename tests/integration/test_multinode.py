"""On a multi-node cluster, `up` pins a telemetry actor to every node and the control plane to the
head, and the SDK connects from the same driver. Uses `ray.cluster_utils.Cluster` (real raylets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

import factory
from factory import lifecycle
from factory.config import load_config
from factory.control_plane import factory_actor_names
from factory.errors import ClusterError
from tests.integration.conftest import write_config

pytestmark = pytest.mark.integration


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


def test_up_on_three_nodes_places_every_actor(cluster: Cluster, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "f.yaml", tmp_path / "state"), env={})
    result = lifecycle.up(config)
    assert not result.started_local_head  # an existing cluster is never replaced
    health = {actor.name: actor for actor in result.client.health()}
    node_ids = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    head_id = cluster.head_node.node_id

    telemetry = {a.node_id for name, a in health.items() if name.startswith("telemetry:")}
    assert telemetry == node_ids and len(node_ids) == 3
    for name in ("grid_price", "scheduler", "registry"):
        assert health[name].status == "ok" and health[name].node_id == head_id

    # A node that joins later gets its telemetry agent from the next (idempotent) `up`.
    new_node = cluster.add_node(num_cpus=0)
    cluster.wait_for_nodes()
    again = lifecycle.up(config)
    assert again.created == [f"telemetry:{new_node.node_id}"]

    down = lifecycle.down(config)
    assert not down.stopped_local_head  # the factory did not start this cluster
    assert len(down.removed) == 7 and factory_actor_names() == []
    assert all(node["Alive"] for node in ray.nodes())  # the user's cluster is left running
    with pytest.raises(ClusterError, match="run `factory up`"):
        factory.connect()
