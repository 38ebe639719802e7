"""The one did-you-mean helper (`factory.suggest`), and that no other module guesses on its own."""

from __future__ import annotations

from pathlib import Path

from factory.suggest import closest, did_you_mean, unknown_field

SOURCE = Path(__file__).resolve().parents[2]


def test_a_close_word_is_suggested_and_a_far_one_is_not() -> None:
    assert closest("epohcs", ["epochs", "lr"]) == "epochs"
    assert did_you_mean("epohcs", ["epochs", "lr"]) == ", did you mean 'epochs'?"
    assert did_you_mean("zzz", ["epochs", "lr"]) == ""
    assert did_you_mean("zzz", ["epochs"], otherwise="; known: epochs") == "; known: epochs"
    assert did_you_mean("pip", ["pip", "conda"], cutoff=0.8, lead="; ") == "; did you mean 'pip'?"


def test_an_unknown_field_names_the_closest_field_or_lists_them_all() -> None:
    assert unknown_field("prce", ["price", "carbon"], " in section 'prices'") == \
        "unknown field 'prce' in section 'prices', did you mean 'price'?"
    assert unknown_field("xyz", ["price", "carbon"]) == "unknown field 'xyz'; known fields: price, carbon"


def test_no_other_source_module_calls_difflib() -> None:
    users = sorted(str(path.relative_to(SOURCE)) for package in ("factory", "actors", "deployments")
                   for path in (SOURCE / package).rglob("*.py") if "difflib" in path.read_text())
    assert users == ["factory/suggest.py"]
