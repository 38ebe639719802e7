"""`FactoryConfig`: one validated description of a factory, from YAML plus environment overrides.

Nomenclature:
  config file   -- YAML, `configs/factory.yaml` by default or `--config PATH`.
  env override  -- `FACTORY_<FIELD>` for top-level fields, `FACTORY_<SECTION>__<FIELD>` for a
                   field inside a section (double underscore between levels), e.g.
                   `FACTORY_CLOCK__SPEED_FACTOR=3600`. Values are parsed as YAML scalars.
                   `FACTORY_CONFIG` is reserved: it names the config file.

Invariants:
  * Unknown keys are rejected, in files and in env overrides, with the nearest known name.
  * Every user-facing error is one line naming the source (file or env variable), the field path
    and what is allowed.
  * Every quantity carries its unit in its name (`interval_s`, `power_budget_w`, ...).
  * `state_dir` is absolute after loading, so actors started from any working dir agree on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factory.errors import ConfigError
from factory.price_config import PricesConfig
from factory.suggest import unknown_field
from factory.yaml_text import YamlTextError, parse_yaml

DEFAULT_CONFIG_PATH = Path("configs/factory.yaml")
ENV_PREFIX = "FACTORY_"
ENV_CONFIG_PATH = "FACTORY_CONFIG"
ENV_LEVEL_SEPARATOR = "__"


class _Section(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(_Section):
    """How the factory reaches Ray, and how `factory up` starts a local head when there is none."""

    address: str | None = Field(
        None, description="Existing cluster ('auto', 'ray://host:10001', 'host:6379'); "
        "unset: RAY_ADDRESS, else a running local cluster, else `factory up` starts a local head."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local head; unset: all.")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local head; unset: detected.")
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(8265, ge=1, le=65535)
    worker_niceness: int = Field(
        0, ge=0, le=19, description="Niceness of the worker processes of a local head `factory up` starts "
        "(the factory's actors and its jobs' training). Ray's own default, 15, makes them yield to any "
        "other busy process on the machine; 15 restores it."
    )
    actor_restart_wait_s: float = Field(
        60.0, ge=0, description="How long the CLI, the SDK and the demo wait for a factory actor that Ray "
        "is restarting before giving up (one line naming the actor); 0: fail at once."
    )


class ClockConfig(_Section):
    """The one clock of a factory: wall time, or an accelerated replay of a past period."""

    mode: Literal["wall", "replay"] = "wall"
    replay_start: datetime | None = Field(
        None, description="Simulated time at the replay's anchor, ISO-8601; naive means UTC."
    )
    speed_factor: float = Field(
        1800.0, gt=0, description="Simulated seconds per real second (1800: an hour per 2 s)."
    )

    @field_validator("replay_start")
    @classmethod
    def _utc_if_naive(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _replay_needs_start(self) -> ClockConfig:
        if self.mode == "replay" and self.replay_start is None:
            raise ValueError(
                "replay_start is required when mode is 'replay' (e.g. 2024-07-01T00:00:00Z)"
            )
        return self


class TelemetryConfig(_Section):
    """Per-node GPU/host telemetry (one TelemetryActor per Ray node)."""

    interval_s: float = Field(1.0, gt=0, description="Real seconds between samples.")
    backend: Literal["auto", "nvml", "simulated", "host"] = Field(
        "auto", description="auto: NVML if it works, else simulated GPUs where the node declares "
        "GPU resources to Ray, else host only."
    )
    history_samples: int = Field(
        3600, ge=2, description="Samples kept per GPU in memory (3600 at 1 s: an hour)."
    )
    attribution_interval_s: float = Field(
        2.0, gt=0, description="Real seconds between refreshes of which Ray worker holds which GPU."
    )
    pue: float = Field(1.4, ge=1.0, description="Power usage effectiveness: facility W per IT W.")
    busy_utilization_pct: float = Field(
        5.0, ge=0, le=100, description="A GPU at or above this utilisation counts as busy."
    )
    simulated_gpus_per_node: int | None = Field(
        None, ge=0, description="GPUs the simulated backend models; unset: the node's Ray GPUs."
    )
    simulated_idle_power_w: float = Field(75.0, ge=0, description="Simulated GPU power when idle.")
    simulated_busy_power_w: float = Field(700.0, ge=0, description="Simulated GPU power when busy.")
    simulated_memory_total_mib: float = Field(81920.0, gt=0, description="Simulated GPU memory.")


# What the scheduler minimises (`factory.prices.objective`).
SchedulingObjective = Literal["cost", "carbon", "cost+carbon"]


class SchedulerConfig(_Section):
    """The scheduling loop (SchedulerActor)."""

    interval_s: float = Field(
        2.0, gt=0, description="Real seconds between control-loop rounds (a node that joins gets "
        "its telemetry actor, one that leaves is recorded as down, within about this long)."
    )
    power_budget_w: float | None = Field(None, gt=0, description="Facility GPU power cap in W, kept on "
                                         "measured power (see power_margin_pct).")
    power_margin_pct: float = Field(
        5.0, ge=0, lt=100, allow_inf_nan=False, description="Share of the power budget and of a grid "
        "event's target kept free beside the measured draw above the jobs' nominal watts "
        "(factory.jobs.measured_power)."
    )
    power_caps: bool = Field(
        True, description="During a grid event, cap running jobs' GPUs (down to the lowest limit every GPU "
        "accepts) before pausing any (factory.scheduling.power_caps); restored when the job or event ends."
    )
    policy: Literal["price-aware", "fifo", "priority"] = Field(
        "price-aware", description="The scheduling policy (the same code `factory simulate` measures)."
    )
    tick_s: float = Field(
        2.0, gt=0, description="Real seconds between scheduling decisions when nothing happens; a "
        "submit, cancel, finished run or price change decides at once."
    )
    gpu_power_w: float = Field(
        700.0, gt=0, description="Planning estimate of one busy GPU's draw (energy is measured)."
    )
    preempt_overhead_s: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Run time a pause and resume costs a job "
        "(checkpoint, restart), in factory seconds, until the job has resumed once and its own overhead "
        "is learnt; the policy pauses only when the saving outweighs it. Finite."
    )
    max_pauses_per_day: int = Field(
        3, ge=0, description="price-aware: a job paused this many times in the last 24 h (factory time) "
        "is not paused again for price until the oldest of those pauses is a day old; 0: never."
    )
    quotas: dict[str, int] = Field(
        default_factory=dict, description="Guaranteed GPUs per team; idle ones may be borrowed."
    )
    pause_timeout_s: float = Field(
        300.0, gt=0, description="Real seconds a job asked to pause may take to reach its next "
        "checkpoint; then it is stopped and resumes from its latest checkpoint (losing the work since)."
    )
    objective: SchedulingObjective = Field(
        "cost", description="What the policy minimises: the energy cost, the carbon emitted (the price "
        "feed's carbon, or prices.carbon), or the cost with carbon priced at carbon_price_per_tonne."
    )
    carbon_price_per_tonne: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="objective cost+carbon: the price of a tonne of "
        "CO2, in the prices' currency."
    )

    @model_validator(mode="after")
    def _combined_objective_needs_a_carbon_price(self) -> SchedulerConfig:
        if self.objective == "cost+carbon" and self.carbon_price_per_tonne is None:
            raise ValueError("objective cost+carbon needs carbon_price_per_tonne (e.g. 100)")
        return self


def _without_nul(value: Any) -> Any:
    """A path (or URI) as given, refused if it holds a NUL character.

    The OS refuses it later anyway, as a raw ValueError from deep inside pathlib or os.
    """
    if value is not None and "\x00" in str(value):
        raise ValueError("a path cannot contain a NUL character")
    return value


class RegistryConfig(_Section):
    """Model registry (RegistryActor)."""

    storage_uri: str | None = Field(
        None, description="Artifact storage: a local path or s3:// / gs:// URI; "
        "unset: <state_dir>/artifacts."
    )
    cache_bytes: int = Field(
        1 << 30, ge=0, description="Bytes of model weights kept hot in the Ray object store (LRU); 0: none."
    )

    _uri_the_os_accepts = field_validator("storage_uri")(lambda value: _without_nul(value))

    def storage_location(self, state_dir: Path) -> str:
        """Where artifacts go: `storage_uri`, or `<state_dir>/artifacts` when unset."""
        return self.storage_uri or str((state_dir / "artifacts").resolve())


class ReplicaSettings(_Section):
    """How each endpoint's replicas run.

    Defined once, for the `serving` config section and for the model server's application arguments
    (`deployments.model_server.ServerArgs`), which both extend it.
    """

    replica_cpus: float = Field(1.0, ge=0, description="CPUs each model-server replica reserves.")
    replica_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves (> 0: it serves on CUDA).")
    min_replicas: int = Field(1, ge=0, description="Autoscaling: fewest replicas of an endpoint.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling: most replicas of an endpoint.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Autoscaling: requests in flight per replica that Serve aims for.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests one replica takes at once.")
    max_batch_size: int = Field(16, ge=1, description="Requests batched into one model call.")
    batch_wait_timeout_s: float = Field(
        0.002, ge=0, description="How long a batch waits to fill once its first request is in.")
    request_timeout_s: float = Field(
        30.0, gt=0, description="A request the model has not answered by then gets 504 (never hangs).")
    inline_predict_ms: float = Field(
        2.0, ge=0, description="A version whose last batch took less runs on the replica's event loop "
        "(cheaper for small models); slower ones run in a thread. 0: always in a thread.")
    report_interval_s: float = Field(1.0, gt=0, description="How often replicas send their request stats.")

    def replica_settings(self) -> ReplicaSettings:
        """Just these settings (of a section that extends them)."""
        return ReplicaSettings.model_validate(self.model_dump(include=set(ReplicaSettings.model_fields)))


class ServingConfig(ReplicaSettings):
    """Ray Serve endpoints of registered models (ServingActor, `deployments.model_server`)."""

    http_host: str = Field("127.0.0.1", description="Where Serve's HTTP proxy listens.")
    http_port: int = Field(8000, ge=1, le=65535)
    watch_interval_s: float = Field(
        1.0, gt=0, description="How often the ServingActor follows aliases and judges canaries.")
    stats_window_s: float = Field(60.0, gt=0, description="Request rate and latency are over this window.")
    canary_min_requests: int = Field(
        20, ge=1, description="Requests a canary must have answered before it is judged.")
    canary_max_error_rate: float = Field(
        0.05, ge=0, le=1, description="A canary failing more than this share of requests is rolled back.")
    canary_max_latency_ratio: float = Field(
        3.0, gt=1, description="A canary whose p99 latency exceeds the stable version's times this "
        "is rolled back.")

    @model_validator(mode="after")
    def _replicas_ordered(self) -> ServingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class FactoryConfig(_Section):
    """Everything that describes one factory. Sections are filled by later capabilities."""

    state_dir: Path = Field(
        Path(".factory"), description="Durable state (SQLite store, artifacts); relative to cwd."
    )
    ray: RayConfig = RayConfig()
    clock: ClockConfig = ClockConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    prices: PricesConfig = PricesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    registry: RegistryConfig = RegistryConfig()
    serving: ServingConfig = ServingConfig()

    _state_dir_the_os_accepts = field_validator("state_dir")(lambda value: _without_nul(value))

    @property
    def store_path(self) -> Path:
        """The SQLite file of the durable state store."""
        return self.state_dir / "factory.db"

    def fingerprint(self) -> str:
        """A short hash of the effective config, to tell whether a running factory uses it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> FactoryConfig:
    """Load, override from `env` and validate a config; raise `ConfigError` with one line.

    `path=None` means `$FACTORY_CONFIG`, else `configs/factory.yaml` if it exists, else defaults.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    explicit = path if path is not None else env.get(ENV_CONFIG_PATH)
    if explicit is not None:
        config_path: Path | None = Path(explicit)
    elif (cwd / DEFAULT_CONFIG_PATH).is_file():
        config_path = DEFAULT_CONFIG_PATH
    else:
        config_path = None
    raw = _read_yaml(cwd / config_path, shown_as=config_path) if config_path is not None else {}
    source = str(config_path) if config_path is not None else "built-in defaults"
    env_paths = _apply_env_overrides(raw, env)
    try:
        config = FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, source, env_paths)) from None
    if not config.state_dir.is_absolute():
        config.state_dir = (cwd / config.state_dir).resolve()
    config.prices.resolve_paths(cwd)
    return config


def _read_yaml(path: Path, shown_as: Path) -> dict[str, Any]:
    """The YAML mapping in `path`; errors name the file as the user gave it (`shown_as`)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {shown_as}: {exc.strerror or exc}; pass --config PATH"
        ) from None
    try:
        data = parse_yaml(text)
    except YamlTextError as exc:
        raise ConfigError(f"{shown_as}: invalid YAML{exc.where}: {exc.problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{shown_as}: expected a mapping of fields at top level, got {type(data).__name__}"
        )
    return data


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Write `FACTORY_*` overrides into `raw`; return {field path: env variable name}."""
    applied: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        field_path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split(ENV_LEVEL_SEPARATOR))
        _check_known_path(field_path, f"environment variable {name}")
        target = raw
        for part in field_path[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        try:
            target[field_path[-1]] = parse_yaml(env[name]) if env[name] != "" else None
        except YamlTextError:  # not YAML ("2025-13-01" is no date): the text itself, which validation judges
            target[field_path[-1]] = env[name]
        applied[field_path] = name
    return applied


def _check_known_path(field_path: tuple[str, ...], source: str) -> None:
    model: type[BaseModel] | None = FactoryConfig
    for depth, part in enumerate(field_path):
        if model is None:
            raise ConfigError(f"{source}: '{'.'.join(field_path[:depth])}' has no sub-fields")
        if part not in model.model_fields:
            raise ConfigError(f"{source}: {_unknown_field_message(model, field_path[:depth], part)}")
        model = _section_model(model.model_fields[part].annotation)


def _unknown_field_message(model: type[BaseModel], parent: tuple[str, ...], key: str) -> str:
    where = f" in section '{'.'.join(parent)}'" if parent else ""
    return unknown_field(key, model.model_fields, where)


def _model_at(field_path: tuple[str | int, ...]) -> type[BaseModel]:
    model: type[BaseModel] = FactoryConfig
    for part in field_path:
        if str(part) not in model.model_fields:
            break
        section = _section_model(model.model_fields[str(part)].annotation)
        if section is None:
            break
        model = section
    return model


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (`X` or `X | None`), or None for a plain value."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe_validation_error(
    exc: ValidationError, source: str, env_paths: Mapping[tuple[str, ...], str]
) -> str:
    messages = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        # Blame the env variables that set this field or fields inside it, else the file. A field
        # missing from a section the environment brought into being is blamed on that section's variables.
        scope = loc[:-1] if error["type"] == "missing" and len(loc) > 1 else loc
        variables = [name for path, name in env_paths.items() if path[: len(scope)] == scope]
        origin = f"environment variable {', '.join(variables)}" if variables else source
        if error["type"] == "extra_forbidden":
            messages.append(f"{origin}: {_unknown_field_message(_model_at(loc[:-1]), loc[:-1], loc[-1])}")
            continue
        field = ".".join(loc) or "(top level)"
        reason = error["msg"].removeprefix("Value error, ")
        got = "" if error["type"] == "missing" else f" (got {error['input']!r})"
        if isinstance(error.get("input"), dict):
            got = ""
        messages.append(f"{origin}: field '{field}': {reason}{got}")
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return messages[0] + more
