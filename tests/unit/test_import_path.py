"""The one import-path loader (`factory.import_path`), and that no other module imports by name."""

from __future__ import annotations

import json
import os.path
from pathlib import Path

import pytest

from factory.errors import ConfigError, FactoryError
from factory.import_path import check_import_path, load_object, split_import_path

SOURCE = Path(__file__).resolve().parents[2]


def test_a_path_is_a_dotted_module_a_colon_and_a_possibly_dotted_name() -> None:
    assert split_import_path("os.path:join") == ("os.path", ["join"])
    assert split_import_path("pkg.mod:Class.method") == ("pkg.mod", ["Class", "method"])
    assert load_object("os.path:join") is os.path.join
    assert load_object("json:JSONDecoder.decode") is json.JSONDecoder.decode


@pytest.mark.parametrize(("path", "reason"), [
    ("os.path.join", "no ':' before the function"),
    ("a:b:c", "'b:c' after ':' is not a Python name"),
    ("my-pkg:f", "'my-pkg' is not a module path"),
    (".m:f", "'.m' is not a module path"),
])
def test_a_malformed_path_is_one_line_naming_it_and_the_form(path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_import_path(path, what="train_loop", error=ConfigError)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"train_loop {path!r} is not an import path: {reason}")
    assert "write module.path:function" in message


def test_a_near_miss_names_the_closest_attribute() -> None:
    with pytest.raises(FactoryError) as caught:
        load_object("json:dumpz", what="predictor")

    assert str(caught.value) == ("predictor 'json:dumpz': 'json' has no attribute 'dumpz', "
                                 "did you mean 'dump'?")


def test_no_other_source_module_imports_by_name() -> None:
    users = sorted(str(path.relative_to(SOURCE)) for package in ("factory", "actors", "deployments")
                   for path in (SOURCE / package).rglob("*.py") if "import_module(" in path.read_text())
    assert users == ["factory/import_path.py"]
