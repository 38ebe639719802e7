"""Helpers for integration tests: run the real `factory` CLI against a real local Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import FACTORY_BIN, RAY_BIN, REPO_ROOT, clean_env

__all__ = ["FACTORY_BIN", "RAY_BIN", "REPO_ROOT", "clean_env", "cli_at", "json_of", "make_runner",
           "scrape_metrics", "wait_until", "write_config"]
DEADLINE_S = 60.0

RunFactory = Callable[..., subprocess.CompletedProcess[str]]


def write_config(path: Path, state_dir: Path, **sections: Any) -> Path:
    """A factory config for tests: small local head (2 CPUs, as CI has), replay clock."""
    config: dict[str, Any] = {
        "state_dir": str(state_dir),
        "ray": {"num_cpus": 2, "num_gpus": 0},
        "clock": {"mode": "replay", "replay_start": "2024-07-01T00:00:00Z", "speed_factor": 1800},
    }
    config.update(sections)
    path.write_text(yaml.safe_dump(config))
    return path


def cli_at(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `factory ARGS --address ADDRESS` as a user would; fail with its output unless `check=False`."""
    result = subprocess.run([FACTORY_BIN, *args, "--address", address], env=clean_env(),
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"factory {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def make_runner(config_path: Path, cwd: Path) -> RunFactory:
    """`run("status", "--json")` runs the CLI with this config; `check=False` to inspect failures."""

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [FACTORY_BIN, *args], cwd=cwd, env=clean_env(FACTORY_CONFIG=str(config_path)),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"factory {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    return run


def wait_until(condition: Callable[[], bool], what: str, poll_s: float = 0.5) -> None:
    """Poll `condition` until it holds; fail naming `what` after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        time.sleep(poll_s)


def scrape_metrics(node_id: str, names: set[str]) -> dict[str, list[Any]]:
    """The samples of each of `names` on a Ray node's Prometheus endpoint (names Ray exports: `ray_...`)."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(body)
            if family.name in names}


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a `--json` command printed."""
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def no_ray_running() -> None:
    """Integration modules that start their own cluster need the machine free of other Rays."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import ray; ray.init(address='auto', logging_level='ERROR')"],
            env=clean_env(), capture_output=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        return  # a stale /tmp/ray/ray_current_cluster of a Ray that died: nothing answers there
    if probe.returncode == 0:
        pytest.fail(
            "a Ray cluster is already running on this machine and these tests start and stop their "
            "own; stop it first (`.venv/bin/factory down -y`, or `ray stop`)"
        )
