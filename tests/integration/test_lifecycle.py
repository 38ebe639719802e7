"""`factory up / status / down` on a real local Ray head that `up` starts, as a user runs them.

The module shares one cluster: `up` once, then each test looks at one behaviour; the last test
takes the factory down and brings it up again to show that durable state survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._common.utils import get_ray_address_file

from factory import ray_compat
from factory.ray_cluster import address_answers
from factory.store.migrations import LATEST_VERSION
from tests.integration.conftest import (
    FACTORY_BIN,
    RAY_BIN,
    REPO_ROOT,
    RunFactory,
    clean_env,
    json_of,
    make_runner,
    write_config,
)

pytestmark = pytest.mark.integration

RESTART_DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("factory")


@pytest.fixture(scope="module")
def run(workdir: Path) -> RunFactory:
    # Two GPUs declared on a CPU machine: the node's telemetry simulates them.
    config = write_config(workdir / "factory.yaml", state_dir=workdir / "state",
                          ray={"num_cpus": 2, "num_gpus": 2}, telemetry={"interval_s": 0.5})
    return make_runner(config, cwd=workdir)


@pytest.fixture(scope="module")
def first_up(no_ray_running: None, run: RunFactory) -> Iterator[dict[str, Any]]:
    result = json_of(run("up", "--json"))
    yield result
    if ray.is_initialized():
        ray.shutdown()
    run("down", "-y", check=False)


@pytest.fixture(scope="module")
def driver(first_up: dict[str, Any]) -> Iterator[None]:
    """This test process as a Ray driver on the factory's cluster (for kills and handles)."""
    ray.init(address="auto", namespace="factory", logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def actors_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {actor["name"]: actor for actor in status["actors"]}


def wait_for_new_incarnation(run: RunFactory, name: str, old_pid: int) -> dict[str, Any]:
    """Poll `factory status` until `name` answers from a new process; return its report."""
    deadline = time.monotonic() + RESTART_DEADLINE_S
    while time.monotonic() < deadline:
        result = run("status", "--json", check=False)
        if result.stdout.strip():
            actor = actors_by_name(json.loads(result.stdout)).get(name)
            if actor and actor["status"] == "ok" and actor["pid"] != old_pid:
                return actor
        time.sleep(1.0)
    raise AssertionError(f"{name} did not come back within {RESTART_DEADLINE_S:.0f} s")


def test_up_starts_a_local_head_and_every_actor(first_up: dict[str, Any], workdir: Path) -> None:
    assert first_up["started_local_head"] is True
    names = set(first_up["created"])
    assert {"grid_price", "scheduler", "registry"} <= names
    assert len([n for n in names if n.startswith("telemetry:")]) == 1  # one node, one agent
    assert all(actor["status"] == "ok" for actor in first_up["status"]["actors"])
    assert (workdir / "state" / "factory.db").is_file()


def test_second_up_reuses_the_running_actors(first_up: dict[str, Any], run: RunFactory) -> None:
    again = json_of(run("up", "--json"))
    assert again["started_local_head"] is False
    assert again["created"] == []
    before = {a["name"]: a["pid"] for a in first_up["status"]["actors"]}
    after = {a["name"]: a["pid"] for a in again["status"]["actors"]}
    assert after == before


def test_nodes_and_gpus_show_the_simulated_gpus_of_the_local_head(
    first_up: dict[str, Any], run: RunFactory
) -> None:
    listing = json_of(run("nodes", "--json"))
    facility, (node,) = listing["facility"], listing["nodes"]
    assert node["state"] == "alive" and node["source"] == "simulated" and node["gpus"] == 2
    assert (facility["gpus_total"], facility["gpus_idle"], facility["sources"]) == (2, 2, ["simulated"])
    assert facility["facility_power_w"] == pytest.approx(facility["it_power_w"] * 1.4)
    gpus = json_of(run("gpus", "--json"))
    assert [(g["index"], g["source"], g["power_w"], g["busy"]) for g in gpus] == [
        (0, "simulated", 75.0, False), (1, "simulated", 75.0, False)]

    text = run("nodes").stdout
    assert "Facility" in text and "2 total: 0 busy, 2 idle" in text and "simulated" in text
    watched = run("gpus", "--watch", "--count", "2", "--interval-s", "0.2").stdout
    assert watched.count("factory time") == 2 and watched.count("SOURCE") == 2
    lines = run("gpus", "--watch", "--json", "--count", "3", "--interval-s", "0.2").stdout.splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)) == 2 for line in lines)


def test_up_with_another_config_reuses_the_factory_and_says_so(
    first_up: dict[str, Any], workdir: Path
) -> None:
    config = workdir / "factory.yaml"
    result = subprocess.run(
        [FACTORY_BIN, "up"], cwd=workdir, capture_output=True, text=True, timeout=300,
        env=clean_env(FACTORY_CONFIG=str(config), FACTORY_SCHEDULER__INTERVAL_S="3"),
    )
    assert result.returncode == 0, result.stderr
    assert "created 0 actors" in result.stdout
    assert "warning: the running factory uses config" in result.stderr
    assert "factory down -y" in result.stderr


def test_status_reports_health_clock_store_and_a_live_dashboard(
    first_up: dict[str, Any], run: RunFactory, workdir: Path
) -> None:
    first = json_of(run("status", "--json"))
    time.sleep(1.0)
    second = json_of(run("status", "--json"))
    assert second["healthy"] is True
    for actor in second["actors"]:
        assert actor["version"] == first_up["status"]["version"]
        assert actor["node_id"] and actor["pid"] and actor["last_error"] is None
    # The replay clock runs at 1800x: a real second is half a factory hour.
    assert second["clock"]["mode"] == "replay"
    advanced_s = second["clock"]["now_s"] - first["clock"]["now_s"]
    assert advanced_s >= 1800 * 0.9
    assert second["clock"]["now"].startswith("2024-07")
    # Every actor, each in its own process, reads the very clock the grid price actor resolved.
    specs = {actor["name"]: actor["clock"] for actor in second["actors"]}
    assert specs["grid_price"]["mode"] == "replay" and specs["grid_price"]["anchor_wall_s"]
    assert all(spec == specs["grid_price"] for spec in specs.values()), specs
    assert second["state_store"] == {
        "path": str(workdir / "state" / "factory.db"), "schema_version": LATEST_VERSION}
    with urllib.request.urlopen(second["dashboard_url"], timeout=30) as response:
        assert response.status == 200
    text = run("status").stdout
    assert "Dashboard  " + second["dashboard_url"] in text and "scheduler" in text


def test_cli_reaches_the_cluster_named_by_address_or_ray_address(
    first_up: dict[str, Any], workdir: Path, tmp_path: Path
) -> None:
    address = first_up["status"]["ray_address"]
    config = workdir / "factory.yaml"
    for args, extra_env in ((["--address", address], {}), ([], {"RAY_ADDRESS": address})):
        result = subprocess.run(
            [FACTORY_BIN, "status", "--json", *args], cwd=tmp_path, capture_output=True, text=True,
            timeout=120, env=clean_env(FACTORY_CONFIG=str(config), **extra_env),
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ray_address"] == address


def test_killed_actor_is_restarted_and_reloads_its_state(
    driver: None, run: RunFactory
) -> None:
    before = actors_by_name(json_of(run("status", "--json")))
    scheduler = ray.get_actor("scheduler", namespace="factory")
    ray.kill(scheduler, no_restart=False)
    restarted = wait_for_new_incarnation(run, "scheduler", before["scheduler"]["pid"])
    # The incarnation count comes from the store: a fresh actor without it would say 1.
    assert restarted["incarnation"] == before["scheduler"]["incarnation"] + 1
    assert restarted["restarted"] is True
    assert "restarted by Ray" in restarted["last_error"]

    os.kill(before["registry"]["pid"], signal.SIGKILL)  # the process dies, not just the actor
    registry = wait_for_new_incarnation(run, "registry", before["registry"]["pid"])
    assert registry["incarnation"] == before["registry"]["incarnation"] + 1

    audit = json_of(run("audit", "--json", "--action", "actor.restarted"))
    assert [event["subject"] for event in audit][-2:] == ["scheduler", "registry"]
    # The audit log written before the kill is still readable through the restarted scheduler.
    ups = json_of(run("audit", "--json", "--action", "factory.up"))
    assert len(ups) >= 2


def test_a_ray_job_driver_uses_the_sdk(first_up: dict[str, Any], run: RunFactory) -> None:
    address = first_up["status"]["dashboard_url"]
    result = subprocess.run(
        [RAY_BIN, "job", "submit", "--address", address, "--working-dir", ".",
         "--", "python", "examples/driver.py"],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status_lines = [line for line in result.stdout.splitlines() if line.startswith('{"version"')]
    assert status_lines, result.stdout
    seen = json.loads(status_lines[-1])
    assert seen["config_fingerprint"] == first_up["status"]["config_fingerprint"]
    assert {a["name"] for a in seen["actors"]} == {
        a["name"] for a in first_up["status"]["actors"]}
    events = json_of(run("audit", "--json", "--action", "driver.connected"))
    assert events and events[-1]["actor"].startswith("driver:")


def test_down_then_up_continues_from_durable_state(
    first_up: dict[str, Any], run: RunFactory, workdir: Path
) -> None:
    if ray.is_initialized():
        ray.shutdown()
    before = json_of(run("status", "--json"))
    real_before_s = time.monotonic()
    audit_before = json_of(run("audit", "--json", "--limit", "1000"))

    recorded = ray_compat.recorded_local_address()
    assert recorded is not None
    down = run("down", "-y")
    assert "stopped the local Ray head" in down.stdout
    assert not (workdir / "state" / "local_head.json").exists()
    gone = run("status", check=False)
    assert gone.returncode == 1 and "factory up" in gone.stderr
    assert (workdir / "state" / "factory.db").is_file()
    # A head killed rather than stopped leaves Ray's record of it: still no cluster, no hang, and `up` works.
    record = Path(get_ray_address_file(None))
    record.write_text(recorded)
    try:
        gone = run("status", check=False)
        assert gone.returncode == 1 and "factory up" in gone.stderr

        down_s = time.monotonic() - real_before_s
        again = json_of(run("up", "--json"))
    finally:  # a dead record left behind would hang every later Ray on this machine
        if record.exists() and not address_answers(record.read_text().strip()):
            record.unlink()
    assert again["started_local_head"] is True
    after = json_of(run("status", "--json"))
    real_elapsed_s = time.monotonic() - real_before_s
    audit_after = json_of(run("audit", "--json", "--limit", "1000"))
    # Nothing lost: every earlier event is still there, then `down` and the new `up`.
    assert audit_after[: len(audit_before)] == audit_before
    # The new grid price actor records the price source it reads, before `up` records itself.
    assert [e["action"] for e in audit_after[len(audit_before):]] == [
        "factory.down", "prices.source", "factory.up"]
    # The head `down` stopped was taken down on purpose: the new cluster has no "down" node.
    listing = json_of(run("nodes", "--json"))
    assert [n["state"] for n in listing["nodes"]] == ["alive"] and listing["facility"]["nodes_down"] == 0
    # Actors continue their durable identity, and the replay clock does not jump back.
    old, new = actors_by_name(before), actors_by_name(after)
    for name in ("grid_price", "scheduler", "registry"):
        assert new[name]["incarnation"] == old[name]["incarnation"] + 1
    # The replay stood still while the factory was down (and never goes back): the factory time
    # that passed is less than the real time that passed, minus at least the `down` itself.
    factory_passed_s = after["clock"]["now_s"] - before["clock"]["now_s"]
    assert factory_passed_s > 0
    assert factory_passed_s < (real_elapsed_s - 0.5 * down_s) * 1800
