"""The endpoints' state manager: their desired state, the watch round's rules, the changes they make.

Plain Python, no Ray. The ServingActor is a thin shell around it: it hands in a `ServeBackend` (apply
an endpoint to Ray Serve, delete one, read the replicas' states), forwards its commands and runs
`update()` every `serving.watch_interval_s`. Tests drive it with a fake backend and a fake clock.

One `update()` round:
  * re-applies the endpoints loaded at start until each succeeds (the actor may have died between
    storing a change and applying it, or Serve lost the app);
  * follows aliases: an endpoint deployed as NAME@ALIAS rolls to the version the alias points at;
    promoting a canary's version completes the canary;
  * judges canaries on the requests counted since each began (`judge_canary`) and rolls a failing
    one back, audited with the reason;
  * snapshots the request totals that the replicas report, for the windowed stats.

Invariants:
  * Write ahead, then act: an endpoint's new state is stored before the backend is told. If the
    backend refuses, the previous state is stored and applied again (a new endpoint is deleted).
  * The store is written only when an endpoint's state changed.
  * A version the backend refused for an alias-following endpoint is audited once and not tried
    again until the alias moves elsewhere (`sync` still reports it).
  * One change to Serve at a time (`apply_lock`); listings and replica reports never wait for one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from factory.config import ServingConfig
from factory.errors import FactoryError, summary_line
from factory.registry.catalog import ModelRegistry
from factory.registry.refs import ModelRef, alias_ref, parse_ref, version_ref
from factory.serving.endpoints import (
    Endpoint,
    EndpointNotFoundError,
    check_percent,
    deployed,
    judge_canary,
)
from factory.serving.predictor import load_predictor_class
from factory.serving.stats import EndpointTotals, combined, summary
from factory.store import ModelVersionRow, StateStore

# How a listing shows an endpoint Serve does not report (not started yet, or lost).
UNKNOWN_REPLICAS = {"status": "UNKNOWN", "replicas": 0, "running": 0}


class ServeBackend(Protocol):
    """What the manager needs from Ray Serve."""

    def apply(self, endpoint: Endpoint) -> None:
        """Serve `endpoint` as it is now, returning once Serve runs it; FactoryError if it cannot."""

    def delete(self, name: str) -> None:
        """Stop serving the endpoint `name` (nothing if it is not served)."""

    def replica_states(self) -> dict[str, dict[str, Any]]:
        """{endpoint: {"status", "replicas", "running"}} for what Serve runs now; {} if unknown."""


class EndpointManager:
    """Every endpoint's desired state, kept in the store and applied through a `ServeBackend`."""

    def __init__(self, store: StateStore, registry: ModelRegistry, backend: ServeBackend,
                 settings: ServingConfig, *, now_s: Callable[[], float],
                 audit: Callable[..., int], record_error: Callable[[BaseException | str], None],
                 move_alias: Callable[[str, str, int, str], None],
                 monotonic_s: Callable[[], float] = time.monotonic) -> None:
        """`now_s` is factory time (stamps and audit); `monotonic_s` real time (request-stat windows).

        `move_alias(model, alias, version, by)` moves a registry alias (the registry actor does it, so
        the move is audited and its followers see it); `audit(action, subject, actor=None, **detail)`.
        """
        self.store = store
        self.registry = registry
        self.backend = backend
        self.settings = settings
        self._now_s = now_s
        self._audit = audit
        self._record_error = record_error
        self._move_alias = move_alias
        self._monotonic_s = monotonic_s
        self.endpoints: dict[str, Endpoint] = {
            name: Endpoint.model_validate(value) for name, value in store.list_endpoints().items()}
        self.apply_lock = threading.RLock()  # one change to Serve at a time
        self._stats_lock = threading.Lock()
        self._stats: dict[str, EndpointTotals] = {}
        self._canary_marks: dict[str, dict[str, dict[str, Any]]] = {}
        self._to_reconcile = set(self.endpoints)  # re-applied by the first rounds (a restart)
        self._refused: dict[str, tuple[int, str]] = {}  # endpoint -> (alias target refused, why)
        self._updating: set[str] = set()  # endpoints whose change Serve is applying now

    # -- commands ------------------------------------------------------------------------------------

    def deploy(self, ref_text: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str = "", request_id: str | None = None) -> Endpoint:
        """Create or update the endpoint of the model `ref_text` names (NAME@ALIAS, NAME:VERSION, NAME).

        A `request_id` that took effect changes nothing and answers with the endpoint it deployed; one
        resent while the first still deploys waits for it (`apply_lock`). The endpoint is written ahead
        of Serve's deploy (a restart reconciles what was written), then written again with the request's
        record and the audit event in one transaction once Serve serves it: Serve's deploy takes minutes,
        too long to hold the store's write lock. A retry after a crash between the two writes finds the
        endpoint already as asked (`with_stable` of the same version changes nothing), so it deploys
        the same again and records the request once: one endpoint, one history entry, one audit event.
        """
        with self.apply_lock:
            done = self.store.request_done(request_id, "endpoint.deploy")
            if done is not None:
                recorded = Endpoint.model_validate(done.result)
                return self.endpoints.get(recorded.name, recorded)
            ref = parse_ref(ref_text)
            row = self.servable(ref)
            now_s = self._now_s()
            current = self.endpoints.get(ref.name)
            endpoint = deployed(current, list(self.endpoints.values()), model=ref.name, follows=ref.alias,
                                version=row.version, route=route, replicas=replicas, by=deployed_by,
                                now_s=now_s)
            self._change(current, endpoint)

            def recorded_with_its_effect() -> dict[str, Any]:
                self._persist()
                self._audit("endpoint.deployed", endpoint.name, actor=deployed_by or None, ref=endpoint.ref,
                            version=endpoint.stable_version, route=endpoint.route, replicas=endpoint.replicas)
                return endpoint.model_dump(mode="json")

            self.store.once(request_id, "endpoint.deploy", now_s, recorded_with_its_effect)
        return endpoint

    def canary(self, name: str, version: int, percent: float, set_by: str = "") -> Endpoint:
        """Send `percent` of endpoint `name`'s requests to `version`, watched for errors and latency."""
        check_percent(percent)  # before the endpoint: a bad share is the first thing to fix
        with self.apply_lock:
            current = self.endpoint(name)
            endpoint = current.with_canary(version, percent, self._now_s())
            self.servable(ModelRef(current.model, version=version))
            self._change(current, endpoint)
            with self._stats_lock:
                self._canary_marks[name] = self._totals(name).mark()
            self._audit("endpoint.canary", name, actor=set_by or None, version=version, percent=percent,
                        stable_version=endpoint.stable_version)
        return endpoint

    def rollback(self, name: str, rolled_back_by: str = "") -> Endpoint:
        """Take the canary out; without one, return to the version served before the current one.

        An endpoint that follows an alias moves the alias back too (first: if it cannot move, nothing
        changed), so the alias and the endpoint keep agreeing.
        """
        with self.apply_lock:
            current = self.endpoint(name)
            endpoint = current.rolled_back(rolled_back_by, self._now_s())
            if current.canary_version is not None:
                self._change(current, endpoint)
                self._audit("endpoint.rolled_back", name, actor=rolled_back_by or None,
                            version=current.canary_version, canary=True)
                return endpoint
            if current.follows:
                self._move_alias(current.model, current.follows, endpoint.stable_version,
                                 rolled_back_by or "serving")
            self._change(current, endpoint)
            self._audit("endpoint.rolled_back", name, actor=rolled_back_by or None,
                        from_version=current.stable_version, version=endpoint.stable_version)
        return endpoint

    def undeploy(self, name: str, undeployed_by: str = "") -> Endpoint:
        """Stop serving endpoint `name` and forget it."""
        with self.apply_lock:
            endpoint = self.endpoint(name)
            del self.endpoints[name]
            self._persist()
            self.backend.delete(name)
            with self._stats_lock:
                self._stats.pop(name, None)
                self._canary_marks.pop(name, None)
            self._audit("endpoint.undeployed", name, actor=undeployed_by or None, ref=endpoint.ref)
        return endpoint

    def take_down(self) -> list[str]:
        """Stop serving every endpoint but keep them in the store (`factory down`); return their names.

        The next start applies them again (its first round re-applies what Serve does not run).
        """
        with self.apply_lock:
            for name in self.endpoints:
                self._delete_quietly(name)
            if self.endpoints:
                self._audit("endpoint.taken_down", ",".join(sorted(self.endpoints)))
        return sorted(self.endpoints)

    def sync(self) -> None:
        """Follow aliases now rather than at the next round (a promote waits for it).

        Every endpoint is tried; those that could not follow are named in one error at the end.
        """
        failed = []
        with self.apply_lock:
            for endpoint in list(self.endpoints.values()):
                try:
                    self._follow_alias(endpoint, report_refused=True)
                except FactoryError as error:
                    failed.append(f"endpoint '{endpoint.name}': {error}")
        if failed:
            raise FactoryError("; ".join(failed))

    def report(self, endpoint: str, replica_id: str, counts: dict[str, dict[str, Any]]) -> None:
        """A replica's cumulative request counts per version (sent every `report_interval_s`)."""
        if endpoint in self.endpoints:
            with self._stats_lock:
                self._totals(endpoint).add_report(replica_id, counts, self._monotonic_s())

    # -- the watch round -----------------------------------------------------------------------------

    def update(self) -> None:
        """One round: re-apply what a restart may have missed, follow aliases, judge canaries, snapshot.

        Each endpoint is handled on its own: one that fails is recorded (`record_error`) and the others
        are still followed and judged.
        """
        with self.apply_lock:
            for name in sorted(self._to_reconcile):
                self._each(name, self._reconcile)
            for name in list(self.endpoints):
                self._each(name, self._follow_alias)
                self._each(name, self._judge)
        with self._stats_lock:
            now = self._monotonic_s()
            for name in list(self.endpoints):
                self._totals(name).snapshot(now)
                self._totals(name).forget_silent(now, 10 * self.settings.report_interval_s + 60)

    def _each(self, name: str, step: Callable[[Endpoint], None]) -> None:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return
        try:
            step(endpoint)
        except Exception as error:  # noqa: BLE001 - see `update`
            self._record_error(f"endpoint '{name}': {summary_line(error)}")

    def _reconcile(self, endpoint: Endpoint) -> None:
        self.backend.apply(endpoint)  # an app that did not change is a no-op for Serve
        self._to_reconcile.discard(endpoint.name)

    def _follow_alias(self, endpoint: Endpoint, report_refused: bool = False) -> None:
        """Roll `endpoint` to where its alias points; a target refused before is skipped (or reported)."""
        if endpoint.follows is None:
            return
        version = self.store.model_aliases(endpoint.model).get(endpoint.model, {}).get(endpoint.follows)
        if version in (None, endpoint.stable_version):
            return
        refused = self._refused.get(endpoint.name)
        if refused is not None and refused[0] == version:
            if report_refused:  # `sync` (a promote) must say so even if a round refused it first
                raise FactoryError(refused[1])
            return
        updated = endpoint.with_stable(version, self._now_s())
        try:
            self.servable(ModelRef(endpoint.model, version=version))
            self._change(endpoint, updated)
        except FactoryError as error:  # refused once, audited; tried again when the alias moves
            self._refused[endpoint.name] = (version, str(error))
            self._audit("endpoint.roll_refused", endpoint.name, version=version, reason=str(error))
            raise
        self._audit("endpoint.rolled", endpoint.name, from_version=endpoint.stable_version, version=version,
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
        self._audit("endpoint.rolled_back", endpoint.name, version=endpoint.canary_version, canary=True,
                    automatic=True, reason=reason)

    # -- changing ------------------------------------------------------------------------------------

    def _change(self, current: Endpoint | None, endpoint: Endpoint) -> None:
        """Store `endpoint`, then apply it; if Serve refuses, store (and apply) `current` again.

        The endpoint reads as `updating` from before its new state is visible until Serve serves it.
        """
        self._updating.add(endpoint.name)
        try:
            self._change_now(current, endpoint)
        finally:
            self._updating.discard(endpoint.name)

    def _change_now(self, current: Endpoint | None, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.name] = endpoint
        if endpoint != current:
            self._persist()
        try:
            self.backend.apply(endpoint)
        except FactoryError:
            if current is None:
                del self.endpoints[endpoint.name]
                self._delete_quietly(endpoint.name)
            else:
                self.endpoints[endpoint.name] = current
                try:
                    self.backend.apply(current)
                except FactoryError as error:
                    self._record_error(error)
            if endpoint != current:
                self._persist()
            raise

    def _delete_quietly(self, name: str) -> None:
        try:
            self.backend.delete(name)
        except Exception as error:  # noqa: BLE001 - best effort after a failed deploy
            self._record_error(error)

    def _persist(self) -> None:
        self.store.replace_endpoints({name: e.model_dump(mode="json") for name, e in self.endpoints.items()})

    # -- reading -------------------------------------------------------------------------------------

    def servable(self, ref: ModelRef) -> ModelVersionRow:
        """The version `ref` names, if it can be served (it names a predictor that imports)."""
        row = self.registry.resolve(ref)
        predictor = row.serving.get("predictor")
        if not predictor:
            raise FactoryError(f"model '{row.name}' v{row.version} names no predictor, so it cannot be "
                               "served; register it with --predictor module.path:Class (or a job's "
                               "predictor field)")
        load_predictor_class(predictor)
        return row

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint `name`; EndpointNotFoundError naming those there are."""
        if name not in self.endpoints:
            have = ", ".join(sorted(self.endpoints)) or "none"
            raise EndpointNotFoundError(f"no endpoint '{name}' (endpoints: {have}); create it with "
                                        f"`factory deploy {name}@ALIAS`")
        return self.endpoints[name]

    def views(self) -> list[dict[str, Any]]:
        """Every endpoint as `view` shows it, by name (one read of Serve's replica states)."""
        replicas = self.backend.replica_states()
        return [self.view(endpoint, replicas) for endpoint in sorted(self.endpoints.values(),
                                                                    key=lambda e: e.name)]

    def view(self, endpoint: Endpoint, replicas: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """`endpoint` as users see it: its state, URL, traffic split, replicas and request stats."""
        if replicas is None:
            replicas = self.backend.replica_states()
        with self._stats_lock:
            seconds, window = self._totals(endpoint.name).window(self._monotonic_s())
        versions = {version: summary(counts, seconds) for version, counts in window.items()
                    if counts["requests"]}
        overall = summary(combined(list(window.values())), seconds) if window else summary(combined([]))
        host = "127.0.0.1" if self.settings.http_host in ("0.0.0.0", "::") else self.settings.http_host
        return {**endpoint.model_dump(mode="json"), "ref": endpoint.ref, "traffic": endpoint.traffic(),
                "url": f"http://{host}:{self.settings.http_port}{endpoint.route}",
                "serve": replicas.get(endpoint.name, UNKNOWN_REPLICAS),
                "updating": endpoint.name in self._updating, "window_s": round(seconds, 1),
                "versions": versions, **{key: overall[key] for key in (
                    "requests", "error_rate", "p50_ms", "p99_ms", "rate_per_s")}}

    def _totals(self, name: str) -> EndpointTotals:
        return self._stats.setdefault(name, EndpointTotals(self.settings.stats_window_s))
