"""Ray Tune search spaces written as plain YAML: constants, nested mappings and tagged samplers.

Nomenclature:
  tagged sampler -- a mapping with exactly one key naming a distribution, e.g.
                    `{loguniform: [1.0e-4, 1.0e-1]}`. The tags (with Ray Tune's meaning):
                      uniform:     [low, high]    a float drawn uniformly, low < high
                      loguniform:  [low, high]    a float uniform in log space, 0 < low < high
                      randint:     [low, high]    an integer, low <= x < high (high excluded, as in Ray Tune)
                      choice:      [a, b, ...]    one of the values
                      grid_search: [a, b, ...]    every value (multiplies the trials by its length)
  constant       -- any other value; passed to every trial unchanged.
  nested space   -- a mapping that is not a tagged sampler; its values are read the same way.

Invariants:
  * `check_search_space` accepts exactly what `to_tune_space` can convert; specs are checked at load
    time, so conversion at submission cannot fail on a loaded spec.
  * A one-key mapping whose key is close to a tag (`logunifrom`) is an error, not a constant, so a typo
    never silently turns a sweep into a fixed value.
  * Ray is imported only inside `to_tune_space`, so specs load without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factory.suggest import did_you_mean

SAMPLER_TAGS = ("uniform", "loguniform", "randint", "choice", "grid_search")


def check_search_space(space: Mapping[str, Any], path: str = "") -> None:
    """Raise `ValueError` naming the key if `space` holds a malformed tagged sampler."""
    if not space:
        raise ValueError("must name at least one parameter to search over")
    for key, value in space.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise ValueError(f"key {key!r}: parameter names must be strings")
        tag = _sampler_tag(value, where)
        if tag is not None:
            _check_sampler(tag, value[tag], where)
        elif isinstance(value, Mapping) and value:
            check_search_space(value, where)


def to_tune_space(search_space: Mapping[str, Any]) -> dict[str, Any]:
    """The `param_space` for `ray.tune.Tuner`: tagged samplers become `ray.tune` sampling objects.

    Raises `ValueError` on a malformed space (a loaded spec's space has already been checked).
    """
    check_search_space(search_space)
    from ray import tune  # Ray is heavy; spec loading and validation must not need it

    builders = {
        "uniform": lambda args: tune.uniform(*args),
        "loguniform": lambda args: tune.loguniform(*args),
        "randint": lambda args: tune.randint(*args),
        "choice": lambda args: tune.choice(list(args)),
        "grid_search": lambda args: tune.grid_search(list(args)),
    }

    def convert(space: Mapping[str, Any]) -> dict[str, Any]:
        converted: dict[str, Any] = {}
        for key, value in space.items():
            tag = _sampler_tag(value, key)
            if tag is not None:
                converted[key] = builders[tag](value[tag])
            elif isinstance(value, Mapping) and value:
                converted[key] = convert(value)
            else:
                converted[key] = value
        return converted

    return convert(search_space)


def _sampler_tag(value: Any, where: str) -> str | None:
    """The tag if `value` is a tagged sampler, None if it is a constant or a nested space."""
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    (key,) = value
    if key in SAMPLER_TAGS:
        return key
    hint = did_you_mean(str(key), SAMPLER_TAGS, cutoff=0.75)
    if hint:
        raise ValueError(f"key '{where}': unknown sampler '{key}'{hint}")
    return None


def _check_sampler(tag: str, args: Any, where: str) -> None:
    if not isinstance(args, list | tuple):
        raise ValueError(f"key '{where}': {tag} takes a list, e.g. {_EXAMPLES[tag]} (got {args!r})")
    if tag in ("choice", "grid_search"):
        if not args:
            raise ValueError(f"key '{where}': {tag} needs at least one value")
        return
    if len(args) != 2 or not all(_is_number(arg) for arg in args):
        if any(isinstance(arg, str) and _parses_as_float(arg) for arg in args):
            raise ValueError(f"key '{where}': {tag} bounds are numbers, but YAML reads {list(args)!r} as "
                             "text; write exponents with a dot, e.g. 1.0e-4 rather than 1e-4")
        raise ValueError(f"key '{where}': {tag} takes [low, high], e.g. {_EXAMPLES[tag]} "
                         f"(got {list(args)!r})")
    low, high = args
    if tag == "randint" and not all(isinstance(arg, int) for arg in args):
        raise ValueError(f"key '{where}': randint bounds must be integers (got {list(args)!r})")
    if not low < high:
        raise ValueError(f"key '{where}': {tag} needs low < high (got {list(args)!r})")
    if tag == "loguniform" and low <= 0:
        raise ValueError(f"key '{where}': loguniform needs 0 < low (got {list(args)!r})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_EXAMPLES = {
    "uniform": "{uniform: [0.0, 0.5]}",
    "loguniform": "{loguniform: [1.0e-4, 1.0e-1]}",
    "randint": "{randint: [16, 257]}",
    "choice": "{choice: [32, 64, 128]}",
    "grid_search": "{grid_search: [1, 2, 3]}",
}
