"""ServingActor: deploys registry models as Ray Serve endpoints and keeps them where they should be.

It owns the endpoints' desired state (persisted in the store before Serve is told: write ahead, then
act) and applies it with `serve.run` of `deployments.model_server`. A rollout changes only the
replicas' `user_config`, which Serve applies in place, so requests keep being answered throughout.

Its watch loop (every `serving.watch_interval_s`):
  * follows aliases: an endpoint deployed as NAME@ALIAS rolls to the version the alias points at
    (`factory promote`, or the SDK's `set_alias`); promoting a canary's version completes the canary;
  * judges canaries on the requests counted since each began (`judge_canary`) and rolls a failing
    one back by itself, audited with the reason;
  * re-applies endpoints Serve lost (a cluster restart), and keeps the windows of request stats.

Replicas send their request counts (`report`); `endpoints()` shows them per endpoint and version.
Every change is audited: `endpoint.deployed`, `endpoint.rolled`, `endpoint.canary`,
`endpoint.rolled_back`, `endpoint.undeployed`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from actors.control_plane import ControlPlaneActor
from deployments.model_server import ServerArgs, build
from factory.control_plane import REGISTRY, call_actor, get_actor
from factory.errors import FactoryError, summary_line
from factory.registry.catalog import ModelRegistry
from factory.registry.refs import ModelRef, alias_ref, parse_ref, version_ref
from factory.registry.storage import ArtifactStorage
from factory.serving.endpoints import (
    Endpoint,
    EndpointNotFoundError,
    check_percent,
    check_route,
    default_route,
    deployed,
    judge_canary,
)
from factory.serving.predictor import load_predictor_class
from factory.serving.stats import EndpointTotals, combined, summary
from factory.store import ModelVersionRow

SERVE_APPLY_TIMEOUT_S = 300.0


class ServingActor(ControlPlaneActor):
    """The factory's endpoints on Ray Serve."""

    kind = "serving"
    # Replica reports and listings are answered while a deploy waits for Serve.
    max_concurrency = 8

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        self.settings = self.config.serving
        self.registry = ModelRegistry(self.store, ArtifactStorage(
            self.config.registry.storage_location(self.config.state_dir)), self._now_s)
        self.endpoints: dict[str, Endpoint] = {
            name: Endpoint.model_validate(value) for name, value in self.store.list_endpoints().items()}
        self._apply_lock = threading.RLock()  # one change to Serve at a time
        self._stats_lock = threading.Lock()
        self._stats: dict[str, EndpointTotals] = {}
        self._canary_marks: dict[str, dict[str, dict[str, Any]]] = {}
        self._serve_started = False
        self._to_reconcile = set(self.endpoints)  # re-applied by the first watch rounds (a restart)
        self._refused: dict[str, tuple[int, str]] = {}  # endpoint -> (alias target refused, why)
        self._updating: set[str] = set()  # endpoints whose change Serve is applying now
        self._stopping = self._run_every(self.settings.watch_interval_s, self.watch, "serving-watch")

    # -- commands ------------------------------------------------------------------------------------

    def deploy(self, ref_text: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Create or update the endpoint of the model `ref_text` names (NAME@ALIAS, NAME:VERSION, NAME).

        A `request_id` that took effect changes nothing and answers with the endpoint it deployed; one
        resent while the first still deploys waits for it. The request is checked, and recorded with the
        deploy's audit event just after the endpoint's write, under `_apply_lock`: Serve's deploy takes
        minutes, too long to hold the store's write lock (`StateStore.once`).
        """
        with self._apply_lock:
            done = self.store.request_done(request_id, "endpoint.deploy")
            if done is not None:
                recorded = Endpoint.model_validate(done.result)
                return self._view(self.endpoints.get(recorded.name, recorded))
            ref = parse_ref(ref_text)
            row = self._servable(ref)
            now_s = self._now_s()
            current = self.endpoints.get(ref.name)
            endpoint = deployed(current, list(self.endpoints.values()), model=ref.name, follows=ref.alias,
                                version=row.version, route=route, replicas=replicas, by=deployed_by,
                                now_s=now_s)
            self._change(current, endpoint)

            def audited() -> dict[str, Any]:  # just after the endpoint's write: a retry would redo the same
                self.audit("endpoint.deployed", endpoint.name, actor=deployed_by or None, ref=endpoint.ref,
                           version=endpoint.stable_version, route=endpoint.route, replicas=endpoint.replicas)
                return endpoint.model_dump(mode="json")

            self.store.once(request_id, "endpoint.deploy", now_s, audited)
        return self._view(endpoint)

    def canary(self, name: str, version: int, percent: float, set_by: str = "") -> dict[str, Any]:
        """Send `percent` of endpoint `name`'s requests to `version`, watched for errors and latency."""
        check_percent(percent)  # before the endpoint: a bad share is the first thing to fix
        with self._apply_lock:
            current = self._endpoint(name)
            endpoint = current.with_canary(version, percent, self._now_s())
            self._servable(ModelRef(current.model, version=version))
            self._change(current, endpoint)
            with self._stats_lock:
                self._canary_marks[name] = self._totals(name).mark()
            self.audit("endpoint.canary", name, actor=set_by or None, version=version, percent=percent,
                       stable_version=endpoint.stable_version)
        return self._view(endpoint)

    def rollback(self, name: str, rolled_back_by: str = "") -> dict[str, Any]:
        """Take the canary out; without one, return to the version served before the current one.

        An endpoint that follows an alias moves the alias back too (through the registry, audited),
        so the alias and the endpoint keep agreeing.
        """
        with self._apply_lock:
            current = self._endpoint(name)
            endpoint = current.rolled_back(rolled_back_by, self._now_s())
            if current.canary_version is not None:
                self._change(current, endpoint)
                self.audit("endpoint.rolled_back", name, actor=rolled_back_by or None,
                           version=current.canary_version, canary=True)
                return self._view(endpoint)
            if current.follows:  # the alias first: if it cannot move, nothing changed
                call_actor(get_actor(REGISTRY).set_alias.remote(current.model, current.follows,
                                                                 endpoint.stable_version,
                                                                 rolled_back_by or "serving"),
                           f"the factory's '{REGISTRY}' actor", 30.0)
            self._change(current, endpoint)
            self.audit("endpoint.rolled_back", name, actor=rolled_back_by or None,
                       from_version=current.stable_version, version=endpoint.stable_version)
        return self._view(endpoint)

    def undeploy(self, name: str, undeployed_by: str = "") -> dict[str, Any]:
        """Delete the endpoint from Serve and forget it."""
        from ray import serve

        with self._apply_lock:
            endpoint = self._endpoint(name)
            del self.endpoints[name]
            self._persist()
            serve.delete(name)
            with self._stats_lock:
                self._stats.pop(name, None)
                self._canary_marks.pop(name, None)
            self.audit("endpoint.undeployed", name, actor=undeployed_by or None, ref=endpoint.ref)
        return endpoint.model_dump()

    def take_down(self) -> list[str]:
        """Delete the endpoints from Serve but keep them in the store; return their names.

        `factory down` calls this: the endpoints need the factory's registry, and the next `factory up`
        deploys them again (the first watch round re-applies what Serve does not run).
        """
        self._stopping.set()
        with self._apply_lock:
            for name in self.endpoints:
                self._delete_quietly(name)
            if self.endpoints:
                self.audit("endpoint.taken_down", ",".join(sorted(self.endpoints)))
        return sorted(self.endpoints)

    def sync(self) -> list[dict[str, Any]]:
        """Follow aliases now (rather than at the next watch round); return every endpoint.

        Every endpoint is tried; those that could not follow are named in one error at the end.
        """
        failed = []
        with self._apply_lock:
            for endpoint in list(self.endpoints.values()):
                try:
                    self._follow_alias(endpoint, report_refused=True)
                except FactoryError as error:
                    failed.append(f"endpoint '{endpoint.name}': {error}")
        if failed:
            raise FactoryError("; ".join(failed))
        return self.list_endpoints()

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint with its route, versions and split, replicas and request stats."""
        replicas = self._replica_states()
        return [self._view(endpoint, replicas) for endpoint in sorted(self.endpoints.values(),
                                                                     key=lambda e: e.name)]

    def export(self, ref_text: str, route: str | None = None, replicas: int | None = None) -> dict[str, Any]:
        """A Serve config (`serve deploy`) for the model `ref_text` names, as the factory would serve it."""
        ref = parse_ref(ref_text)
        self._servable(ref)
        args = self._args(ref.name, str(ref), None, 0.0, replicas)
        return {
            "proxy_location": "EveryNode",
            "http_options": self._http_options(),
            "applications": [{
                "name": ref.name, "route_prefix": check_route(route) if route else default_route(ref.name),
                "import_path": "deployments.model_server:app",
                "args": args.model_dump(exclude_defaults=False),
            }],
        }

    def report(self, endpoint: str, replica_id: str, counts: dict[str, dict[str, Any]]) -> None:
        """A replica's cumulative request counts per version (sent every `report_interval_s`)."""
        if endpoint in self.endpoints:
            with self._stats_lock:
                self._totals(endpoint).add_report(replica_id, counts, time.monotonic())

    # -- the watch loop ------------------------------------------------------------------------------

    def watch(self) -> None:
        """One round: re-apply what a restart may have missed, follow aliases, judge canaries, snapshot.

        Each endpoint is handled on its own: one that fails is recorded (`last_error`) and the others
        are still followed and judged.
        """
        with self._apply_lock:
            for name in sorted(self._to_reconcile):
                self._each(name, self._reconcile)
            for name in list(self.endpoints):
                self._each(name, self._follow_alias)
                self._each(name, self._judge)
        with self._stats_lock:
            now = time.monotonic()
            for name in list(self.endpoints):
                self._totals(name).snapshot(now)
                self._totals(name).forget_silent(now, 10 * self.settings.report_interval_s + 60)

    def _each(self, name: str, step: Any) -> None:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return
        try:
            step(endpoint)
        except Exception as error:  # noqa: BLE001 - see `watch`
            self._record_error(f"endpoint '{name}': {summary_line(error)}")

    def _follow_alias(self, endpoint: Endpoint, report_refused: bool = False) -> None:
        """Roll `endpoint` to where its alias points; a target refused before is skipped (or reported)."""
        if endpoint.follows is None:
            return
        version = self.store.model_aliases(endpoint.model).get(endpoint.model, {}).get(endpoint.follows)
        if version in (None, endpoint.stable_version):
            return
        refused = self._refused.get(endpoint.name)
        if refused is not None and refused[0] == version:
            if report_refused:  # `sync` (a promote) must say so even if a watch round refused it first
                raise FactoryError(refused[1])
            return
        updated = endpoint.with_stable(version, self._now_s())
        try:
            self._servable(ModelRef(endpoint.model, version=version))
            self._change(endpoint, updated)
        except FactoryError as error:  # refused once, audited; tried again when the alias moves
            self._refused[endpoint.name] = (version, str(error))
            self.audit("endpoint.roll_refused", endpoint.name, version=version, reason=str(error))
            raise
        self.audit("endpoint.rolled", endpoint.name, from_version=endpoint.stable_version, version=version,
                   reason=f"{alias_ref(endpoint.model, endpoint.follows)} moved to v{version}",
                   canary_completed=endpoint.canary_version == version)

    def _judge(self, endpoint: Endpoint) -> None:
        if endpoint.canary_version is None:
            return
        with self._stats_lock:
            totals = self._totals(endpoint.name)
            mark = self._canary_marks.setdefault(endpoint.name, totals.mark())
            canary = totals.since(mark, version_ref(endpoint.model, endpoint.canary_version))
            stable = totals.since(mark, version_ref(endpoint.model, endpoint.stable_version))
        reason = judge_canary(canary, stable, self.settings)
        if reason is None:
            return
        updated = endpoint.without_canary(f"v{endpoint.canary_version}: {reason}", self._now_s(),
                                          automatic=True)
        self._change(endpoint, updated)
        self.audit("endpoint.rolled_back", endpoint.name, version=endpoint.canary_version, canary=True,
                   automatic=True, reason=reason)

    def _reconcile(self, endpoint: Endpoint) -> None:
        """Apply an endpoint's stored state after a (re)start, again each round until it succeeds.

        This actor may have died between storing a change and applying it, or Serve lost the app; an
        app that did not change is a no-op for Serve.
        """
        self._apply(endpoint)
        self._to_reconcile.discard(endpoint.name)

    # -- applying ------------------------------------------------------------------------------------

    def _change(self, current: Endpoint | None, endpoint: Endpoint) -> None:
        """Persist `endpoint`, then apply it; if Serve refuses, restore (and re-apply) `current`.

        The endpoint reads as `updating` from before its new state is visible until Serve serves it.
        """
        self._updating.add(endpoint.name)
        try:
            self._change_now(current, endpoint)
        finally:
            self._updating.discard(endpoint.name)

    def _change_now(self, current: Endpoint | None, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.name] = endpoint
        self._persist()
        try:
            self._apply(endpoint)
        except FactoryError:
            if current is None:
                del self.endpoints[endpoint.name]
                self._delete_quietly(endpoint.name)
            else:
                self.endpoints[endpoint.name] = current
                try:
                    self._apply(current)
                except FactoryError as error:
                    self._record_error(error)
            self._persist()
            raise

    def _apply(self, endpoint: Endpoint) -> None:
        from ray import serve

        self._ensure_serve()
        canary = version_ref(endpoint.model, endpoint.canary_version) if endpoint.canary_version else None
        args = self._args(endpoint.name, version_ref(endpoint.model, endpoint.stable_version), canary,
                          endpoint.canary_percent, endpoint.replicas)
        from ray.serve.api import RunTarget

        try:
            serve.run_many([RunTarget(build(args), name=endpoint.name, route_prefix=endpoint.route)],
                           wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
        except Exception as error:  # noqa: BLE001 - Serve's reasons come in many types
            raise FactoryError(f"Serve could not deploy endpoint '{endpoint.name}' ({endpoint.ref}): "
                               f"{summary_line(error)}") from None
        self._wait_running(endpoint)

    def _wait_running(self, endpoint: Endpoint) -> None:
        """Until Serve runs the endpoint's new state; a failure or `SERVE_APPLY_TIMEOUT_S` is an error."""
        from ray import serve

        deadline = time.monotonic() + SERVE_APPLY_TIMEOUT_S
        while True:
            app = serve.status().applications.get(endpoint.name)
            status = str(getattr(app.status, "value", app.status)) if app is not None else "MISSING"
            if status == "RUNNING":
                return
            if status in ("DEPLOY_FAILED", "UNHEALTHY", "MISSING") or time.monotonic() > deadline:
                why = (app.message if app is not None else "") or status
                if time.monotonic() > deadline:
                    why = (f"not running after {SERVE_APPLY_TIMEOUT_S:.0f} s ({status}; can its replicas be "
                           "placed?)")
                raise FactoryError(f"Serve could not deploy endpoint '{endpoint.name}' ({endpoint.ref}): "
                                   f"{summary_line(why)}")
            time.sleep(0.2)

    def _args(self, name: str, model: str, canary: str | None, percent: float,
              replicas: int | None) -> ServerArgs:
        return ServerArgs(endpoint=name, model=model, canary=canary, canary_percent=percent,
                          replicas=replicas, **self.settings.replica_settings().model_dump())

    def _ensure_serve(self) -> None:
        if self._serve_started:
            return
        from ray import serve

        serve.start(http_options=self._http_options())
        self._serve_started = True

    def _http_options(self) -> dict[str, Any]:
        # The proxy's own timeout backs the replicas' (`request_timeout_s`, answered as 504 with an id).
        return {"host": self.settings.http_host, "port": self.settings.http_port,
                "request_timeout_s": self.settings.request_timeout_s + 10}

    def _delete_quietly(self, name: str) -> None:
        from ray import serve

        try:
            serve.delete(name)
        except Exception as error:  # noqa: BLE001 - best effort after a failed deploy
            self._record_error(error)

    def _persist(self) -> None:
        self.store.replace_endpoints({name: e.model_dump(mode="json") for name, e in self.endpoints.items()})

    # -- reading -------------------------------------------------------------------------------------

    def _servable(self, ref: ModelRef) -> ModelVersionRow:
        """The version `ref` names, if it can be served (it names a predictor that imports)."""
        row = self.registry.resolve(ref)
        predictor = row.serving.get("predictor")
        if not predictor:
            raise FactoryError(f"model '{row.name}' v{row.version} names no predictor, so it cannot be "
                               "served; register it with --predictor module.path:Class (or a job's "
                               "predictor field)")
        load_predictor_class(predictor)
        return row

    def _endpoint(self, name: str) -> Endpoint:
        if name not in self.endpoints:
            have = ", ".join(sorted(self.endpoints)) or "none"
            raise EndpointNotFoundError(f"no endpoint '{name}' (endpoints: {have}); create it with "
                                        f"`factory deploy {name}@ALIAS`")
        return self.endpoints[name]

    def _totals(self, name: str) -> EndpointTotals:
        return self._stats.setdefault(name, EndpointTotals(self.settings.stats_window_s))

    def _replica_states(self) -> dict[str, dict[str, Any]]:
        from ray import serve

        if not self._serve_started:
            return {}
        try:
            applications = serve.status().applications
        except Exception:  # noqa: BLE001 - a listing without replica counts beats no listing
            return {}
        return {name: {"status": str(app.status.value if hasattr(app.status, "value") else app.status),
                       "replicas": sum(sum(d.replica_states.values()) for d in app.deployments.values()),
                       "running": sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())}
                for name, app in applications.items()}

    def _view(self, endpoint: Endpoint, replicas: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        if replicas is None:
            replicas = self._replica_states()
        with self._stats_lock:
            seconds, window = self._totals(endpoint.name).window(time.monotonic())
        versions = {version: summary(counts, seconds) for version, counts in window.items()
                    if counts["requests"]}
        overall = summary(combined(list(window.values())), seconds) if window else summary(combined([]))
        host = "127.0.0.1" if self.settings.http_host in ("0.0.0.0", "::") else self.settings.http_host
        return {**endpoint.model_dump(mode="json"), "ref": endpoint.ref, "traffic": endpoint.traffic(),
                "url": f"http://{host}:{self.settings.http_port}{endpoint.route}",
                "serve": replicas.get(endpoint.name, {"status": "UNKNOWN", "replicas": 0, "running": 0}),
                "updating": endpoint.name in self._updating, "window_s": round(seconds, 1),
                "versions": versions, **{key: overall[key] for key in (
                    "requests", "error_rate", "p50_ms", "p99_ms", "rate_per_s")}}

    def _now_s(self) -> float:
        assert self.clock is not None
        return self.clock.now_s()
