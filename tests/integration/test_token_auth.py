"""A Ray head with token auth (Ray 2.60 turns it on wherever a token exists, e.g. after any
`ray.init()` on the machine) is reachable by `--address` too, not only when found automatically."""

from __future__ import annotations

import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import FACTORY_BIN, RAY_BIN, clean_env

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_factory_connects_to_a_token_auth_head_named_by_address(
    no_ray_running: None, tmp_path: Path
) -> None:
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = clean_env(RAY_AUTH_TOKEN_PATH=str(token))
    env.pop("RAY_AUTH_MODE", None)
    port = free_port()
    subprocess.run([RAY_BIN, "start", "--head", f"--port={port}", "--num-cpus=1",
                    "--include-dashboard=false"], env=env, check=True, capture_output=True, timeout=180)
    try:
        address = f"{socket.gethostbyname(socket.gethostname())}:{port}"
        result = subprocess.run([FACTORY_BIN, "status", "--address", address], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run([RAY_BIN, "stop", "--force"], env=env, capture_output=True, timeout=120)
    # Connected (the factory is simply not up there), in one line, without Ray's auth notice.
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "error: the factory's 'scheduler' actor is not on this cluster; run `factory up`")
