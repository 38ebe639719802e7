"""`load_config`: defaults, the repo's config file, env overrides, and one-line errors.

Every test passes `env` explicitly so the real environment never leaks in, and a `cwd` under
`tmp_path` so a stray `configs/factory.yaml` in the working dir cannot change the outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from factory.config import FactoryConfig, load_config
from factory.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "factory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: str | Path | None, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """The message of the `ConfigError` loading must raise; fails the test if it loads."""
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env, cwd=tmp_path)
    message = str(info.value)
    assert "\n" not in message, f"a config error must be one line: {message!r}"
    return message


# --- loading -----------------------------------------------------------------------------------


def test_defaults_load_without_a_config_file(tmp_path: Path) -> None:
    config = load_config(None, env={}, cwd=tmp_path)

    assert config == FactoryConfig(state_dir=tmp_path.resolve() / ".factory")
    assert config.clock.mode == "wall"
    assert config.telemetry.interval_s == 1.0


def test_default_config_file_under_cwd_is_picked_up(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "scheduler: {interval_s: 42}\n")

    assert load_config(None, env={}, cwd=tmp_path).scheduler.interval_s == 42


def test_repo_config_file_loads_cleanly() -> None:
    config = load_config(REPO_ROOT / "configs" / "factory.yaml", env={}, cwd=REPO_ROOT)

    assert config.state_dir == (REPO_ROOT / ".factory").resolve()
    assert config.clock.mode == "wall"
    assert config.clock.speed_factor == 1800


def test_repo_config_is_found_by_default_from_the_repo_root() -> None:
    from_file = load_config(None, env={}, cwd=REPO_ROOT)

    assert from_file == load_config(REPO_ROOT / "configs" / "factory.yaml", env={}, cwd=REPO_ROOT)


def test_relative_state_dir_is_made_absolute_against_cwd(tmp_path: Path) -> None:
    config_path = write(tmp_path, "state_dir: data/state\n")

    config = load_config(config_path, env={}, cwd=tmp_path)

    assert config.state_dir.is_absolute()
    assert config.state_dir == tmp_path.resolve() / "data" / "state"
    assert config.store_path == tmp_path.resolve() / "data" / "state" / "factory.db"


def test_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    config_path = write(tmp_path, f"state_dir: {elsewhere}\n")

    assert load_config(config_path, env={}, cwd=tmp_path / "sub").state_dir == elsewhere


def test_relative_config_path_is_read_from_cwd(tmp_path: Path) -> None:
    write(tmp_path, "scheduler: {interval_s: 7}\n", name="mine.yaml")

    assert load_config("mine.yaml", env={}, cwd=tmp_path).scheduler.interval_s == 7


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    config_path = write(tmp_path, "# nothing set\n")

    assert load_config(config_path, env={}, cwd=tmp_path) == load_config(None, env={}, cwd=tmp_path)


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_top_level_key_names_file_and_suggests(tmp_path: Path) -> None:
    config_path = write(tmp_path, "state_dirs: somewhere\n", name="bad.yaml")

    message = config_error(config_path, tmp_path)

    assert "bad.yaml" in message
    assert "'state_dirs'" in message
    assert "did you mean 'state_dir'?" in message


def test_unknown_nested_key_names_section_and_suggests(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock:\n  speed_factr: 3600\n", name="bad.yaml")

    message = config_error(config_path, tmp_path)

    assert "bad.yaml" in message
    assert "'speed_factr'" in message
    assert "'clock'" in message
    assert "did you mean 'speed_factor'?" in message


def test_unknown_key_without_a_close_match_lists_known_fields(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock:\n  zzz: 1\n")

    message = config_error(config_path, tmp_path)

    assert "'zzz'" in message
    assert "mode" in message and "speed_factor" in message and "replay_start" in message


# --- bad values --------------------------------------------------------------------------------


def test_wrong_type_names_field_path_and_value(tmp_path: Path) -> None:
    config_path = write(tmp_path, "telemetry: {interval_s: fast}\n", name="bad.yaml")

    message = config_error(config_path, tmp_path)

    assert "bad.yaml" in message
    assert "telemetry.interval_s" in message
    assert "'fast'" in message


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("telemetry: {interval_s: -1}\n", "telemetry.interval_s"),
        ("scheduler: {interval_s: 0}\n", "scheduler.interval_s"),
        ("prices: {tick_s: -0.5}\n", "prices.tick_s"),
        ("clock: {speed_factor: 0}\n", "clock.speed_factor"),
    ],
)
def test_non_positive_interval_is_rejected(tmp_path: Path, yaml_text: str, field: str) -> None:
    message = config_error(write(tmp_path, yaml_text), tmp_path)

    assert field in message
    assert "greater than 0" in message


def test_invalid_enum_value_lists_allowed_values(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "clock: {mode: fast}\n"), tmp_path)

    assert "clock.mode" in message
    assert "'wall'" in message and "'replay'" in message


def test_several_errors_are_summarised_on_one_line(tmp_path: Path) -> None:
    text = "telemetry: {interval_s: -1}\nscheduler: {interval_s: 0}\n"

    message = config_error(write(tmp_path, text), tmp_path)

    assert "telemetry.interval_s" in message
    assert "(and 1 more)" in message


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", "inf"])
def test_a_non_finite_preempt_overhead_is_refused(tmp_path: Path, value: str) -> None:
    message = config_error(write(tmp_path, f"scheduler: {{preempt_overhead_s: {value}}}\n"), tmp_path)

    assert "scheduler.preempt_overhead_s" in message and "finite" in message


def test_a_non_finite_preempt_overhead_from_the_environment_is_refused(tmp_path: Path) -> None:
    message = config_error(None, tmp_path, env={"FACTORY_SCHEDULER__PREEMPT_OVERHEAD_S": "inf"})

    assert "FACTORY_SCHEDULER__PREEMPT_OVERHEAD_S" in message and "finite" in message


def test_max_pauses_per_day_defaults_to_three_and_is_a_count(tmp_path: Path) -> None:
    assert load_config(None, env={}, cwd=tmp_path).scheduler.max_pauses_per_day == 3
    assert load_config(write(tmp_path, "scheduler: {max_pauses_per_day: 0}\n"), env={},
                       cwd=tmp_path).scheduler.max_pauses_per_day == 0
    for value, why in (("-1", "greater than or equal to 0"), ("1.5", "integer"), ("often", "integer")):
        message = config_error(write(tmp_path, f"scheduler: {{max_pauses_per_day: {value}}}\n"), tmp_path)
        assert "scheduler.max_pauses_per_day" in message and why in message


# --- unreadable or malformed files -------------------------------------------------------------


def test_missing_config_file_cannot_be_read(tmp_path: Path) -> None:
    message = config_error(tmp_path / "nope.yaml", tmp_path)

    assert "cannot read config file" in message
    assert "nope.yaml" in message


def test_directory_as_config_file_cannot_be_read(tmp_path: Path) -> None:
    directory = tmp_path / "adir"
    directory.mkdir()

    message = config_error(directory, tmp_path)

    assert "cannot read config file" in message
    assert str(directory) in message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock:\n  mode: wall\n  speed_factor: [1800\n", name="broken.yaml")

    message = config_error(config_path, tmp_path)

    assert "broken.yaml" in message
    assert "invalid YAML" in message
    assert "line 4" in message


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "- clock\n- telemetry\n", name="list.yaml"), tmp_path)

    assert "list.yaml" in message
    assert "mapping" in message


# --- clock section -----------------------------------------------------------------------------


def test_replay_mode_requires_replay_start(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, "clock: {mode: replay}\n"), tmp_path)

    assert "replay_start" in message


def test_naive_replay_start_is_utc(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock: {mode: replay, replay_start: '2024-07-01T00:00:00'}\n")

    start = load_config(config_path, env={}, cwd=tmp_path).clock.replay_start

    assert start == datetime(2024, 7, 1, tzinfo=UTC)
    assert start is not None and start.utcoffset() is not None


def test_replay_start_with_offset_keeps_the_instant(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock: {mode: replay, replay_start: '2024-07-01T02:00:00+02:00'}\n")

    start = load_config(config_path, env={}, cwd=tmp_path).clock.replay_start

    assert start == datetime(2024, 7, 1, tzinfo=UTC)


# --- environment overrides ---------------------------------------------------------------------


def test_env_overrides_a_value_from_the_file(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock: {mode: wall, speed_factor: 1800}\n")

    config = load_config(config_path, env={"FACTORY_CLOCK__SPEED_FACTOR": "3600"}, cwd=tmp_path)

    assert config.clock.speed_factor == 3600
    assert config.clock.mode == "wall"  # the rest of the section is kept


def test_env_overrides_a_top_level_field(tmp_path: Path) -> None:
    config = load_config(None, env={"FACTORY_STATE_DIR": "custom/state"}, cwd=tmp_path)

    assert config.state_dir == tmp_path.resolve() / "custom" / "state"


def test_env_can_switch_on_replay_with_its_start(tmp_path: Path) -> None:
    env = {"FACTORY_CLOCK__MODE": "replay", "FACTORY_CLOCK__REPLAY_START": "2024-07-01T00:00:00Z"}

    clock = load_config(None, env=env, cwd=tmp_path).clock

    assert clock.mode == "replay"
    assert clock.replay_start == datetime(2024, 7, 1, tzinfo=UTC)


def test_unknown_env_override_names_variable_and_suggests(tmp_path: Path) -> None:
    message = config_error(None, tmp_path, env={"FACTORY_CLOK__MODE": "replay"})

    assert "environment variable FACTORY_CLOK__MODE" in message
    assert "did you mean 'clock'" in message


def test_unknown_nested_env_override_suggests_field(tmp_path: Path) -> None:
    message = config_error(None, tmp_path, env={"FACTORY_CLOCK__SPEED_FACTR": "2"})

    assert "FACTORY_CLOCK__SPEED_FACTR" in message
    assert "did you mean 'speed_factor'" in message


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    config_path = write(tmp_path, "telemetry: {interval_s: 5}\n", name="good.yaml")

    message = config_error(config_path, tmp_path, env={"FACTORY_TELEMETRY__INTERVAL_S": "fast"})

    assert "environment variable FACTORY_TELEMETRY__INTERVAL_S" in message
    assert "telemetry.interval_s" in message
    assert "'fast'" in message
    assert "good.yaml" not in message  # the file is fine; blame the variable


def test_unrelated_env_variables_are_ignored(tmp_path: Path) -> None:
    env = {"PATH": "/bin", "FACTORYX": "1", "RAY_ADDRESS": "auto"}

    assert load_config(None, env=env, cwd=tmp_path) == load_config(None, env={}, cwd=tmp_path)


def test_factory_config_env_selects_the_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "scheduler: {interval_s: 1}\n")
    chosen = write(tmp_path, "scheduler: {interval_s: 99}\n", name="chosen.yaml")

    config = load_config(None, env={"FACTORY_CONFIG": str(chosen)}, cwd=tmp_path)

    assert config.scheduler.interval_s == 99


def test_explicit_path_wins_over_factory_config_env(tmp_path: Path) -> None:
    explicit = write(tmp_path, "scheduler: {interval_s: 3}\n", name="explicit.yaml")

    config = load_config(explicit, env={"FACTORY_CONFIG": str(tmp_path / "missing.yaml")},
                         cwd=tmp_path)

    assert config.scheduler.interval_s == 3


def test_factory_config_env_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    message = config_error(None, tmp_path, env={"FACTORY_CONFIG": "gone.yaml"})

    assert "cannot read config file" in message
    assert "gone.yaml" in message


# --- the error type and the fingerprint --------------------------------------------------------


def test_config_error_exits_with_usage_code() -> None:
    assert ConfigError.exit_code == 2
    assert ConfigError("x").exit_code == 2


def test_fingerprint_is_equal_for_equal_configs(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock: {speed_factor: 3600}\n")

    first = load_config(config_path, env={}, cwd=tmp_path)
    second = load_config(None, env={"FACTORY_CLOCK__SPEED_FACTOR": "3600"}, cwd=tmp_path)

    assert first.fingerprint() == second.fingerprint()


@pytest.mark.parametrize(
    "env",
    [
        {"FACTORY_CLOCK__SPEED_FACTOR": "3600"},
        {"FACTORY_STATE_DIR": "other"},
        {"FACTORY_SCHEDULER__POWER_BUDGET_W": "5000"},
    ],
)
def test_fingerprint_changes_when_a_field_changes(tmp_path: Path, env: dict[str, str]) -> None:
    base = load_config(None, env={}, cwd=tmp_path)

    changed = load_config(None, env=env, cwd=tmp_path)

    assert changed.fingerprint() != base.fingerprint()


def test_env_override_that_breaks_a_section_is_blamed_not_the_file(tmp_path: Path) -> None:
    config_path = write(tmp_path, "clock:\n  speed_factor: 60\n")

    message = config_error(config_path, tmp_path, env={"FACTORY_CLOCK__MODE": "replay"})

    assert "environment variable FACTORY_CLOCK__MODE" in message
    assert "replay_start" in message


def test_errors_name_the_file_as_the_user_gave_it(tmp_path: Path) -> None:
    write(tmp_path, "clock: [\n", name="broken.yaml")

    message = config_error("broken.yaml", tmp_path)

    assert message.startswith("broken.yaml: invalid YAML")


@pytest.mark.parametrize(("variable", "field"), [("FACTORY_STATE_DIR", "state_dir"),
                                                ("FACTORY_REGISTRY__STORAGE_URI", "registry.storage_uri")])
def test_a_path_with_a_nul_character_is_one_line_naming_the_variable(tmp_path: Path, variable: str,
                                                                      field: str) -> None:
    # Found by tests/unit/test_input_fuzz.py: pathlib raised a raw ValueError ("embedded null byte").
    with pytest.raises(ConfigError, match=rf"^environment variable {variable}: field '{field}': "
                                          r"a path cannot contain a NUL character"):
        load_config(env={variable: "state\x00dir"}, cwd=tmp_path)
