"""The endpoints' state manager: their desired state, the watch round's rules, the changes they make.

Plain Python, no Ray. The ServingActor is a thin shell around it: it hands in a `ServeBackend` (apply
an endpoint to Ray Serve, delete one, read the replicas' states), forwards its commands and runs
`update()` every `serving.watch_interval_s`. Tests drive it with a fake backend and a fake clock.

One `update()` round:
  * re-applies the endpoints loaded at start until each succeeds (the actor may have died between
    storing a change and applying it, or Serve lost the app), and deletes from Serve the endpoints
    whose undeploy was stored but not seen done (the actor died before Serve's delete);
  * follows aliases: an endpoint deployed as NAME@ALIAS rolls to the version the alias points at;
    promoting a canary's version completes the canary;
  * judges canaries on the requests counted since each began (`judge_canary`) and rolls a failing
    one back, audited with the reason;
  * snapshots the request totals that the replicas report, for the windowed stats.

Invariants:
  * Write ahead, then act: an endpoint's new state is stored before the backend is told. If the
    backend refuses, the previous state is stored and applied again (a new endpoint is deleted).
  * A user's canary, rollback or undeploy is written ahead together with its request's record and its
    audit event, in one transaction: a resend after a restart finds the record and does not act
    twice (a rollback would otherwise go back two versions). If Serve refuses, the record is dropped
    and the refusal audited (`endpoint.refused`) in the transaction that restores the endpoint.
  * The store is written only when an endpoint's state changed.
  * A version the backend refused for an alias-following endpoint is audited once and not tried
    again until the alias moves elsewhere (`sync` still reports it).
  * One change to Serve at a time (`apply_lock`); listings and replica reports never wait for one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from factory.config import ServingConfig
from factory.errors import FactoryError, summary_line
from factory.registry.catalog import ModelRegistry
from factory.registry.refs import ModelRef, alias_ref, parse_ref, version_ref
from factory.serving.alias_moves import MOVE_UNKNOWN, FollowedAliasMoves, MoveAlias
from factory.serving.backend import ServeBackend, ServeUnavailableError
from factory.serving.endpoints import (
    Endpoint,
    EndpointNotFoundError,
    check_percent,
    deployed,
    judge_canary,
)
from factory.serving.notes import StoredNotes
from factory.serving.predictor import load_predictor_class
from factory.serving.stats import EndpointTotals, combined, summary
from factory.store import ModelVersionRow, RequestRecord, StateStore

# Notes of work written ahead (`StoredNotes`): endpoints undeployed in the store but not yet deleted from
# Serve. (Alias moves a rollback owes: `FollowedAliasMoves`.)
UNDEPLOYING_STATE = "serving.undeploying"
# How a listing shows an endpoint Serve does not report (not started yet, or lost).
UNKNOWN_REPLICAS = {"status": "UNKNOWN", "replicas": 0, "running": 0}


@dataclass(frozen=True)
class UserChange:
    """A user's change to an endpoint, kept with the endpoint's write-ahead: its request and audit event.

    `action` names the request (`endpoint.canary`); `audit_action` and `detail` the audit event;
    `leads_alias`: the alias the endpoint follows moves to its new version too (a rollback).
    """

    action: str
    request_id: str | None
    audit_action: str
    actor: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    leads_alias: bool = False


class EndpointManager:
    """Every endpoint's desired state, kept in the store and applied through a `ServeBackend`."""

    def __init__(self, store: StateStore, registry: ModelRegistry, backend: ServeBackend,
                 settings: ServingConfig, *, now_s: Callable[[], float],
                 audit: Callable[..., int], record_error: Callable[[BaseException | str], None],
                 move_alias: MoveAlias,
                 monotonic_s: Callable[[], float] = time.monotonic) -> None:
        """`now_s` is factory time (stamps and audit); `monotonic_s` real time (request-stat windows).

        `move_alias(model, alias, version, by, if_last_change)` moves a registry alias if its latest move
        is still the change `if_last_change`, else raises `AliasMovedError`, and returns the id of the
        change it made (the registry actor does it, so the move is audited and its followers see it);
        `audit(action, subject, actor=None, **detail)`.
        """
        self.store = store
        self.registry = registry
        self.backend = backend
        self.settings = settings
        self._now_s = now_s
        self._audit = audit
        self._record_error = record_error
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
        self._undeploying = StoredNotes(store, UNDEPLOYING_STATE)
        self._aliases = FollowedAliasMoves(store, move_alias)  # aliases to move before following

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
            done = self._done(request_id, "endpoint.deploy")
            if done is not None:
                return self.endpoints.get(done.name, done)
            ref = parse_ref(ref_text)
            row = self.servable(ref)
            now_s = self._now_s()
            current = self.endpoints.get(ref.name)
            endpoint = deployed(current, list(self.endpoints.values()), model=ref.name, follows=ref.alias,
                                version=row.version, route=route, replicas=replicas, by=deployed_by,
                                now_s=now_s)
            down = self._change_even_if_serve_is_down(current, endpoint)

            def recorded_with_its_effect() -> dict[str, Any]:
                self._persist()
                self._audit("endpoint.deployed", endpoint.name, actor=deployed_by or None, ref=endpoint.ref,
                            version=endpoint.stable_version, route=endpoint.route, replicas=endpoint.replicas)
                return endpoint.model_dump(mode="json")

            self.store.once(request_id, "endpoint.deploy", now_s, recorded_with_its_effect)
        if down is not None:
            raise down
        return endpoint

    def canary(self, name: str, version: int, percent: float, set_by: str = "",
               request_id: str | None = None) -> Endpoint:
        """Send `percent` of endpoint `name`'s requests to `version`, watched for errors and latency.

        A `request_id` that took effect changes nothing and answers with the endpoint as it is now.
        """
        check_percent(percent)  # before the endpoint: a bad share is the first thing to fix
        with self.apply_lock:
            done = self._done(request_id, "endpoint.canary")
            if done is not None:
                return self._as_it_is_now(done, "endpoint.canary")
            current = self.endpoint(name)
            endpoint = current.with_canary(version, percent, self._now_s())
            self.servable(ModelRef(current.model, version=version))
            self._change(current, endpoint, UserChange(
                "endpoint.canary", request_id, "endpoint.canary", set_by or None,
                {"version": version, "percent": percent, "stable_version": endpoint.stable_version}))
            with self._stats_lock:
                self._canary_marks[name] = self._totals(name).mark()
        return endpoint

    def rollback(self, name: str, rolled_back_by: str = "", request_id: str | None = None) -> Endpoint:
        """Take the canary out; without one, return to the version served before the current one.

        An endpoint that follows an alias moves the alias back too, after the rollback is stored (with a
        note that the move is due, so a restart finishes it) and before Serve is told. If the registry
        does not answer, Serve still rolls back and the watch rounds finish the move (the endpoint leads
        its alias meanwhile); if Serve refuses, the rollback is undone, the alias included. So the alias
        and the endpoint keep agreeing. A `request_id` that took effect rolls nothing back again: resent
        after a restart, a rollback goes back one version, not two.
        """
        with self.apply_lock:
            done = self._done(request_id, "endpoint.rollback")
            if done is not None:
                return self._as_it_is_now(done, "endpoint.rollback")
            current = self.endpoint(name)
            endpoint = current.rolled_back(rolled_back_by, self._now_s())
            if current.canary_version is not None:
                detail: dict[str, Any] = {"version": current.canary_version, "canary": True}
            else:
                detail = {"from_version": current.stable_version, "version": endpoint.stable_version}
            self._change(current, endpoint, UserChange(
                "endpoint.rollback", request_id, "endpoint.rolled_back", rolled_back_by or None, detail,
                leads_alias=current.canary_version is None and current.follows is not None))
        return endpoint

    def undeploy(self, name: str, undeployed_by: str = "", request_id: str | None = None) -> Endpoint:
        """Stop serving endpoint `name` and forget it; the endpoint as it was.

        The removal is stored with the request's record, the audit event and a note that Serve has yet
        to delete it, before Serve is told; if a restart comes between, the first round (or the
        request's resend) deletes it. A `request_id` that took effect answers with the endpoint it
        undeployed.
        """
        with self.apply_lock:
            done = self._done(request_id, "endpoint.undeploy")
            if done is not None:
                if done.name in self._undeploying and done.name not in self.endpoints:
                    self._try_delete_from_serve(done.name)  # the restart came before Serve's delete
                return done
            endpoint = self.endpoint(name)
            del self.endpoints[name]
            try:
                with self.store.transaction():
                    self._persist()
                    self._write_ahead(endpoint, UserChange(
                        "endpoint.undeploy", request_id, "endpoint.undeployed", undeployed_by or None,
                        {"ref": endpoint.ref}))
                    self._undeploying.put(name)
            except BaseException:
                self.endpoints[name] = endpoint  # nothing was stored
                raise
            with self._stats_lock:
                self._stats.pop(name, None)
                self._canary_marks.pop(name, None)
            self._try_delete_from_serve(name)
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
            self._finish_undeploys()
            for name in self._aliases:
                if name not in self.endpoints:
                    self._aliases.drop(name)  # undeployed since: it leads nothing
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

    def _finish_undeploys(self) -> None:
        """Delete from Serve the endpoints whose undeploy was stored but not seen done (a restart came
        before Serve's delete), unless deployed again since. Only those: Serve may also run apps of the
        factory's model server that the factory does not manage (`factory deploy --export`)."""
        for name in self._undeploying:
            if name in self.endpoints:  # deployed again since: Serve runs what is stored
                self._undeploying.drop(name)
            else:
                self._try_delete_from_serve(name)

    def _try_delete_from_serve(self, name: str) -> None:
        """Serve's delete of the undeployed endpoint `name`, then its note dropped; a failure is recorded
        and the note kept, so the next round tries again."""
        try:
            self.backend.delete(name)
        except Exception as error:  # noqa: BLE001 - it is undeployed; the next round deletes it
            self._record_error(f"endpoint '{name}': undeployed, but Serve's delete failed (the factory "
                               f"tries again): {summary_line(error)}")
            return
        self._undeploying.drop(name)

    def _follow_alias(self, endpoint: Endpoint, report_refused: bool = False) -> None:
        """Roll `endpoint` to where its alias points; a target refused before is skipped (or reported).

        An endpoint whose alias must still be moved to it (`FollowedAliasMoves`) leads it: the move is done
        first (if it cannot be, nothing is followed), so a round never undoes a rollback.
        """
        if endpoint.name in self._aliases:
            self._aliases.make(endpoint)
        if endpoint.follows is None:
            return
        version = self._aliases.version(endpoint)
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
            down = self._change_even_if_serve_is_down(endpoint, updated)
        except FactoryError as error:  # refused once, audited; tried again when the alias moves
            self._refused[endpoint.name] = (version, str(error))
            self._audit("endpoint.roll_refused", endpoint.name, version=version, reason=str(error))
            raise
        self._audit("endpoint.rolled", endpoint.name, from_version=endpoint.stable_version, version=version,
                    reason=f"{alias_ref(endpoint.model, endpoint.follows)} moved to v{version}",
                    canary_completed=endpoint.canary_version == version)
        if down is not None:
            raise down

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
        down = self._change_even_if_serve_is_down(endpoint, updated)
        self._audit("endpoint.rolled_back", endpoint.name, version=endpoint.canary_version, canary=True,
                    automatic=True, reason=reason)
        if down is not None:
            raise down

    # -- changing ------------------------------------------------------------------------------------

    def _change(self, current: Endpoint | None, endpoint: Endpoint, change: UserChange | None = None) -> None:
        """Store `endpoint` (with `change`'s request and audit event), then apply it; if Serve refuses,
        store (and apply) `current` again, dropping `change`'s request and auditing the refusal.

        The endpoint reads as `updating` from before its new state is visible until Serve serves it.
        """
        self._updating.add(endpoint.name)
        try:
            self._change_now(current, endpoint, change)
        finally:
            self._updating.discard(endpoint.name)

    def _change_now(self, current: Endpoint | None, endpoint: Endpoint, change: UserChange | None) -> None:
        self.endpoints[endpoint.name] = endpoint
        notes = self._aliases.copy()
        try:
            with self.store.transaction():
                if endpoint != current:
                    self._persist()
                if change is not None:
                    self._write_ahead(endpoint, change)
        except BaseException:
            self._keep_in_memory(endpoint.name, current)  # nothing was stored
            self._aliases.restore(notes)  # nor an alias note
            raise
        alias_before = None  # where the alias pointed before a rollback moves it (its note says)
        moved = None  # the alias change the rollback made (MOVE_UNKNOWN: its answer was lost)
        if change is not None and change.leads_alias:
            alias_before = self._aliases.from_version(endpoint.name)
            try:
                moved = self._aliases.make(endpoint)
            except FactoryError as error:  # noted: the rounds move it; Serve rolls back meanwhile
                moved = MOVE_UNKNOWN
                self._record_error(f"endpoint '{endpoint.name}': its alias '{endpoint.follows}' is not moved "
                                   f"back yet (the factory tries again): {summary_line(error)}")
        try:
            self.backend.apply(endpoint)
        except ServeUnavailableError as error:  # no verdict: the change stands
            raise self._stands(endpoint.name, summary_line(error)) from None
        except FactoryError as refusal:
            self._undo_change(current, endpoint, change, refusal, alias_before, moved)
            raise
        except Exception as error:  # no verdict from Serve either: the change stands, as above
            raise self._stands(endpoint.name, f"Serve did not answer ({type(error).__name__}: "
                                              f"{summary_line(error)})", until="Serve does") from error

    def _stands(self, name: str, cause: str, until: str = "Serve is up") -> ServeUnavailableError:
        """Serve gave no verdict on endpoint `name`'s stored change: the rounds apply it once `until`."""
        self._to_reconcile.add(name)
        return ServeUnavailableError(f"{cause}; endpoint '{name}' is stored as asked and the factory applies "
                                     f"it once {until}: do not send the change again")

    def _change_even_if_serve_is_down(self, current: Endpoint | None,
                                      endpoint: Endpoint) -> ServeUnavailableError | None:
        """`_change`, but Serve being down is returned, not raised: the change stands (stored, applied by
        the rounds once Serve is up), so the caller records it before raising that."""
        try:
            self._change(current, endpoint)
        except ServeUnavailableError as error:
            return error
        return None

    def _undo_change(self, current: Endpoint | None, endpoint: Endpoint, change: UserChange | None,
                     refusal: FactoryError, alias_before: int | None = None,
                     moved: int | None = None) -> None:
        """Serve refused `endpoint`: store `current` again (dropping `change`'s request and auditing the
        refusal), then move the alias back and apply `current`; written before acted on, as every change."""
        self._keep_in_memory(endpoint.name, current)
        with self.store.transaction():
            if endpoint != current:
                self._persist()
            if change is not None:
                self._undo(endpoint, change, refusal, alias_before, moved)
        if current is None:
            self._delete_quietly(endpoint.name)
            return
        try:
            if change is not None and change.leads_alias:
                self._aliases.make(current)  # back where it was, if it had moved
            self.backend.apply(current)
        except FactoryError as error:  # the next rounds try again (`_aliases`, `_to_reconcile`)
            self._to_reconcile.add(current.name)
            self._record_error(error)

    def _keep_in_memory(self, name: str, endpoint: Endpoint | None) -> None:
        if endpoint is None:
            self.endpoints.pop(name, None)
        else:
            self.endpoints[name] = endpoint

    def _write_ahead(self, endpoint: Endpoint, change: UserChange) -> None:
        """`change`'s request record, audit event and alias note, in the transaction storing `endpoint`."""
        if change.leads_alias:
            self._aliases.note(endpoint, change.actor, self._aliases.version(endpoint),
                               endpoint.stable_version)
        if change.request_id is not None:
            self.store.record_request(RequestRecord(
                request_id=change.request_id, action=change.action,
                result=endpoint.model_dump(mode="json"), time_s=self._now_s()))
        self._audit(change.audit_action, endpoint.name, actor=change.actor, **change.detail)

    def _undo(self, endpoint: Endpoint, change: UserChange, refusal: FactoryError,
              alias_before: int | None, moved: int | None) -> None:
        """`change` was refused: a retry acts again, the audit log says it was undone, and an alias it
        moved (the change `moved`) is due to move back to where it pointed before (`alias_before`),
        unless a user moved it since: only the rollback's own move is undone."""
        if change.leads_alias and alias_before is not None and moved is not None:
            self._aliases.note(endpoint, change.actor, endpoint.stable_version, alias_before,
                               None if moved == MOVE_UNKNOWN else moved)
        if change.request_id is not None:
            self.store.forget_request(change.request_id)
        self._audit("endpoint.refused", endpoint.name, actor=change.actor, change=change.audit_action,
                    reason=summary_line(refusal))

    def _done(self, request_id: str | None, action: str) -> Endpoint | None:
        """The endpoint as the request `request_id` left it, if that request took effect; else None."""
        done = self.store.request_done(request_id, action)
        return None if done is None else Endpoint.model_validate(done.result)

    def _as_it_is_now(self, done: Endpoint, action: str) -> Endpoint:
        """The endpoint a request that took effect changed, as it is now: its alias moved and Serve running
        it before the answer (a resend after a restart may come before the first round finished them)."""
        endpoint = self.endpoints.get(done.name)
        if endpoint is None:
            return done
        try:
            if endpoint.name in self._aliases:
                self._aliases.make(endpoint)
            if endpoint.name in self._to_reconcile:
                self._reconcile(endpoint)
        except FactoryError as error:
            raise FactoryError(
                f"endpoint '{endpoint.name}': the {action.removeprefix('endpoint.')} took effect, but "
                f"{summary_line(error)}; the factory keeps trying, so do not send it again "
                "(`factory endpoints` shows the endpoint)") from None
        return endpoint

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
