"""The GridPriceActor on a real Ray cluster, polling a real HTTP price feed on 127.0.0.1.

One cluster for the module. The feed answers, then stalls, then answers again; the actor keeps the
last known series, says it is stale (in the SDK, the CLI and the Prometheus metric) and never
fails; its credential never shows.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import ray
from ray.cluster_utils import Cluster

import factory
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.control_plane import GRID_PRICE
from factory.ray_cluster import NAMESPACE
from tests.integration.conftest import FACTORY_BIN, clean_env, scrape_metrics, wait_until, write_config
from tests.price_server import FeedServer

pytestmark = pytest.mark.integration
TOKEN_ENV = "PRICE_API_TOKEN"
TOKEN = "Bearer integration-5ecret-77"
FIRST_HOUR_S = datetime(2024, 6, 28, tzinfo=UTC).timestamp()


def price_of_hour(hour: int) -> float:
    return round(20.0 + (hour % 24) * 1.5 - (30.0 if hour % 24 == 13 else 0.0), 2)  # negative at 13h


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    feed = FeedServer()
    feed.serve({"data": {"prices": [
        {"t": datetime.fromtimestamp(FIRST_HOUR_S + hour * 3600, tz=UTC).isoformat(),
         "lmp": price_of_hour(hour)} for hour in range(24 * 12)]}})
    yield feed
    feed.stop()


@pytest.fixture(scope="module")
def cluster(no_ray_running: None, server: FeedServer) -> Iterator[Cluster]:
    os.environ[TOKEN_ENV] = TOKEN  # the head's processes inherit it, as from a real head's env
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "_system_config": {"metrics_report_interval_ms": 1000}})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    os.environ.pop(TOKEN_ENV, None)


@pytest.fixture(scope="module")
def config(cluster: Cluster, server: FeedServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("prices")
    path = write_config(tmp / "f.yaml", tmp / "state", prices={
        "source": "http", "tick_s": 0.2,
        "http": {"url": server.url, "poll_interval_s": 1, "timeout_s": 0.5, "max_backoff_s": 1,
                 "items_path": "data.prices", "timestamp_path": "t", "price_path": "lmp",
                 "auth_env": TOKEN_ENV}})
    config = load_config(path, env={})
    lifecycle.up(config)
    yield config
    lifecycle.down(config)


def cli(cluster: Cluster, config: FactoryConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FACTORY_BIN, *args, "--address", cluster.address], env=clean_env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def expected_price(time_s: float) -> float:
    return price_of_hour(int((time_s - FIRST_HOUR_S) // 3600))


def test_the_price_cli_shows_the_feeds_price_with_its_unit_and_a_forecast_chart(
        cluster: Cluster, config: FactoryConfig, server: FeedServer) -> None:
    client = factory.connect()
    wait_until(lambda: not client.price().stale, "a first successful poll", poll_s=0.2)
    result = cli(cluster, config, "price", "--json", "--hours", "6")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    now = answer["price"]
    assert now["price_per_mwh"] == expected_price(now["interval_start_s"])
    assert (now["unit"], now["currency"], now["stale"]) == ("USD/MWh", "USD", False)
    assert answer["feed"]["kind"] == "http" and len(answer["forecast"]["points"]) in (6, 7)
    assert all(point["known"] for point in answer["forecast"]["points"])  # the feed published them
    assert server.requests[-1]["Authorization"] == TOKEN  # from the head's environment, verbatim
    text = cli(cluster, config, "price")
    assert text.returncode == 0 and "Price now" in text.stdout and "USD/MWh" in text.stdout
    assert "┤" in text.stdout  # the chart


def scrape_head(cluster: Cluster, name: str) -> list[float]:
    return [sample.value for sample in scrape_metrics(cluster.head_node.node_id, {name}).get(name, [])]


def test_a_stalled_feed_is_stale_everywhere_and_the_actor_survives(
        cluster: Cluster, config: FactoryConfig, server: FeedServer) -> None:
    client = factory.connect()
    wait_until(lambda: scrape_head(cluster, "ray_factory_price_feed_stale") == [0.0], "stale metric 0")
    assert scrape_head(cluster, "ray_factory_grid_price_per_mwh")
    server.delay_s = 30.0  # accepts, never answers within timeout_s
    wait_until(lambda: client.price().stale, "the price to turn stale", poll_s=0.2)
    stale = client.price()
    assert stale.price_per_mwh == expected_price(stale.interval_start_s)  # the last known series
    assert "no answer within" in stale.stale_reason and stale.age_s > 0
    wait_until(lambda: scrape_head(cluster, "ray_factory_price_feed_stale") == [1.0], "stale metric 1")
    status = cli(cluster, config, "status", "--json")
    grid = next(a for a in json.loads(status.stdout)["actors"] if a["name"] == GRID_PRICE)
    assert grid["status"] == "ok" and "no answer within" in grid["last_error"]
    assert TOKEN not in status.stdout and TOKEN.split()[-1] not in status.stdout
    feed = client.price_feed()
    assert feed.consecutive_failures >= 1 and TOKEN.split()[-1] not in (feed.last_error or "")
    server.delay_s = 0.0
    server._release.set()
    wait_until(lambda: not client.price().stale, "the feed to answer again", poll_s=0.2)
    wait_until(lambda: scrape_head(cluster, "ray_factory_price_feed_stale") == [0.0], "stale metric 0")


def test_a_restarted_actor_answers_with_the_stored_series_while_the_feed_is_down(
        cluster: Cluster, config: FactoryConfig, server: FeedServer) -> None:
    client = factory.connect()
    before = client.price()
    server.stop()
    ray.kill(ray.get_actor(GRID_PRICE, namespace=NAMESPACE), no_restart=False)

    def restarted_and_answering() -> bool:
        try:
            return client.price().stale
        except Exception:  # noqa: BLE001 - restarting
            return False

    wait_until(restarted_and_answering, "the restarted actor to answer", poll_s=0.2)
    after = client.price()
    assert after.price_per_mwh == expected_price(after.interval_start_s)
    assert after.interval_start_s >= before.interval_start_s
    grid = next(a for a in client.health() if a.name == GRID_PRICE)
    assert grid.restarted
