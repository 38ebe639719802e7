"""`parse_yaml`: every text it cannot read is one `YamlTextError`, never a traceback."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factory.yaml_text import MAX_DEPTH, YamlTextError, parse_yaml


def test_a_document_reads_as_yaml_does() -> None:
    assert parse_yaml("a: 1\nb: [x, {c: 2.5}]\n") == {"a": 1, "b": ["x", {"c": 2.5}]}
    assert parse_yaml("") is None


@pytest.mark.parametrize(("text", "says"), [
    ("port: 2025-13-01", "quote it"),              # looks like a date, is none: ValueError inside PyYAML
    ("a: [1, 2", "line"),                          # a syntax error has its line
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested"),
    ("a:\n" + "".join("  " * d + "b:\n" for d in range(1, 3000)), "nested"),  # block style recurses too
])
def test_what_yaml_cannot_read_is_one_line(text: str, says: str) -> None:
    with pytest.raises(YamlTextError) as info:
        parse_yaml(text)
    assert says in str(info.value) and "\n" not in str(info.value)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab:-[]{}'\"#&*!|>%@`,?\n 0123456789.e"), max_size=60))
def test_any_text_reads_or_is_a_yaml_text_error(text: str) -> None:
    try:
        parse_yaml(text)
    except YamlTextError as exc:
        assert "\n" not in str(exc)


def test_the_reader_is_safe() -> None:
    with pytest.raises(YamlTextError):
        parse_yaml("!!python/object/apply:os.system ['true']")
