"""`factory demo`, as the README's first command runs it, tells its story and ends cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import make_runner, write_config

pytestmark = pytest.mark.integration


def test_demo_brings_the_factory_up_shows_it_and_ends_cleanly(
    no_ray_running: None, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "factory.yaml", state_dir=tmp_path / "state")
    run = make_runner(config, cwd=tmp_path)
    result = run("demo", "--watch-s", "2")  # the README's Quick start runs it with defaults
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "factory up on a local Ray head it started" in out
    assert "(healthy)" in out and "Dashboard  http://" in out
    times = [line.split("factory time ")[1] for line in out.splitlines() if "factory time " in line]
    assert len(times) == 3 and times == sorted(times) and len(set(times)) == 3  # the clock runs
    assert "factory.up" in out  # the audit log chapter reads the durable store
    assert "factory taken down" in out and "Ray dashboard at http://" in out
    assert run("status", check=False).returncode == 1  # nothing left running
