"""`JobSpec`: one validated description of a live training job, from YAML or a Python dict.

Nomenclature:
  kind        -- what runs: `train` (Ray Train's TorchTrainer runs `train_loop` on num_workers
                 workers), `tune` (a Ray Tune sweep of `train_loop` as a function trainable; each
                 trial is one worker, so at most num_workers trials run at once) or `command` (a shell
                 `entrypoint` submitted as a Ray Job).
  import path -- "package.module:function" (the part after ':' may be dotted, "module:Class.method").
  deadline    -- when the job must have finished: ISO 8601 with a UTC offset
                 ("2025-07-01T18:00:00+02:00", "...Z") or a duration from submission ("12h", "30m",
                 "90s", "2d", "1h30m"). Kept as written; `resolve_deadline` turns it into epoch
                 seconds at submission, so a relative deadline's spec hashes the same every time.
  source      -- how errors name where a spec came from: the file as the user gave it, else "job spec".

Invariants:
  * A spec that loads is well-formed: names, import paths, deadlines and search spaces are checked
    at load time; only what depends on the clock and the cluster (`factory.jobs.submission`) is left.
  * Unknown keys are rejected with the nearest known name; a key of another kind names that kind.
  * Every user-facing error is a `JobSpecError` of one line naming the source, the field path and
    the fix. Nothing is queued by this module: acting on a rejection is the caller's job.
  * Specs are frozen; `spec_hash` is a function of the fields alone (all of them, defaults included).
  * Resources are counted per worker: a job holds num_workers x gpus_per_worker GPUs and
    num_workers x cpus_per_worker CPUs, and each worker sits on one node.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from factory.errors import ConfigError
from factory.import_path import PREDICTOR_FORM, load_object, split_import_path
from factory.jobs.search_space import check_search_space, to_tune_space
from factory.suggest import did_you_mean, unknown_field
from factory.yaml_text import YamlTextError, parse_yaml

JobKind = Literal["train", "tune", "command"]
NAME_MAX_CHARS = 64
DEFAULT_SOURCE = "job spec"

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DURATION_RE = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
# Keys Ray's runtime_env knows; others pass through (Ray plugins add their own) unless close to one of these.
_RUNTIME_ENV_KEYS = (
    "working_dir", "py_modules", "py_executable", "excludes", "pip", "uv", "conda", "env_vars", "container",
    "image_uri", "config", "java_jars", "nsight", "rocprof_sys", "mpi", "worker_process_setup_hook",
)
_REQUIRED_HINTS = {
    "name": "a job name such as 'resnet-sweep'",
    "estimated_duration_s": "the expected run time in seconds, used to plan around the deadline",
    "train_loop": "an import path 'package.module:function'",
    "entrypoint": "a shell command, e.g. \"python train.py\"",
    "tune": "a section with search_space, num_samples, metric and mode",
}


class JobSpecError(ConfigError):
    """A job spec is invalid or cannot be met; the message is one line naming the source and field."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.splitlines()))


# --- models -------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TuneSettings(_Section):
    """The `tune:` section of a `tune` job: what to sample, how many trials, what to optimise."""

    search_space: dict[str, Any] = Field(
        description="Parameters to sample per trial (see `factory.jobs.search_space`); a trial's config "
        "is the job's `config` with these keys set."
    )
    num_samples: int = Field(ge=1, description="Trials to run (times the size of any grid_search).")
    metric: str = Field(min_length=1, description="Name of the reported metric to optimise.")
    mode: Literal["min", "max"]
    scheduler: Literal["asha", "fifo"] = Field(
        "asha", description="Trial scheduler; asha stops bad trials early."
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials at once; unset: as many as num_workers (each trial is one worker)."
    )

    @field_validator("search_space")
    @classmethod
    def _well_formed_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_search_space(value)
        return value


class JobSpec(_Section):
    """Fields common to every kind. `JobSpec.model_validate(data)` returns the subclass of `data['kind']`.

    Construct a kind directly (`TrainJobSpec(...)`) or validate a mapping; `JobSpec(...)` itself is refused.
    """

    name: str = Field(description=f"Job name: letters, digits, '_', '.', '-'; at most {NAME_MAX_CHARS}.")
    team: str = Field("default", description="Team charged for the job (quotas, reports).")
    kind: JobKind
    num_workers: int = Field(1, ge=1, description="Workers (tune: trials at once), each on one node.")
    gpus_per_worker: int = Field(0, ge=0, description="GPUs of each worker; 0: a CPU-only job.")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs of each worker.")
    estimated_duration_s: float = Field(gt=0, description="Expected run time in seconds once started.")
    deadline: str | None = Field(
        None, description="ISO 8601 with offset, or a duration from submission ('12h', '1h30m'); unset: none."
    )
    priority: int = Field(0, description="Higher runs first when jobs compete (policy `priority`).")
    preemptible: bool = Field(
        True, description="The scheduler may pause the job for cheaper hours (train and tune: a command has "
        "no checkpoint to resume from, so it is never paused)."
    )
    max_price_per_mwh: float | None = Field(
        None, description="Run only while the grid price is at or below this (price per MWh); unset: any."
    )
    max_carbon_g_per_kwh: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Start only while the grid's carbon intensity is at or "
        "below this (gCO2/kWh), unless waiting longer would miss the deadline; unset: any."
    )
    max_retries: int = Field(0, ge=0, description="Restarts after a failure (preemptions do not count).")
    register_as: str | None = Field(None, description="Register the trained model under this name.")
    dataset: str | None = Field(None, description="The data the job trains on (a path or URI), recorded in "
                                "the model's lineage with a fingerprint when local.")
    parent_model: str | None = Field(None, description="NAME:VERSION or NAME@ALIAS this job fine-tunes, "
                                     "recorded as the model's parent.")
    predictor: str | None = Field(None, description="module.path:Class that serves the registered model "
                                  "(`factory deploy`), e.g. factory.examples.regression:RegressionPredictor.")
    config: dict[str, Any] = Field(default_factory=dict, description="Passed to the user's code as is.")

    def __init__(self, /, **data: Any) -> None:
        if type(self) is JobSpec:
            raise TypeError("JobSpec is the base of the kinds: use JobSpec.model_validate(mapping), "
                            "TrainJobSpec(...), TuneJobSpec(...) or CommandJobSpec(...)")
        super().__init__(**data)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_on_kind(cls, data: Any, handler: ModelWrapValidatorHandler[JobSpec]) -> JobSpec:
        if cls is not JobSpec:
            return handler(data)
        if isinstance(data, JobSpec):
            return data
        if not isinstance(data, Mapping):
            raise _validation_error("dict_type", (), data)
        kind = data.get("kind")
        if isinstance(kind, str) and kind in JOB_KINDS:
            return JOB_KINDS[kind].model_validate(data)
        if "kind" not in data:
            raise _validation_error("missing", ("kind",), data)
        raise _validation_error("literal_error", ("kind",), kind,
                                expected="'train', 'tune' or 'command'")

    @field_validator("name", "team", "register_as")
    @classmethod
    def _safe_identifier(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > NAME_MAX_CHARS or not _NAME_RE.fullmatch(value)):
            raise ValueError(f"must be 1-{NAME_MAX_CHARS} letters, digits, '_', '.' or '-', "
                             "starting with a letter, digit or '_'")
        return value

    @field_validator("parent_model")
    @classmethod
    def _model_reference(cls, value: str | None) -> str | None:
        if value is not None:
            from factory.registry.refs import ModelRefError, parse_ref

            try:
                parse_ref(value)
            except ModelRefError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("predictor")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None:
            split_import_path(value, *PREDICTOR_FORM)
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _parseable_deadline(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, datetime):  # YAML reads unquoted timestamps as datetimes
            if value.tzinfo is None:
                raise ValueError(_NAIVE_DEADLINE)
            return value.isoformat()
        if isinstance(value, date):
            raise ValueError("a date without a time; write e.g. 2025-07-01T00:00:00+00:00 or a duration such "
                             "as '12h'")
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"a bare number is ambiguous; write '{value}s' for seconds from submission or "
                             "an ISO 8601 time with an offset")
        if isinstance(value, str):
            _parse_deadline(value)
            return value.strip()
        return value  # pydantic reports the wrong type

    @property
    def total_gpus(self) -> int:
        """GPUs the job holds while it runs: num_workers x gpus_per_worker."""
        return self.num_workers * self.gpus_per_worker

    @property
    def total_cpus(self) -> int:
        """CPUs the job holds while it runs: num_workers x cpus_per_worker."""
        return self.num_workers * self.cpus_per_worker


class _ImportPathSpec(JobSpec):
    train_loop: str = Field(description="Import path 'package.module:function' of the user's loop.")

    @field_validator("train_loop")
    @classmethod
    def _import_path_syntax(cls, value: str) -> str:
        split_import_path(value)
        return value


class TrainJobSpec(_ImportPathSpec):
    """`kind: train`: Ray Train's TorchTrainer runs `train_loop_per_worker(config)` on every worker."""

    kind: Literal["train"] = "train"


class TuneJobSpec(_ImportPathSpec):
    """`kind: tune`: a Ray Tune sweep of the function trainable `train_loop(config)`."""

    kind: Literal["tune"] = "tune"
    tune: TuneSettings


class CommandJobSpec(JobSpec):
    """`kind: command`: a shell `entrypoint` submitted as a Ray Job, with an optional runtime_env."""

    kind: Literal["command"] = "command"
    entrypoint: str = Field(min_length=1, description="Shell command run by the Ray Job.")
    runtime_env: dict[str, Any] | None = Field(
        None, description="Ray runtime_env: env_vars, working_dir, pip, ... (passed to Ray as is)."
    )

    @field_validator("entrypoint")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a shell command, e.g. \"python train.py\"")
        return value

    @field_validator("register_as")
    @classmethod
    def _no_model_to_register(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("a command job leaves no checkpoint to register; register its output with "
                             "`factory register PATH --name NAME`, or use kind: train")
        return value

    @field_validator("predictor")
    @classmethod
    def _nothing_to_serve(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("a command job registers no model to serve; remove it")
        return value

    @field_validator("parent_model")
    @classmethod
    def _parent_of_nothing(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("only a train or tune job's model has a parent; remove it")
        return value

    @field_validator("runtime_env")
    @classmethod
    def _plausible_runtime_env(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in value or {}:
            hint = did_you_mean(str(key), _RUNTIME_ENV_KEYS, cutoff=0.8)
            if key not in _RUNTIME_ENV_KEYS and hint:
                raise ValueError(f"unknown key '{key}'{hint}")
        env_vars = (value or {}).get("env_vars")
        if env_vars is not None:
            if not isinstance(env_vars, Mapping):
                raise ValueError("env_vars must be a mapping of names to strings")
            for name, text in env_vars.items():
                if not isinstance(text, str):
                    raise ValueError(f"env_vars.{name} must be a string; quote it ({name}: '{text}')")
        return value


JOB_KINDS: dict[str, type[JobSpec]] = {"train": TrainJobSpec, "tune": TuneJobSpec, "command": CommandJobSpec}


def _validation_error(error_type: str, loc: tuple[str, ...], value: Any, **ctx: Any) -> ValidationError:
    """A pydantic error as `JobSpec.model_validate` raises it, for the checks made before a kind is known."""
    detail = InitErrorDetails(type=error_type, loc=loc, input=value)
    if ctx:
        detail["ctx"] = ctx
    return ValidationError.from_exception_data(JobSpec.__name__, [detail])


# --- loading ------------------------------------------------------------------------------------


def load_job_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate the YAML job spec at `path`; raise `JobSpecError` naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read job spec {source}: {exc.strerror or exc}") from None
    try:
        data = parse_yaml(text)
    except YamlTextError as exc:
        raise JobSpecError(f"{source}: invalid YAML{exc.where}: {exc.problem}") from None
    if data is None:
        raise JobSpecError(f"{source}: the file is empty; a job spec needs at least name, kind and "
                           "estimated_duration_s")
    return parse_job_spec(data, source)


def parse_job_spec(data: Any, source: str = DEFAULT_SOURCE) -> JobSpec:
    """Validate a mapping (e.g. from an SDK call) as a job spec; raise a one-line `JobSpecError`.

    `JobSpec.model_validate` does the same but raises pydantic's multi-line `ValidationError`.
    """
    if not isinstance(data, Mapping):
        raise JobSpecError(f"{source}: expected a mapping of fields at top level, got {type(data).__name__}")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobSpecError(_describe_validation_error(exc, source, data)) from None


def spec_hash(spec: JobSpec) -> str:
    """sha256 (hex) of the spec's canonical JSON: sorted keys, defaults included; for lineage."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _describe_validation_error(exc: ValidationError, source: str, data: Mapping[str, Any]) -> str:
    errors = exc.errors()
    kind_errors = [error for error in errors if error["loc"][:1] == ("kind",)]
    if kind_errors:  # every other error depends on the kind, so it alone is worth reporting
        return f"{source}: {_kind_message(kind_errors[0])}"
    model = JOB_KINDS[data["kind"]]
    # An unknown key first: a misspelt required field otherwise shows up as "missing" first.
    errors.sort(key=lambda error: error["type"] != "extra_forbidden")
    messages = [f"{source}: {_error_message(error, model)}" for error in errors]
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return messages[0] + more


def _kind_message(error: Mapping[str, Any]) -> str:
    kinds = ", ".join(f"'{kind}'" for kind in JOB_KINDS)
    if error["type"] == "missing":
        return f"field 'kind' is required: one of {kinds}"
    value = error["input"]
    hint = did_you_mean(value, JOB_KINDS) if isinstance(value, str) else ""
    return f"field 'kind' must be one of {kinds} (got {_shown(value)}){hint}"


def _error_message(error: Mapping[str, Any], model: type[JobSpec]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    field = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return _unknown_field_message(model, loc)
    if error["type"] == "missing":
        hint = _REQUIRED_HINTS.get(loc[-1]) if loc else None
        for_kind = f" for kind '{model.model_fields['kind'].default}'" if len(loc) == 1 else ""
        return f"field '{field}' is required{for_kind}" + (f": {hint}" if hint else "")
    reason = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    # Our own checks quote the value where it helps; pydantic's never do.
    quoted = error["type"] == "value_error" and isinstance(value, str) and value in reason
    shown = "" if quoted or isinstance(value, Mapping) else f" (got {_shown(value)})"
    return f"field '{field}': {reason}{shown}"


def _unknown_field_message(model: type[BaseModel], loc: tuple[str, ...]) -> str:
    parent, key = loc[:-1], loc[-1]
    section: type[BaseModel] = model
    for part in parent:
        annotation = section.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        section = annotation
    if not parent:
        kind = model.model_fields["kind"].default
        owners = [other for other, cls in JOB_KINDS.items() if key in cls.model_fields]
        if owners:
            belongs = " or ".join(f"'{other}'" for other in owners)
            return f"field '{key}' is not used by kind '{kind}': it belongs to kind {belongs}"
        where = f" for kind '{kind}'"
    else:
        where = f" in section '{'.'.join(parent)}'"
    return unknown_field(key, section.model_fields, where)


def _shown(value: Any, max_chars: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


# --- import paths -------------------------------------------------------------------------------


def load_callable(path: str) -> Callable[..., Any]:
    """Import the function at "package.module:function"; raise a one-line `JobSpecError` naming `path`."""
    target = load_object(path, error=JobSpecError)
    if not callable(target):
        raise JobSpecError(f"import path {path!r}: '{path.replace(':', '.')}' is a {type(target).__name__}, "
                           "not a function")
    return target


# --- deadlines ----------------------------------------------------------------------------------

_NAIVE_DEADLINE = "has no UTC offset; add one such as +00:00 (or Z), e.g. 2025-07-01T18:00:00+00:00"


def _parse_deadline(text: str) -> tuple[Literal["relative", "absolute"], float]:
    """("relative", seconds from submission) or ("absolute", epoch seconds); `ValueError` if neither."""
    stripped = text.strip()
    match = _DURATION_RE.fullmatch(stripped) if stripped else None
    if match and any(match.groupdict().values()):
        seconds = sum(float(amount) * _UNIT_S[unit] for unit, amount in match.groupdict().items() if amount)
        if seconds <= 0:
            raise ValueError(f"'{text}' is no time at all; give a positive duration such as '6h'")
        return "relative", seconds
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"'{text}' is neither a duration ('12h', '30m', '90s', '2d', '1h30m') nor an "
                         "ISO 8601 time with an offset (2025-07-01T18:00:00+00:00)") from None
    if moment.tzinfo is None:
        raise ValueError(f"'{text}' {_NAIVE_DEADLINE}")
    return "absolute", moment.timestamp()


def resolve_deadline(deadline: str | datetime, now_s: float) -> float:
    """Epoch seconds of `deadline`: an ISO 8601 time with offset, or a duration counted from `now_s`."""
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise JobSpecError(f"deadline {deadline.isoformat()!r} {_NAIVE_DEADLINE}")
        return deadline.timestamp()
    try:
        form, value = _parse_deadline(deadline)
    except ValueError as exc:
        raise JobSpecError(f"deadline {exc}") from None
    return now_s + value if form == "relative" else value


__all__ = [
    "DEFAULT_SOURCE",
    "CommandJobSpec",
    "JOB_KINDS",
    "JobKind",
    "JobSpec",
    "JobSpecError",
    "TrainJobSpec",
    "TuneJobSpec",
    "TuneSettings",
    "load_callable",
    "load_job_spec",
    "parse_job_spec",
    "resolve_deadline",
    "spec_hash",
    "to_tune_space",
]
