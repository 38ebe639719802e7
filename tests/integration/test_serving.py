"""Serving on a real local Ray cluster: Ray Serve endpoints of registry models, over real HTTP.

One cluster and one factory for the module (Serve's HTTP proxy on a free port, replicas of half a
CPU, canaries judged after 10 requests). Model `reg` has three versions: v1 and v2 are regression
MLPs with different weights, v3 is the same network behind a predictor that fails (fault injection);
model `broken` has one such failing version.
The tests run in file order and leave the endpoint `reg` as the next one expects (said in each).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import yaml

import factory.client
from factory import lifecycle
from factory.config import FactoryConfig, load_config
from factory.examples.regression import RegressionInput, RegressionPredictor, build_model
from tests.integration.conftest import RAY_BIN, clean_env, cli_at, json_of, scrape_metrics, wait_until

pytestmark = pytest.mark.integration
PREDICTOR = "factory.examples.regression:RegressionPredictor"
FAILING = "factory.examples.faulty:FailingPredictor"
NAN = "factory.examples.faulty:NanPredictor"
SLOW = "factory.examples.faulty:SlowPredictor"
UNLOADABLE = "factory.examples.faulty:UnloadablePredictor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, body: Any = None, raw: bytes | None = None,
         timeout_s: float = 30.0) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of a GET (no body) or a POST; 4xx/5xx are answers, not exceptions."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text or b"null"), error.headers
        except ValueError:  # Serve's own answers (a route it does not know) are text
            return error.code, text.decode(errors="replace"), error.headers


@pytest.fixture(scope="module")
def cluster(no_ray_running: None) -> Iterator[dict[str, Any]]:
    dashboard_port = free_port()
    info = ray.init(num_cpus=4, num_gpus=0, include_dashboard=True, dashboard_port=dashboard_port,
                    logging_level="ERROR", log_to_driver=False)
    yield {"address": info.address_info["address"], "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    ray.shutdown()
    subprocess.run([RAY_BIN, "stop", "--force"], env=clean_env(), capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def config(cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FactoryConfig]:
    tmp = tmp_path_factory.mktemp("serving")
    path = tmp / "factory.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"),
        "clock": {"mode": "replay", "replay_start": "2024-07-01T00:00:00Z", "speed_factor": 60},
        "scheduler": {"policy": "fifo"},
        "serving": {"http_port": free_port(), "replica_cpus": 0.5, "canary_min_requests": 10,
                    "watch_interval_s": 0.5, "report_interval_s": 0.5, "request_timeout_s": 3,
                    # Latency tails on a busy 2-core machine are noise here: canaries are judged on errors.
                    "canary_max_latency_ratio": 50},
    }))
    config = load_config(path, env={})
    lifecycle.up(config)
    yield config
    lifecycle.down(config)


@pytest.fixture(scope="module")
def client(config: FactoryConfig) -> factory.client.FactoryClient:
    client = factory.client.connect(config=config)
    for seed, predictor in ((1, PREDICTOR), (2, PREDICTOR), (3, FAILING)):
        torch.manual_seed(seed)
        client.register(build_model(16).state_dict(), "reg", predictor=predictor, description=f"seed {seed}")
    client.register(build_model(4).state_dict(), "broken", predictor=FAILING)
    client.register(build_model(4).state_dict(), "diverged", predictor=NAN)
    client.register(build_model(4).state_dict(), "hanging", predictor=SLOW)
    client.register(build_model(4).state_dict(), "plain")  # no predictor: not servable
    client.set_alias("reg", "production", 1)
    return client


@pytest.fixture(scope="module")
def address(cluster: dict[str, Any], client: factory.client.FactoryClient) -> str:
    return cluster["address"]


def expected_y(client: factory.client.FactoryClient, version: int, x1: float, x2: float) -> float:
    predictor = RegressionPredictor(client.load("reg", version))
    return predictor.predict([RegressionInput(x1=x1, x2=x2)])[0]["y"]


def endpoint(client: factory.client.FactoryClient, name: str = "reg") -> dict[str, Any]:
    return next(view for view in client.endpoints() if view["name"] == name)


def test_deploy_serves_the_alias_over_http_with_health_and_schema(client: factory.client.FactoryClient,
                                                                   address: str) -> None:
    shown = cli_at(address, "deploy", "reg@production").stdout
    view = endpoint(client)
    assert view["url"] in shown and "v1 100%" in shown
    assert view["route"] == "/models/reg" and view["follows"] == "production" and view["stable_version"] == 1

    status, body, headers = call(view["url"], {"x1": 0.5, "x2": -1.0})
    assert status == 200 and body["model"] == "reg:1" and headers["x-factory-model"] == "reg:1"
    assert body["prediction"]["y"] == pytest.approx(expected_y(client, 1, 0.5, -1.0), abs=1e-5)
    status, body, _ = call(view["url"] + "/predict", {"x1": 0.0, "x2": 0.0})
    assert status == 200 and body["model"] == "reg:1"

    status, health, _ = call(view["url"] + "/health")
    assert status == 200 and health["status"] == "ok" and health["stable"] == "reg:1"
    status, schema, _ = call(view["url"] + "/schema")
    assert status == 200 and set(schema["input_schema"]["properties"]) == {"x1", "x2"}


def test_deploying_what_cannot_be_served_is_one_line_naming_the_fix(address: str) -> None:
    for ref, expected in (("plain", "names no predictor, so it cannot be served; register it with"),
                          ("nosuch@production", "model 'nosuch' is not in the registry"),
                          ("reg@nosuchalias", "has no alias 'nosuchalias'")):
        failed = cli_at(address, "deploy", ref, check=False)
        assert failed.returncode == 1 and expected in failed.stderr and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    failed = cli_at(address, "deploy", "reg@production", "--canary", "2", check=False)
    assert failed.returncode == 2 and "--canary applies to an endpoint" in failed.stderr


def test_bad_requests_get_4xx_naming_the_field(client: factory.client.FactoryClient) -> None:
    url = endpoint(client)["url"]
    status, body, _ = call(url, {"x1": 1.0})
    assert status == 422 and "x2" in body["error"] and body["fields"] == ["x2"]
    status, body, _ = call(url, {"x1": "north", "x2": 1.0})
    assert status == 422 and body["error"].startswith("field 'x1'")
    status, body, _ = call(url, raw=b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body, _ = call(url + "/nowhere", {"x1": 1.0, "x2": 1.0})
    assert status == 404
    status, body, _ = call(url, {"x1": 1.0, "x2": 1.0})
    assert status == 200  # the replica is unharmed


def test_a_model_error_is_a_500_with_an_id_and_counted(client: factory.client.FactoryClient) -> None:
    view = client.deploy("broken:1", route="/broken")
    assert view["follows"] is None and view["route"] == "/broken"
    status, body, _ = call(view["url"], {"x1": 1.0, "x2": 1.0})
    assert status == 500 and len(body["error_id"]) == 12 and "injected failure" in body["error"]
    wait_until(lambda: endpoint(client, "broken")["versions"].get("broken:1", {}).get("errors", 0) >= 1,
               "the failed request shows in the endpoint's stats")
    assert endpoint(client, "broken")["error_rate"] == 1.0
    client.serving.undeploy("broken")


def test_an_answer_that_is_not_json_is_a_500_and_a_hung_model_a_504(
        client: factory.client.FactoryClient) -> None:
    url = client.deploy("diverged:1")["url"]
    status, body, _ = call(url, {"x1": 1.0, "x2": 1.0})
    assert status == 500 and "answering JSON" in body["error"] and len(body["error_id"]) == 12
    wait_until(lambda: endpoint(client, "diverged")["versions"].get("diverged:1", {}).get("errors", 0) >= 1,
               "the NaN answer counts as an error")
    client.serving.undeploy("diverged")

    url = client.deploy("hanging:1")["url"]
    started = time.monotonic()
    status, body, _ = call(url, {"x1": 1.0, "x2": 1.0})
    assert status == 504 and "within 3 s" in body["error"] and len(body["error_id"]) == 12
    assert time.monotonic() - started < 7  # request_timeout_s (3 s), not the model's 8 s
    client.serving.undeploy("hanging")


class Load:
    """Threads that POST to an endpoint without pause, recording for every request when it was sent, and
    its answer's status and version."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url, self.answers, self._stop = url, [], threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, body, _ = call(self.url, {"x1": 0.3, "x2": 0.7}, timeout_s=30)
                self.answers.append((sent, status, (body or {}).get("model")))
            except OSError as error:  # a refused or reset connection is a failed request too
                self.answers.append((sent, 0, repr(error)))

    def count(self, model: str, after: float = -math.inf) -> int:
        """Answers from `model` (`NAME:V`) to requests sent after `after` (monotonic s)."""
        return sum(1 for when, _, answered_by in list(self.answers) if answered_by == model and when > after)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_promoting_the_alias_rolls_the_endpoint_under_load_without_a_failed_request(
        client: factory.client.FactoryClient, address: str) -> None:
    url = endpoint(client)["url"]
    with Load(url) as load:
        # Counted answers, not seconds: a busy machine answers fewer requests per second.
        wait_until(lambda: load.count("reg:1") > 10, "requests answered by v1 before the promote")
        shown = cli_at(address, "promote", "reg", "2", "--alias", "production").stdout
        promoted_at = time.monotonic()
        wait_until(lambda: load.count("reg:2", after=promoted_at) > 10,
                   "requests answered by v2 after the promote")
    assert "endpoint reg: v2 100%" in shown
    failed = [answer for answer in load.answers if answer[1] != 200]
    assert not failed, f"{len(failed)} of {len(load.answers)} requests failed: {failed[:5]}"
    versions = Counter(model for _, _, model in load.answers)
    assert versions["reg:1"] > 10 and versions["reg:2"] > 10, versions
    assert {model for sent, _, model in load.answers if sent > promoted_at} == {"reg:2"}
    view = endpoint(client)
    assert view["stable_version"] == 2 and view["history"] == [1]


def test_canary_gets_its_share_and_promote_completes_it(client: factory.client.FactoryClient,
                                                         address: str) -> None:
    # The endpoint serves v2 (previous test). Put production back on v1 and canary v2 at 30 %.
    client.set_alias("reg", "production", 1)
    client.serving.sync()
    shown = cli_at(address, "deploy", "reg", "--canary", "2", "--percent", "30").stdout
    assert "v1 70% / v2 30%" in shown
    url = endpoint(client)["url"]
    models = Counter(call(url, {"x1": 0.1, "x2": 0.2})[1]["model"] for _ in range(400))
    assert set(models) == {"reg:1", "reg:2"}
    assert 0.23 <= models["reg:2"] / 400 <= 0.37, models  # 30 % +- 3 standard deviations
    assert endpoint(client)["traffic"] == {"reg:1": 70.0, "reg:2": 30.0}

    cli_at(address, "promote", "reg", "2", "--alias", "production")
    view = endpoint(client)
    assert view["stable_version"] == 2 and view["canary_version"] is None
    assert {call(url, {"x1": 0.1, "x2": 0.2})[1]["model"] for _ in range(20)} == {"reg:2"}


def test_a_failing_canary_is_rolled_back_automatically(client: factory.client.FactoryClient,
                                                       address: str) -> None:
    # Stable v2 (previous test); v3's predictor fails every request.
    client.serving.canary("reg", 3, 50.0, "test")
    url = endpoint(client)["url"]
    statuses = Counter()
    deadline = time.monotonic() + 60
    while (view := endpoint(client))["canary_version"] is not None or view["updating"]:
        assert time.monotonic() < deadline, "the failing canary was not rolled back within 60 s"
        statuses[call(url, {"x1": 0.1, "x2": 0.2})[0]] += 1
    assert statuses[500] >= 1 and statuses[200] >= 1
    view = endpoint(client)
    assert view["stable_version"] == 2 and view["last_rollback"]["automatic"] is True
    assert view["last_rollback"]["version"] == 3 and "failed" in view["last_rollback"]["reason"]
    assert {call(url, {"x1": 0.1, "x2": 0.2})[0] for _ in range(20)} == {200}
    audit = client.audit_log(limit=50, action_prefix="endpoint.rolled_back")
    assert audit and audit[-1].detail["automatic"] is True
    assert "auto-rolled back v3" in cli_at(address, "endpoints").stdout


def test_a_canary_that_cannot_load_answers_500_and_is_rolled_back(
        client: factory.client.FactoryClient) -> None:
    # Stable v2 (previous test). Its predictor imports, so the deploy is accepted; it fails in the replica.
    version = client.register(build_model(16).state_dict(), "reg", predictor=UNLOADABLE).version
    client.serving.canary("reg", version, 50.0, "test")
    url = endpoint(client)["url"]
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + 60
    while (view := endpoint(client))["canary_version"] is not None or view["updating"]:
        assert time.monotonic() < deadline, "the canary that cannot load was not rolled back within 60 s"
        status, body, _ = call(url, {"x1": 0.1, "x2": 0.2})
        statuses[status] += 1
        if status == 500:
            assert "failed loading" in body["error"] and body["error_id"]
    assert statuses[500] >= 1 and statuses[200] >= 1
    assert view["stable_version"] == 2 and view["last_rollback"]["version"] == version
    assert {call(url, {"x1": 0.1, "x2": 0.2})[0] for _ in range(10)} == {200}


def test_rollback_returns_to_the_previous_version_and_its_alias(client: factory.client.FactoryClient,
                                                               address: str) -> None:
    # Stable v2, which replaced v1 (production follows).
    shown = cli_at(address, "rollback", "reg").stdout
    assert "v1 100%" in shown
    url = endpoint(client)["url"]
    assert {call(url, {"x1": 0.1, "x2": 0.2})[1]["model"] for _ in range(10)} == {"reg:1"}
    assert client.model("reg", alias="production").version == 1  # the alias went back with it
    time.sleep(1.5)  # three watch rounds: the endpoint stays on v1 (it agrees with its alias)
    assert endpoint(client)["stable_version"] == 1
    failed = cli_at(address, "rollback", "nosuch", check=False)
    assert failed.returncode == 1 and "no endpoint 'nosuch'" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_an_alias_moved_to_a_version_that_cannot_be_served_leaves_the_endpoint_as_it_was(
        client: factory.client.FactoryClient, address: str) -> None:
    # Stable v1, following production (previous test).
    version = client.register(build_model(16).state_dict(), "reg").version  # no predictor
    failed = cli_at(address, "promote", "reg", str(version), "--alias", "production", check=False)
    assert failed.returncode == 1 and f"now points at v{version}" in failed.stderr
    assert "names no predictor" in failed.stderr and "Traceback" not in failed.stderr
    time.sleep(1.5)  # watch rounds do not try again while the alias stays there
    view = endpoint(client)
    assert view["stable_version"] == 1 and not view["updating"]
    assert {call(view["url"], {"x1": 0.1, "x2": 0.2})[1]["model"] for _ in range(10)} == {"reg:1"}
    refused = client.audit_log(limit=20, action_prefix="endpoint.roll_refused")
    assert len(refused) == 1 and refused[0].detail["version"] == version
    client.set_alias("reg", "production", 1)


def test_endpoints_lists_split_replicas_rate_and_latency_and_metrics_are_exported(
        client: factory.client.FactoryClient, address: str) -> None:
    url = endpoint(client)["url"]
    for _ in range(30):
        call(url, {"x1": 0.1, "x2": 0.2})
    wait_until(lambda: (endpoint(client)["versions"].get("reg:1") or {}).get("requests", 0) >= 30,
               "the replicas' reports reach the serving actor")
    views = json_of(cli_at(address, "endpoints", "--json"))
    view = next(v for v in views if v["name"] == "reg")
    assert view["route"] == "/models/reg" and view["traffic"] == {"reg:1": 100.0}
    assert view["serve"]["running"] >= 1 and view["serve"]["status"] == "RUNNING"
    assert view["rate_per_s"] > 0 and 0 < view["p50_ms"] <= view["p99_ms"]
    table = cli_at(address, "endpoints").stdout
    assert "/models/reg" in table and "v1 100%" in table and "@production" in table

    node_id = ray.get_runtime_context().get_node_id()

    def exported() -> bool:
        # Counters are families without their `_total` suffix to Prometheus' parser.
        families = scrape_metrics(node_id, {"ray_factory_serve_requests", "ray_factory_serve_latency_ms"})
        requests = families.get("ray_factory_serve_requests", [])
        return bool(families.get("ray_factory_serve_latency_ms")) and any(
            s.labels.get("version") == "reg:1" and s.labels.get("status") == "2xx" and s.value > 0
            for s in requests)

    wait_until(exported, "factory_serve_requests_total is exported as a Ray metric")


def test_exported_serve_config_is_deployed_by_serve_itself(client: factory.client.FactoryClient,
                                                           address: str, cluster: dict[str, Any],
                                                           tmp_path: Path) -> None:
    torch.manual_seed(7)
    client.register(build_model(8).state_dict(), "solo", predictor=PREDICTOR)
    exported = tmp_path / "serve.yaml"
    cli_at(address, "deploy", "solo:1", "--route", "/solo", "--export", str(exported))
    config = yaml.safe_load(exported.read_text())
    assert config["applications"][0]["import_path"] == "deployments.model_server:app"
    serve_bin = str(Path(RAY_BIN).with_name("serve"))
    deployed = subprocess.run([serve_bin, "deploy", str(exported), "--address", cluster["dashboard"]],
                              env=clean_env(), capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    base = f"http://127.0.0.1:{config['http_options']['port']}/solo"

    def answers() -> bool:
        try:
            return call(base, {"x1": 1.0, "x2": 0.0})[0] == 200
        except OSError:
            return False

    wait_until(answers, "the app `serve deploy` started answers")
    status, body, _ = call(base, {"x1": 1.0, "x2": 0.0})
    assert body["model"] == "solo:1"
    assert call(endpoint(client)["url"], {"x1": 1.0, "x2": 0.0})[0] == 200  # the factory's own still serves


def test_undeploy_removes_the_route(client: factory.client.FactoryClient, address: str) -> None:
    url = endpoint(client)["url"]
    cli_at(address, "undeploy", "reg")
    assert all(view["name"] != "reg" for view in client.endpoints())
    wait_until(lambda: call(url, {"x1": 0.1, "x2": 0.2})[0] == 404, "the route is gone")
    failed = cli_at(address, "undeploy", "reg", check=False)
    assert failed.returncode != 0 and "no endpoint 'reg'" in failed.stderr


def test_down_takes_endpoints_off_serve_and_up_brings_them_back(client: factory.client.FactoryClient,
                                                                config: FactoryConfig) -> None:
    url = client.deploy("reg@production")["url"]
    assert call(url, {"x1": 0.1, "x2": 0.2})[0] == 200
    lifecycle.down(config)  # this cluster was not started by `up`: Ray stays, the factory goes
    wait_until(lambda: call(url, {"x1": 0.1, "x2": 0.2})[0] == 404, "the endpoint is off Serve")
    lifecycle.up(config)
    wait_until(lambda: call(url, {"x1": 0.1, "x2": 0.2})[0] == 200, "the endpoint is back after `up`")
    status, body, _ = call(url, {"x1": 0.1, "x2": 0.2})
    assert body["model"] == "reg:1"  # production, as before `down`
    views = factory.client.connect(config=config).endpoints()  # the old client's actors are gone
    assert [view["name"] for view in views] == ["reg"]
