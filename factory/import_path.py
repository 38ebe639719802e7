"""Import paths: the one grammar and the one loader for user code the factory imports by name.

Nomenclature:
  import path -- "package.module:name": a dotted module path, one ':', then a Python name, which may
                 itself be dotted ("module:Class.method"). Job specs name their training loop this way
                 (`train_loop`), registered versions the class that serves them (`serving.predictor`).

Invariants:
  * `split_import_path` checks the grammar without importing anything (specs are checked at load time
    on the machine that submits, which may lack the user's packages).
  * Every error is one line that names the path as written (`what 'path'`) and, for a near miss of an
    attribute, the closest existing name; the caller picks the `FactoryError` subclass raised.
"""

from __future__ import annotations

import importlib
from typing import Any

from factory.errors import FactoryError, summary_line
from factory.suggest import did_you_mean

# How messages spell a predictor's path (`placeholder`, `example`); a training loop's is the default.
PREDICTOR_FORM = ("ClassName", "factory.examples.regression:RegressionPredictor")


def split_import_path(path: str, placeholder: str = "function",
                      example: str = "mypkg.train:train_loop_per_worker") -> tuple[str, list[str]]:
    """(module, attribute names) of "package.module:name"; a `ValueError` saying what is wrong.

    `placeholder` and `example` are how the message spells the expected form ("module.path:function").
    """
    hint = f"write module.path:{placeholder}, e.g. {example}"
    if not isinstance(path, str):
        raise ValueError(f"{path!r} is not text; {hint}")
    module, colon, attribute = path.partition(":")
    if not colon:
        raise ValueError(f"no ':' before the {placeholder}; {hint}")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"'{module}' is not a module path (dotted Python names); {hint}")
    if not attribute or not all(part.isidentifier() for part in attribute.split(".")):
        raise ValueError(f"'{attribute}' after ':' is not a Python name; {hint}")
    return module, attribute.split(".")


def check_import_path(path: str, what: str = "import path", placeholder: str = "function",
                      example: str = "mypkg.train:train_loop_per_worker",
                      error: type[FactoryError] = FactoryError) -> str:
    """`path` if it is well-formed; else `error` saying "`what` 'path' is not an import path: why"."""
    try:
        split_import_path(path, placeholder, example)
    except ValueError as exc:
        raise error(f"{what} {path!r} is not an import path: {exc}") from None
    return path


def load_object(path: str, what: str = "import path", placeholder: str = "function",
                example: str = "mypkg.train:train_loop_per_worker",
                error: type[FactoryError] = FactoryError) -> Any:
    """Import and return the object at "package.module:name"; one-line `error`s naming `path`."""
    module_name, attributes = split_import_path(check_import_path(path, what, placeholder, example, error))
    prefix = f"{what} {path!r}"
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise error(f"{prefix}: no module named '{exc.name}'; "
                        "check the spelling and that its package is installed where Ray runs it") from None
        raise error(f"{prefix}: importing '{module_name}' failed: {summary_line(exc, last=False)}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module fails as it loads: one line, cause kept
        raise error(f"{prefix}: importing '{module_name}' failed: "
                    f"{type(exc).__name__}: {summary_line(exc, last=False)}") from exc
    owner = module_name
    for attribute in attributes:
        if not hasattr(target, attribute):
            hint = did_you_mean(attribute, [name for name in dir(target) if not name.startswith("_")])
            raise error(f"{prefix}: '{owner}' has no attribute '{attribute}'{hint}")
        target = getattr(target, attribute)
        owner = f"{owner}.{attribute}"
    return target
