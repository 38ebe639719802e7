"""Generated bad input, 1,000+ examples in all: config files, environment overrides and job specs.

What a user may type never ends in a traceback: each input either loads or is one error line that
names where it came from (the file or the variable) and what is wrong with it (the field, or the YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory.config import FactoryConfig, _section_model, load_config
from factory.errors import ConfigError
from factory.jobs.spec import JOB_KINDS, JobSpecError, parse_job_spec

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# What an error says about the input: a field, an unknown key, or YAML it could not read.
NAMES_WHAT = ("field '", "unknown field", "invalid YAML", "has no sub-fields", "expected a mapping")


def _leaf_paths(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        section = _section_model(info.annotation)
        paths.extend(_leaf_paths(section, (*prefix, name)) if section else [(*prefix, name)])
    return paths


CONFIG_FIELDS = _leaf_paths(FactoryConfig)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["2025-13-01", "1e999", "-inf", ".nan", "0x1F", "yes", "~", "[", "{a: 1", "12h", "-1"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                      st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _one_line(message: str) -> None:
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message


@FUZZ
@given(path=st.sampled_from(CONFIG_FIELDS), text=st.one_of(
    st.text(max_size=20), SCALARS.map(lambda v: yaml.safe_dump(v).strip().removesuffix("...").strip())))
def test_an_environment_override_loads_or_names_its_variable(tmp_path: Path, path: tuple[str, ...],
                                                               text: str) -> None:
    variable = "FACTORY_" + "__".join(part.upper() for part in path)
    try:
        load_config(None, env={variable: text}, cwd=tmp_path)
    except ConfigError as exc:
        _one_line(str(exc))
        assert variable in str(exc) and any(what in str(exc) for what in NAMES_WHAT), str(exc)


@FUZZ
@given(raw=st.one_of(
    st.dictionaries(st.sampled_from(CONFIG_FIELDS), VALUES, max_size=4).map(
        lambda flat: _nest({path: value for path, value in flat.items()})),
    st.text(max_size=80)))
def test_a_config_file_loads_or_names_the_file_and_what_is_wrong(tmp_path: Path, raw: Any) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    try:
        load_config(path, env={}, cwd=tmp_path)
    except ConfigError as exc:
        _one_line(str(exc))
        assert "fuzz.yaml" in str(exc) and any(what in str(exc) for what in NAMES_WHAT), str(exc)


SPEC_KEYS = sorted({name for model in JOB_KINDS.values() for name in model.model_fields} | {"nonsense"})


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(SPEC_KEYS), VALUES, max_size=8),
       kind=st.sampled_from([*JOB_KINDS, "bogus", None]))
def test_a_job_spec_loads_or_names_a_field(spec: dict[str, Any], kind: str | None) -> None:
    if kind is not None:
        spec = {**spec, "kind": kind}
    try:
        parse_job_spec(spec, "fuzz-spec.yaml")
    except JobSpecError as exc:
        _one_line(str(exc))
        assert "fuzz-spec.yaml" in str(exc), str(exc)


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """{("a", "b"): 1} -> {"a": {"b": 1}}."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return nested


@pytest.mark.parametrize("text", ["2025-13-01", "[[[[", "{a: [1, 2}", "!!python/name:os.system", ":"])
def test_awkward_environment_values_are_config_errors_or_load(tmp_path: Path, text: str) -> None:
    try:
        load_config(None, env={"FACTORY_SERVING__HTTP_PORT": text}, cwd=tmp_path)
    except ConfigError as exc:
        assert "FACTORY_SERVING__HTTP_PORT" in str(exc) and "serving.http_port" in str(exc)
    else:
        pytest.fail(f"{text!r} loaded as a port")
