"""The real `factory` console script on user errors that happen before any Ray connection.

Each case must exit with code 2 (usage/config error) and print a short message, never a traceback.
Only one case reaches a command's Ray code: `factory status` with a stale record of a dead local head,
which must say in one line that no cluster runs (no cluster is started). Every other Ray path is left to
the integration tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from factory import ray_compat
from factory.ray_cluster import _refuse_a_dead_recorded_head
from factory.version import __version__
from tests.support import FACTORY_BIN, clean_env


def run_factory(
    *args: str, cwd: Path, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FACTORY_BIN, *args], cwd=cwd, env=clean_env(**extra_env), capture_output=True, text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 and exactly one `error: ...` line on stderr; returns that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def test_unknown_config_key_is_one_line_with_suggestion(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("clock:\n  speed_factr: 3600\n")

    line = assert_one_line_error(run_factory("status", "--config", "bad.yaml", cwd=tmp_path))

    assert "bad.yaml" in line
    assert "did you mean 'speed_factor'?" in line


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    line = assert_one_line_error(run_factory("status", "--config", "missing.yaml", cwd=tmp_path))

    assert "cannot read config file" in line
    assert "missing.yaml" in line


def test_bad_value_in_default_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "factory.yaml").write_text("telemetry: {interval_s: -1}\n")

    line = assert_one_line_error(run_factory("status", cwd=tmp_path))

    assert "telemetry.interval_s" in line
    assert "greater than 0" in line


def test_unknown_env_override_is_a_config_error(tmp_path: Path) -> None:
    line = assert_one_line_error(run_factory("status", cwd=tmp_path, FACTORY_CLOK__MODE="x"))

    assert "FACTORY_CLOK__MODE" in line
    assert "did you mean 'clock'" in line


def test_an_env_value_yaml_reads_as_an_impossible_date_is_a_config_error(tmp_path: Path) -> None:
    # "2025-13-01" looks like a date to YAML, which raised ValueError from deep inside its parser.
    line = assert_one_line_error(run_factory("status", cwd=tmp_path, FACTORY_SERVING__HTTP_PORT="2025-13-01"))

    assert "FACTORY_SERVING__HTTP_PORT" in line and "serving.http_port" in line and "2025-13-01" in line


def test_a_deeply_nested_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    block = "a:\n" + "".join("  " * depth + "b:\n" for depth in range(1, 2000))
    (tmp_path / "block.yaml").write_text(block)

    for name in ("deep.yaml", "block.yaml"):
        line = assert_one_line_error(run_factory("status", "--config", name, cwd=tmp_path))
        assert name in line and "nested" in line


def test_factory_config_env_naming_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    line = assert_one_line_error(
        run_factory("status", cwd=tmp_path, FACTORY_CONFIG=str(tmp_path / "gone.yaml"))
    )

    assert "gone.yaml" in line


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("bogus",), "No such command"),
        (("status", "--bogus"), "No such option"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], complaint: str) -> None:
    result = run_factory(*args, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert complaint in result.stderr
    assert args[-1] in result.stderr
    assert "Usage: factory" in result.stderr


def test_version_comes_from_the_package(tmp_path: Path) -> None:
    result = run_factory("--version", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"factory, version {__version__}"


def test_down_without_yes_and_without_terminal_refuses(tmp_path: Path) -> None:
    result = run_factory("down", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "without -y" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("address", "reason", "exit_code"),
    [("127.0.0.1:1", "cannot reach Ray at 127.0.0.1:1", 1), ("nonsense", "is not host:port", 2)],
)
def test_unreachable_or_malformed_ray_address_fails_fast_with_one_line(
    tmp_path: Path, address: str, reason: str, exit_code: int
) -> None:
    result = run_factory("status", "--address", address, cwd=tmp_path)

    assert result.returncode == exit_code
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and reason in lines[0]
    assert "--address" in lines[0]


def test_a_dead_head_still_recorded_by_ray_is_no_cluster_not_a_hang(tmp_path: Path) -> None:
    # A head killed without `ray stop` leaves Ray's record behind; Ray's own "auto" retries it for ever.
    if ray_compat.local_gcs_addresses():
        pytest.skip("a Ray runs on this machine: Ray's 'auto' would take it (the case below covers the rule)")
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")

    result = run_factory("status", cwd=tmp_path, RAY_TMPDIR=str(ray_tmp))

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no Ray cluster is running on this machine" in result.stderr and "factory up" in result.stderr


@pytest.mark.parametrize(("record", "gcs_processes", "refused"), [
    ("127.0.0.1:1", frozenset(), True),  # nothing answers and no Ray runs here: no cluster
    ("127.0.0.1:1", frozenset({"127.0.0.1:6380"}), False),  # Ray's "auto" takes the one that runs
    (None, frozenset(), False),  # no record: Ray decides (it finds none)
])
def test_only_a_dead_record_ray_would_retry_is_refused(monkeypatch: pytest.MonkeyPatch, record: str | None,
                                                       gcs_processes: frozenset[str], refused: bool) -> None:
    monkeypatch.setattr(ray_compat, "recorded_local_address", lambda: record)
    monkeypatch.setattr(ray_compat, "local_gcs_addresses", lambda: gcs_processes)
    if refused:
        with pytest.raises(ConnectionError, match="127.0.0.1:1"):
            _refuse_a_dead_recorded_head()
    else:
        _refuse_a_dead_recorded_head()


def test_dashboard_address_is_refused_with_the_right_hint(tmp_path: Path) -> None:
    result = run_factory("status", "--address", "http://127.0.0.1:8265", cwd=tmp_path)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "dashboard" in lines[0] and "6379" in lines[0]


def test_config_path_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()

    line = assert_one_line_error(run_factory("status", "--config", "configs", cwd=tmp_path))

    assert "cannot read config file configs" in line


def test_down_on_an_unreachable_named_cluster_fails_instead_of_doing_nothing(tmp_path: Path) -> None:
    result = run_factory("down", "-y", "--address", "127.0.0.1:1", cwd=tmp_path)

    assert result.returncode == 1
    assert "cannot reach Ray at 127.0.0.1:1" in result.stderr
    assert "nothing to do" not in result.stdout


def test_up_with_a_bad_price_file_names_file_and_line_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text(
        "timestamp,price_per_mwh\n2024-07-01T00:00Z,10\n2024-07-01T01:00Z,ten\n")
    (tmp_path / "f.yaml").write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "prices: {source: trace, trace: {paths: [prices.csv]}}\n")

    line = assert_one_line_error(run_factory("up", "--config", "f.yaml", cwd=tmp_path))

    assert f"{tmp_path / 'prices.csv'} line 3: 'ten' in column 'price_per_mwh' is not a number" in line
    assert not (tmp_path / "state").exists()  # refused before a cluster or a store was touched


def test_a_price_source_without_its_settings_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("prices: {source: http}\n")

    line = assert_one_line_error(run_factory("up", "--config", "f.yaml", cwd=tmp_path))

    assert "source 'http' needs http.url" in line
