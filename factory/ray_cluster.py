"""Reaching Ray: an existing cluster, or a local head that `factory up` starts and `down` stops.

Invariants:
  * Address precedence: `--address`, then `RAY_ADDRESS` (Ray sets it for job drivers), then
    `ray.address` in the config, then a cluster already running on this machine (Ray's record of
    the last `ray start` here; a record whose head no longer answers counts as no cluster).
  * A local head is started only by `factory up` (never by status or the SDK). It is recorded in
    `<state_dir>/local_head.json` together with the head's node id, and `factory down` stops a
    head only when the connected cluster's head is that very node: a stale record (the head died,
    the machine rebooted, someone else started a cluster) never stops anything.
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
from typing import Any

import ray

from factory import ray_compat
from factory.config import FactoryConfig
from factory.errors import ClusterError, ConfigError, summary_line

NAMESPACE = "factory"
LOCAL_HEAD_MARKER = "local_head.json"
# Ray gives the head node this resource; a tiny request for it pins an actor there.
HEAD_NODE_RESOURCE = "node:__internal_head__"
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
    return address or os.environ.get("RAY_ADDRESS") or config.ray.address or None


def connect_ray(
    config: FactoryConfig, address: str | None = None, start_local: bool = False
) -> RayConnection:
    """Connect this process to Ray; with `start_local`, start a local head when none is running.

    Raises `ClusterError` when the named cluster cannot be reached, or none runs here and
    `start_local` is false.
    """
    wanted = resolve_address(config, address)
    started = False
    if not ray.is_initialized():
        if wanted is not None and wanted != "auto":
            _probe(wanted)
        try:
            if wanted in (None, "auto"):
                _refuse_a_dead_recorded_head()
            _init(wanted or "auto")
        except (ConnectionError, ValueError) as exc:
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
            _start_local_head(config)
            started = True
            _init("auto")
            _write_marker(config.state_dir)
    return current_connection(started_local_head=started)


def current_connection(started_local_head: bool = False) -> RayConnection:
    """Describe the cluster this process is already connected to."""
    return RayConnection(
        address=ray.get_runtime_context().gcs_address,
        dashboard_url=dashboard_url(),
        started_local_head=started_local_head,
    )


def dashboard_url() -> str | None:
    """The Ray dashboard's URL for the connected cluster, or None if it has no dashboard."""
    url = ray_compat.dashboard_url()  # no public API gives it to a connected driver
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def head_node_id() -> str | None:
    """The node id of the connected cluster's head node."""
    for node in ray.nodes():
        if node["Alive"] and HEAD_NODE_RESOURCE in node.get("Resources", {}):
            return node["NodeID"]
    return None


def marker_matches_cluster(state_dir: Path) -> bool:
    """Whether `factory up` with this state dir started the head of the connected cluster."""
    head = _read_marker(state_dir).get("head_node_id")
    return head is not None and head == head_node_id()


def local_head_answers(state_dir: Path) -> bool:
    """Whether the GCS of the local head recorded in `state_dir` still accepts connections."""
    return address_answers(str(_read_marker(state_dir).get("gcs_address", "")))


def address_answers(address: str) -> bool:
    """Whether "host:port" (or "[v6 address]:port") accepts a TCP connection; False if it is neither."""
    host_port = _split_host_port(address)
    return host_port is not None and _connect_error(*host_port) is None


def clear_marker(state_dir: Path) -> bool:
    """Forget a local-head record (e.g. a stale one); return whether there was one."""
    marker = state_dir / LOCAL_HEAD_MARKER
    existed = marker.exists()
    marker.unlink(missing_ok=True)
    return existed


def stop_local_head(state_dir: Path) -> None:
    """Stop the local Ray head recorded in `state_dir` (`ray stop`: every Ray process here)."""
    if ray.is_initialized():
        ray.shutdown()
    command = [sys.executable, "-m", "ray.scripts.scripts", "stop"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise ClusterError(f"`ray stop` failed: {summary_line(result.stderr or result.stdout)}")
    clear_marker(state_dir)


def _start_local_head(config: FactoryConfig) -> None:
    """Start a Ray head on this machine, with its dashboard."""
    try:  # before `ray start`: a head we could not record is a head `down` could not stop
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / LOCAL_HEAD_MARKER).touch()
    except OSError as exc:
        raise ConfigError(
            f"state_dir {config.state_dir} is not a writable directory: {exc.strerror or exc}; "
            "set state_dir in the config or FACTORY_STATE_DIR"
        ) from None
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
    # Ray starts its workers at nice 15: beside one CPU-bound process they got a 36/1024 share of a core,
    # and the control plane and the jobs' training slowed down threefold. The raylet reads this setting.
    env["RAY_worker_niceness"] = str(config.ray.worker_niceness)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=RAY_START_TIMEOUT_S, check=False, env=env
    )
    if result.returncode != 0:
        clear_marker(config.state_dir)
        reason = summary_line(result.stderr or result.stdout or f"exit code {result.returncode}")
        raise ClusterError(f"`ray start --head` failed: {reason}")


def _read_marker(state_dir: Path) -> dict[str, Any]:
    """The local-head record in `state_dir`; empty when absent, unreadable or not yet written."""
    try:
        record = json.loads((state_dir / LOCAL_HEAD_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_marker(state_dir: Path) -> None:
    record = {"head_node_id": head_node_id(), "gcs_address": ray.get_runtime_context().gcs_address,
              "started_wall_s": time.time()}
    (state_dir / LOCAL_HEAD_MARKER).write_text(json.dumps(record))


def _probe(address: str) -> None:
    """Fail in seconds, with one line, where Ray itself would retry an unreachable GCS for minutes."""
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"Ray address '{address}' is the dashboard's (for `ray job submit`); the factory "
            "needs the cluster's, e.g. 127.0.0.1:6379; check --address or RAY_ADDRESS"
        )
    host_port = _split_host_port(address.split("://", 1)[-1].rstrip("/"))
    if host_port is None:
        raise ConfigError(
            f"Ray address '{address}' is not host:port (or ray://host:port, or 'auto'); "
            "check --address or RAY_ADDRESS"
        )
    error = _connect_error(*host_port)
    if error is not None:
        raise ClusterError(f"cannot reach Ray at {address}: {error}; check --address or RAY_ADDRESS")


def _refuse_a_dead_recorded_head() -> None:
    """Raise `ConnectionError` when Ray's record of the local cluster names a GCS that does not answer.

    Ray would retry that address for ever; treated as "no cluster here", `factory up` starts a new
    head (whose `ray start` replaces the record) and other commands say in seconds that none runs.
    Where exactly one Ray runs on this machine, Ray's "auto" connects to it whatever the record says,
    so it is left to Ray.
    """
    recorded = ray_compat.recorded_local_address()
    host_port = _split_host_port(recorded) if recorded else None
    if host_port is None or len(ray_compat.local_gcs_addresses()) == 1:
        return
    if (error := _connect_error(*host_port)) is not None:
        raise ConnectionError(f"the Ray head last started on this machine ({recorded}) is gone: {error}")


def _split_host_port(address: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[v6 address]:port"; None if it is neither."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host, int(port)) if host and port.isdigit() else None


def _connect_error(host: str, port: int) -> str | None:
    """Why a TCP connection to host:port fails within `PROBE_TIMEOUT_S`, or None if it succeeds."""
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _init(address: str) -> None:
    if address != "auto":  # Ray sends the token to a cluster it finds itself, not to a named one
        ray_compat.use_token_auth_if_available()
    ray.init(
        address=address,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
