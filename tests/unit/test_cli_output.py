"""How the CLI prints: `--json` is standard JSON (a number that is not finite is null), tables align."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from factory.cli.output import finite, json_text
from factory.cli.render import table

CLI = Path(__file__).resolve().parents[2] / "factory" / "cli"
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=4),
                      max_leaves=20)


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output")
    return json.loads(text, parse_constant=refuse)


@given(values)
def test_any_value_prints_as_strict_json_with_its_finite_numbers_intact(value: object) -> None:
    parsed = _strict(json_text(value, indent=2))
    assert parsed == json.loads(json.dumps(finite(value)))


def test_non_finite_numbers_are_null_at_any_depth() -> None:
    value = {"cost": math.nan, "earliest_finish_s": math.inf, "rows": [(1.5, -math.inf)], "ok": 2.0}
    assert _strict(json_text(value)) == {"cost": None, "earliest_finish_s": None, "rows": [[1.5, None]],
                                         "ok": 2.0}


def test_every_cli_json_output_goes_through_json_text() -> None:
    direct = sorted(path.name for path in CLI.glob("*.py")
                    if path.name != "output.py" and "json.dumps(" in path.read_text())
    assert direct == []


def test_a_table_without_rows_is_its_header() -> None:
    # The demo lists the registered models: none, when every registration failed.
    assert table(["name", "versions"], []) == "NAME  VERSIONS"
    assert table(["name", "n"], [["reg", 2], [None, 10]]) == "NAME  N\nreg   2\n-     10"
