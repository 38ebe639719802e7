"""Predictors: the code that turns a registered version's files into answers.

A version is served by the class its `serving.predictor` names (`module.path:Class`, set at
registration: `factory register --predictor`, or a job's `predictor` field). The class:

    class MyPredictor:
        input_schema = MyInput             # a pydantic model: one request's JSON body
        def __init__(self, artifact, device: str): ...   # artifact: what `client.load` returns
        def predict(self, inputs: list[MyInput]) -> list[Any]: ...   # one JSON-able answer each

`artifact` is the loaded version: a state_dict (dict of tensors), a `ray.train.Checkpoint` or the
`Path` of a directory. `device` is "cuda" when the replica holds a GPU, else "cpu". `predict` gets a
batch (requests gathered by `@serve.batch`) and returns one answer per input, in order; an exception
fails that batch's requests with a 500 naming an error id.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from factory.errors import FactoryError
from factory.import_path import PREDICTOR_FORM, load_object
from factory.import_path import check_import_path as _check


def check_import_path(text: str) -> str:
    """`text` if it reads `module.path:Class`, else a one-line error."""
    return _check(text, "predictor", *PREDICTOR_FORM)


def load_predictor_class(import_path: str) -> type:
    """Import the predictor class `module.path:Class`; one-line errors for what is wrong with it."""
    cls = load_object(import_path, "predictor", *PREDICTOR_FORM)
    input_schema(cls, import_path)
    if not callable(getattr(cls, "predict", None)):
        raise FactoryError(f"predictor {import_path!r} has no predict(self, inputs) method")
    return cls


def input_schema(cls: Any, import_path: str = "") -> type[BaseModel]:
    """The pydantic model a predictor declares for one request's body."""
    schema = getattr(cls, "input_schema", None)
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise FactoryError(f"predictor {import_path or cls!r} must declare input_schema, a pydantic "
                           "model of one request's JSON body")
    return schema
