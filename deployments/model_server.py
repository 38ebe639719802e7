"""The model server: one Ray Serve application per endpoint, serving registry versions over HTTP.

Routes (under the endpoint's route prefix, e.g. `/models/NAME`):
  POST ''  or '/predict'  -- one JSON object, validated by the predictor's `input_schema`;
                             200 {"model": "NAME:V", "prediction": ...}; header `x-factory-model`.
  GET  '/health'          -- 200 {"status": "ok", ...} once the stable version is loaded, else 503.
  GET  '/schema'          -- the JSON schema of a request's body.
Errors: 400 (body not JSON), 422 (a field fails the schema; the message names it), 500 (the model
raised, or answered something that is not JSON, e.g. NaN; {"error", "error_id"}, the id also in the
replica's log), 504 (no answer within `request_timeout_s`, reading the body and loading included).

How versions reach a replica: `user_config` = {"stable": REF, "canary": REF|None, "canary_percent"}
where REF is `NAME:V` or `NAME@ALIAS`. `reconfigure` loads the new versions first (through Serve's
model multiplexing: a replica keeps up to `MODELS_PER_REPLICA` versions, LRU) and only then switches
routing, in one assignment: a request sees the old routing or the new one, never a version that is
not loaded yet. A stable version that fails to load fails the reconfiguration (Serve keeps the
endpoint's previous state); a canary that fails to load is routed anyway and answers 500, so the
ServingActor's judge rolls it back. The ServingActor changes only `user_config` to roll a version,
so Serve reconfigures replicas in place (no restart): moving an alias fails no request.

Weights come from the registry's hot copies in the Ray object store (`RegistryClient.load_version`);
the predictor class named on the version (`serving.predictor`) turns them into a model.

Each replica counts requests per version (`factory.serving.stats`); every `report_interval_s` it adds
them to Ray metrics (`factory_serve_requests_total`, `factory_serve_latency_ms`) and sends them to the
ServingActor, which shows them (`factory endpoints`) and judges canaries with them.

`app(args)` is a Serve application builder: `serve deploy` configs import `deployments.model_server:app`
with `args` as `ServerArgs` (see `factory deploy --export`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from factory import ray_compat
from factory.config import ReplicaSettings
from factory.control_plane import SERVING, get_actor
from factory.errors import FactoryError
from factory.registry.refs import parse_ref, version_ref
from factory.registry.sdk import RegistryClient
from factory.serving.predictor import input_schema, load_predictor_class
from factory.serving.stats import LATENCY_BOUNDS_MS, empty_counts, record, subtract

logger = logging.getLogger("ray.serve")
MODELS_PER_REPLICA = 3  # stable, canary and the next version while it loads
# Serve compares the deployment's version to decide whether a redeploy replaces replicas. It is this
# constant plus a hash of the replicas' settings (`ServerArgs.settings`): a new `user_config` alone
# (the versions served) reconfigures replicas in place; new settings or a new server replace them.
CODE_VERSION = "model-server-2"
DEPLOYMENT_NAME = "ModelServer"
HANDLE_REFRESH_S = 30.0


class ServerArgs(ReplicaSettings):
    """The application's arguments: what a `serve deploy` config's `args` holds.

    The replica settings are defined once, in `factory.config.ReplicaSettings`; this adds what the
    endpoint serves. Unknown keys are errors.
    """

    endpoint: str = Field(description="The endpoint's name (the model's name by default).")
    model: str = Field(description="What it serves: NAME:VERSION or NAME@ALIAS.")
    canary: str | None = Field(None, description="A canary version NAME:VERSION, if any.")
    canary_percent: float = Field(0.0, ge=0, le=100, description="Share of requests the canary gets.")
    replicas: int | None = Field(None, ge=1, description="A fixed number of replicas; unset: autoscaling.")

    def settings(self) -> dict[str, Any]:
        """What a replica is built with (a change replaces replicas: see `CODE_VERSION`)."""
        return {"endpoint": self.endpoint, "max_batch_size": self.max_batch_size,
                "batch_wait_timeout_s": self.batch_wait_timeout_s,
                "request_timeout_s": self.request_timeout_s,
                "report_interval_s": self.report_interval_s, "gpus": self.replica_gpus,
                "inline_predict_ms": self.inline_predict_ms}

    def routing(self) -> dict[str, Any]:
        """The replicas' `user_config`: which versions get which share (a change reconfigures in place)."""
        return {"stable": self.model, "canary": self.canary, "canary_percent": self.canary_percent}


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to answer: its id (`NAME:V`), predictor and request schema."""

    model_id: str
    predictor: Any
    schema: type[BaseModel]


@dataclass(frozen=True)
class Routing:
    """Which loaded version answers a request: the canary with `canary_percent`, else the stable one."""

    stable: str | None = None
    canary: str | None = None
    canary_percent: float = 0.0
    # The versions loaded for it, by id: a request takes its model from here, without a call to
    # Serve's multiplexer (which loaded them, and keeps its own LRU of them).
    loaded: dict[str, LoadedModel] = field(default_factory=dict)

    def choose(self) -> str | None:
        """The version for the next request."""
        if self.canary is not None and random.random() * 100.0 < self.canary_percent:
            return self.canary
        return self.stable


class _Failure:
    """A batch item the predictor failed on (returned, not raised, so the batch's others still answer)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


@serve.deployment(name=DEPLOYMENT_NAME)
class ModelServer:
    """A replica of an endpoint: loads versions from the registry, batches requests, counts them."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from ray.util.metrics import Counter, Histogram

        self.endpoint = settings["endpoint"]
        self.request_timeout_s = float(settings["request_timeout_s"])
        self.report_interval_s = float(settings["report_interval_s"])
        self.inline_predict_ms = float(settings.get("inline_predict_ms", 0.0))
        self._predict_ms: dict[str, float] = {}  # each version's last batch: how long predict took
        self.device = _device(float(settings.get("gpus", 0)))
        self._predict_batch.set_max_batch_size(int(settings["max_batch_size"]))
        self._predict_batch.set_batch_wait_timeout_s(float(settings["batch_wait_timeout_s"]))
        self.routing = Routing()
        self.counts: dict[str, dict[str, Any]] = {}
        self._registry: RegistryClient | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._exported: dict[str, dict[str, Any]] = {}  # counts already added to the Ray metrics
        self._requests_metric = Counter("factory_serve_requests_total",
                                        description="Requests answered by a factory endpoint, by status.",
                                        tag_keys=("endpoint", "version", "status"))
        self._latency_metric = Histogram("factory_serve_latency_ms",
                                         description="Time to answer a request of a factory endpoint.",
                                         boundaries=list(LATENCY_BOUNDS_MS), tag_keys=("endpoint", "version"))

    # -- versions ------------------------------------------------------------------------------------

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the versions `config` names, then route to them (one assignment)."""
        stable = await asyncio.to_thread(self._resolve, config["stable"])
        canary = await asyncio.to_thread(self._resolve, config["canary"]) if config.get("canary") else None
        loaded = {stable: await self.get_model(stable)}  # raises: Serve keeps the endpoint as it was
        if canary is not None:
            try:
                loaded[canary] = await self.get_model(canary)
            except Exception:  # noqa: BLE001 - its requests answer 500 and the judge rolls it back
                logger.exception("endpoint %s: canary %s failed to load", self.endpoint, canary)
        percent = float(config.get("canary_percent") or 0.0) if canary else 0.0
        self.routing = Routing(stable, canary, percent, loaded)
        if self._reporter is None:
            self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> LoadedModel:
        """A version by id `NAME:V`, loaded once per replica (Serve keeps the most recent few)."""
        return await asyncio.to_thread(self._load, model_id)

    def _load(self, model_id: str) -> LoadedModel:
        parsed = parse_ref(model_id)
        name, version = parsed.name, parsed.version
        assert version is not None, model_id  # ids are written by `_resolve`: always NAME:V
        row, artifact = self._registry_client().load_version(name, version)
        predictor_path = (row.get("serving") or {}).get("predictor")
        if not predictor_path:
            raise FactoryError(f"model '{name}' v{version} has no predictor to serve it; register it with "
                               "--predictor module.path:Class")
        cls = load_predictor_class(predictor_path)
        predictor = cls(artifact, self.device)
        logger.info("endpoint %s loaded %s with %s on %s", self.endpoint, model_id, predictor_path,
                    self.device)
        return LoadedModel(model_id, predictor, input_schema(cls, predictor_path))

    def _resolve(self, ref: str) -> str:
        """`NAME:V` for a reference (an alias is resolved by the registry once, here)."""
        parsed = parse_ref(ref)
        if parsed.version is not None:
            return version_ref(parsed.name, parsed.version)
        card = self._registry_client().model(parsed.name, None, parsed.alias)
        return version_ref(card.name, card.version)

    def _registry_client(self) -> RegistryClient:
        if self._registry is None:
            self._registry = RegistryClient()
        return self._registry

    def check_health(self) -> None:
        """Serve's health check: unhealthy until a stable version is loaded."""
        if self.routing.stable is None:
            raise RuntimeError(f"endpoint {self.endpoint} has no version loaded yet")

    # -- requests ------------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> JSONResponse:
        """Route a request: predict, health or schema."""
        path = request.url.path[len(request.scope.get("root_path", "")):].rstrip("/")
        if request.method == "GET" and path == "/health":
            return self._health()
        if request.method == "GET" and path == "/schema":
            return await self._schema()
        if request.method != "POST" or path not in ("", "/predict"):
            return JSONResponse({"error": f"no route {request.method} {request.url.path}; POST a JSON "
                                 "object to the endpoint, GET /health or /schema"}, status_code=404)
        started = time.perf_counter()
        routing = self.routing  # one routing per request, even if a reconfiguration lands meanwhile
        model_id = routing.choose()
        if model_id is None:
            return JSONResponse({"error": f"endpoint {self.endpoint} is starting"}, status_code=503)
        try:
            async with asyncio.timeout(self.request_timeout_s):  # no extra task per request, unlike wait_for
                status, body = await self._answer(request, model_id, routing.loaded.get(model_id))
        except TimeoutError:
            status, body = 504, self._error_body(model_id, TimeoutError(
                f"no answer within {self.request_timeout_s:g} s"), "answering in time")
        try:
            content = json.dumps(body, allow_nan=False).encode()
        except (TypeError, ValueError) as error:  # NaN, a numpy scalar...: the model's answer is not JSON
            status = 500
            content = json.dumps(self._error_body(model_id, error, "answering JSON")).encode()
        latency_ms = (time.perf_counter() - started) * 1000.0
        record(self.counts.setdefault(model_id, empty_counts()), latency_ms, status)
        return Response(content, status_code=status, media_type="application/json",
                        headers={"x-factory-model": model_id})

    async def _answer(self, request: Request, model_id: str,
                      model: LoadedModel | None) -> tuple[int, dict[str, Any]]:
        try:
            payload = await request.json()
        except ValueError as error:
            return 400, {"error": f"the request body is not JSON ({error}); send one JSON object"}
        if model is None:  # a canary that failed to load: try again, else answer why
            try:
                model = await self.get_model(model_id)
            except Exception as error:  # noqa: BLE001 - the model failed to load: an error with an id
                return 500, self._error_body(model_id, error, "loading")
        try:
            item = model.schema.model_validate(payload)
        except ValidationError as error:
            return 422, {"error": _first_problem(error), "fields": [_field(e) for e in error.errors()]}
        answer = await self._predict_batch((model, item))
        if isinstance(answer, _Failure):
            return 500, self._error_body(model_id, answer.error, "predicting")
        return 200, {"model": model_id, "prediction": answer}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _predict_batch(self, items: list[tuple[LoadedModel, BaseModel]]) -> list[Any]:
        """Answer a batch: each version's requests in one `predict` call.

        A version whose last batch took under `inline_predict_ms` runs on the event loop: a thread hop
        would cost more than the call (about 4 % of throughput for a small MLP, `bench/serving.py`).
        Any other runs in a thread, so the replica keeps reading requests and timeouts fire meanwhile.
        A version's first batch runs in a thread (its time is not known yet).
        """
        answers: list[Any] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for index, (model, _) in enumerate(items):
            groups.setdefault(model.model_id, []).append(index)
        for indices in groups.values():
            model = items[indices[0]][0]
            inputs = [items[i][1] for i in indices]
            started = time.perf_counter()
            try:
                if self._predict_ms.get(model.model_id, math.inf) < self.inline_predict_ms:
                    outputs = model.predictor.predict(inputs)
                else:
                    outputs = await asyncio.to_thread(model.predictor.predict, inputs)
                if len(outputs) != len(inputs):
                    raise ValueError(f"predict returned {len(outputs)} answers for {len(inputs)} inputs")
            except Exception as error:  # noqa: BLE001 - the model's own error, answered as a 500
                outputs = [_Failure(error)] * len(inputs)
            self._predict_ms[model.model_id] = (time.perf_counter() - started) * 1000.0
            for i, output in zip(indices, outputs, strict=True):
                answers[i] = output
        return answers

    def _error_body(self, model_id: str, error: BaseException, doing: str) -> dict[str, Any]:
        error_id = uuid.uuid4().hex[:12]
        logger.error("endpoint %s %s failed %s (error id %s)", self.endpoint, model_id, doing, error_id,
                     exc_info=error)
        return {"error": f"{model_id} failed {doing}: {type(error).__name__}: {error}"[:500],
                "error_id": error_id}

    def _health(self) -> JSONResponse:
        routing = self.routing
        body = {"status": "ok" if routing.stable else "starting", "endpoint": self.endpoint,
                "stable": routing.stable, "canary": routing.canary, "canary_percent": routing.canary_percent}
        return JSONResponse(body, status_code=200 if routing.stable else 503)

    async def _schema(self) -> JSONResponse:
        if self.routing.stable is None:
            return JSONResponse({"error": f"endpoint {self.endpoint} is starting"}, status_code=503)
        model = await self.get_model(self.routing.stable)
        return JSONResponse({"model": model.model_id, "input_schema": model.schema.model_json_schema()})

    # -- reporting -----------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        """Send this replica's counts to the ServingActor, if the factory runs one (else keep quiet)."""
        replica_id = serve.get_replica_context().replica_id.unique_id
        actor, looked_up_s, quiet_until_s = None, 0.0, 0.0
        while True:
            await asyncio.sleep(self.report_interval_s)
            self._export_metrics()
            if time.monotonic() < quiet_until_s:
                continue
            try:
                # Looked up again now and then: a factory taken down and up again has a new actor, and a
                # call to a dead one fails silently.
                if actor is None or time.monotonic() - looked_up_s > HANDLE_REFRESH_S:
                    actor, looked_up_s = get_actor(SERVING), time.monotonic()
                actor.report.remote(self.endpoint, replica_id, self.counts)
            except Exception:  # noqa: BLE001 - no factory (a bare `serve deploy`), or it restarts
                actor, quiet_until_s = None, time.monotonic() + 10 * self.report_interval_s

    def _export_metrics(self) -> None:
        """Add what was answered since the last call to the Ray metrics.

        Done here, every `report_interval_s`, rather than per request: a Ray metric call per request cost
        about 3 % of throughput (`bench/serving.py`). The histogram gets each request at its bucket's
        upper bound (the overflow bucket: just past the last bound), so its buckets are exact and its
        `_sum` an upper bound.
        """
        for model_id, counts in list(self.counts.items()):
            delta = subtract(counts, self._exported.get(model_id))
            self._exported[model_id] = subtract(counts, None)
            tags = {"endpoint": self.endpoint, "version": model_id}
            ok = delta["requests"] - delta["errors"] - delta["rejected"]
            for status, count in (("2xx", ok), ("4xx", delta["rejected"]), ("5xx", delta["errors"])):
                if count > 0:
                    self._requests_metric.inc(count, tags={**tags, "status": status})
            for index, count in enumerate(delta["buckets"]):
                value = (LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS)
                         else LATENCY_BOUNDS_MS[-1] + 1)
                for _ in range(count):
                    self._latency_metric.observe(value, tags=tags)


def _device(gpus: float) -> str:
    if gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _field(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(body)"


def _first_problem(error: ValidationError) -> str:
    problems = error.errors()
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"field '{_field(first)}': {first['msg']}{more}"


def build(args: ServerArgs) -> Application:
    """The Serve application for `args`."""
    if args.replicas is not None:
        scaling: dict[str, Any] = {"num_replicas": args.replicas}
    else:
        scaling = {"autoscaling_config": {
            "min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests}}
    settings = args.settings()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    # Without a code version every `serve.run` replaces the replicas (a rollout would reload every model).
    return ray_compat.with_code_version(
        ModelServer, f"{CODE_VERSION}-{digest}",
        ray_actor_options={"num_cpus": args.replica_cpus, "num_gpus": args.replica_gpus},
        max_ongoing_requests=args.max_ongoing_requests, user_config=args.routing(), **scaling,
    ).bind(settings)


def app(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: deployments.model_server:app`)."""
    return build(ServerArgs.model_validate(args))
