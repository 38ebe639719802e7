"""Reaching Ray: an existing cluster, or a local head that `factory up` starts and `down` stops.

Invariants:
  * Address precedence: `--address`, then `ray.address` in the config, then `RAY_ADDRESS`, then a
    cluster already running on this machine.
  * A local head is started only by `factory up` (never by status or the SDK), and is recorded in
    `<state_dir>/local_head.json`; `factory down` stops a head only when that record exists.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from factory.config import FactoryConfig
from factory.errors import ClusterError, summary_line

NAMESPACE = "factory"
LOCAL_HEAD_MARKER = "local_head.json"
RAY_START_TIMEOUT_S = 180
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RayConnection:
    """The cluster this process is connected to."""

    address: str
    dashboard_url: str | None
    started_local_head: bool


def resolve_address(config: FactoryConfig, address: str | None) -> str | None:
    """The address the user asked for, or None for 'a cluster running on this machine'."""
    return address or config.ray.address or os.environ.get("RAY_ADDRESS") or None


def connect_ray(
    config: FactoryConfig, address: str | None = None, start_local: bool = False
) -> RayConnection:
    """Connect this process to Ray; with `start_local`, start a local head when none is running."""
    wanted = resolve_address(config, address)
    started = False
    if not ray.is_initialized():
        if wanted is not None and wanted != "auto":
            _probe(wanted)
        try:
            _init(wanted or "auto")
        except ConnectionError as exc:
            if wanted is not None:
                raise ClusterError(
                    f"cannot reach Ray at {wanted}: {summary_line(exc, last=False)}; "
                    "check --address or RAY_ADDRESS"
                ) from None
            if not start_local:
                raise ClusterError(
                    "no Ray cluster is running on this machine and none was named; "
                    "run `factory up` (or pass --address / set RAY_ADDRESS)"
                ) from None
            start_local_head(config)
            started = True
            _init("auto")
    return RayConnection(
        address=_gcs_address(),
        dashboard_url=dashboard_url(),
        started_local_head=started,
    )


def dashboard_url() -> str | None:
    """The Ray dashboard's URL for the connected cluster, or None if it has no dashboard."""
    url = ray._private.worker.get_dashboard_url()  # no public API gives it to a connected driver
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def start_local_head(config: FactoryConfig) -> None:
    """Start a Ray head on this machine (with its dashboard) and record that the factory did."""
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        f"--dashboard-host={config.ray.dashboard_host}",
        f"--dashboard-port={config.ray.dashboard_port}",
        "--include-dashboard=true",
        "--disable-usage-stats",
    ]
    if config.ray.num_cpus is not None:
        command.append(f"--num-cpus={config.ray.num_cpus}")
    if config.ray.num_gpus is not None:
        command.append(f"--num-gpus={config.ray.num_gpus}")
    # Put this interpreter first on the head's PATH, so `python` in a `ray job submit` entrypoint
    # is the one that has the factory installed, even when the caller did not activate its venv.
    bin_dir = str(Path(sys.executable).parent)
    env = os.environ | {"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=RAY_START_TIMEOUT_S, check=False, env=env
    )
    if result.returncode != 0:
        reason = summary_line(result.stderr or result.stdout or f"exit code {result.returncode}")
        raise ClusterError(f"`ray start --head` failed: {reason}")
    marker = config.state_dir / LOCAL_HEAD_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"started_wall_s": time.time(), "pid": os.getpid()}))


def started_local_head(config: FactoryConfig) -> bool:
    """Whether `factory up` started the local Ray head of this state dir."""
    return (config.state_dir / LOCAL_HEAD_MARKER).exists()


def stop_local_head(config: FactoryConfig) -> None:
    """Stop the local Ray head that `factory up` started (all Ray processes of this machine)."""
    if ray.is_initialized():
        ray.shutdown()
    command = [sys.executable, "-m", "ray.scripts.scripts", "stop"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise ClusterError(f"`ray stop` failed: {summary_line(result.stderr or result.stdout)}")
    (config.state_dir / LOCAL_HEAD_MARKER).unlink(missing_ok=True)


def _probe(address: str) -> None:
    """Fail in seconds, with one line, where Ray itself would retry an unreachable GCS for minutes."""
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(
            f"Ray address '{address}' is not host:port (or ray://host:port, or 'auto'); "
            "check --address or RAY_ADDRESS"
        )
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach Ray at {address}: {exc.strerror or exc}; check --address or RAY_ADDRESS"
        ) from None


def _init(address: str) -> None:
    ray.init(
        address=address,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


def _gcs_address() -> str:
    return ray.get_runtime_context().gcs_address
