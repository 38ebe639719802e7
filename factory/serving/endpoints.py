"""Endpoints as the ServingActor keeps them, and the pure rules it applies to them.

An endpoint serves one model under a route. It either follows an alias (`follows`: its stable
version moves when the alias does) or is pinned to a version. It may run a canary: another version
that gets `canary_percent` of the requests until it is promoted, rolled back by hand or rolled back
automatically (`judge_canary`).

Invariants:
  * `history` holds the stable versions served before the current one, oldest first; `rollback`
    returns to its last entry and removes it, so rolling back twice goes two versions back.
  * A canary is never the stable version.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from factory.config import ServingConfig
from factory.errors import FactoryError
from factory.registry.refs import alias_ref, version_ref
from factory.serving.stats import quantile_ms

HISTORY_KEPT = 20
# A p99 of fewer answers is their maximum: one slow request (a GC pause, a busy core) would decide.
LATENCY_MIN_ANSWERS = 100


class EndpointNotFoundError(FactoryError):
    """An endpoint that is not deployed."""


class Rollback(BaseModel):
    """A canary (or version) taken out of service, and why."""

    version: int
    reason: str
    time_s: float
    automatic: bool


class Endpoint(BaseModel):
    """One endpoint's desired state (persisted before it is applied to Serve)."""

    name: str
    model: str
    follows: str | None = Field(None, description="The alias followed; None: pinned to `stable_version`.")
    route: str
    replicas: int | None = Field(None, description="A fixed replica count; None: autoscaling from config.")
    stable_version: int
    canary_version: int | None = None
    canary_percent: float = 0.0
    canary_since_s: float | None = None
    history: list[int] = Field(default_factory=list)
    last_rollback: Rollback | None = None
    created_s: float
    updated_s: float
    deployed_by: str = ""

    @property
    def ref(self) -> str:
        """What the endpoint serves, as the user wrote it: NAME@ALIAS or NAME:VERSION."""
        if self.follows:
            return alias_ref(self.model, self.follows)
        return version_ref(self.model, self.stable_version)

    def traffic(self) -> dict[str, float]:
        """{NAME:V: percent of requests}."""
        stable = version_ref(self.model, self.stable_version)
        if self.canary_version is None:
            return {stable: 100.0}
        canary = version_ref(self.model, self.canary_version)
        return {stable: 100.0 - self.canary_percent, canary: self.canary_percent}

    def with_stable(self, version: int, now_s: float) -> Endpoint:
        """Serve `version` as stable; the current one joins the history (a canary that became it ends)."""
        if version == self.stable_version:
            return self
        history = [*self.history, self.stable_version][-HISTORY_KEPT:]
        canary = None if self.canary_version == version else self.canary_version
        return self.model_copy(update={
            "stable_version": version, "history": history, "canary_version": canary,
            "canary_percent": self.canary_percent if canary else 0.0,
            "canary_since_s": self.canary_since_s if canary else None, "updated_s": now_s})

    def with_canary(self, version: int, percent: float, now_s: float) -> Endpoint:
        """`percent` of the requests to `version`, from now (its counts are judged from now on)."""
        check_percent(percent)
        if version == self.stable_version:
            raise FactoryError(f"endpoint '{self.name}' already serves v{version}; "
                               "a canary is another version")
        return self.model_copy(update={"canary_version": version, "canary_percent": percent,
                                       "canary_since_s": now_s, "updated_s": now_s})

    def rolled_back(self, by: str, now_s: float) -> Endpoint:
        """By hand: the canary taken out; without one, the version served before the current one again.

        An endpoint that follows an alias must move the alias back to the new `stable_version` too (the
        caller does, once the rollback is stored), so that the alias and the endpoint keep agreeing.
        """
        who = by or "a user"
        if self.canary_version is not None:
            return self.without_canary(f"rolled back by {who}", now_s, automatic=False)
        if not self.history:
            raise FactoryError(f"endpoint '{self.name}' has served only v{self.stable_version}: "
                               "there is no previous version to return to")
        previous = self.history[-1]
        return self.model_copy(update={
            "stable_version": previous, "history": self.history[:-1], "updated_s": now_s,
            "last_rollback": Rollback(version=self.stable_version, time_s=now_s, automatic=False,
                                      reason=f"rolled back to v{previous} by {who}")})

    def without_canary(self, reason: str, now_s: float, *, automatic: bool) -> Endpoint:
        """The canary rolled back: all traffic to the stable version again."""
        assert self.canary_version is not None
        return self.model_copy(update={
            "canary_version": None, "canary_percent": 0.0, "canary_since_s": None, "updated_s": now_s,
            "last_rollback": Rollback(version=self.canary_version, reason=reason, time_s=now_s,
                                      automatic=automatic)})


def deployed(current: Endpoint | None, others: list[Endpoint], *, model: str, follows: str | None,
             version: int, route: str | None, replicas: int | None, by: str, now_s: float) -> Endpoint:
    """The endpoint a deploy of `model` (pinned to `version`, or following `follows`) leaves.

    A new endpoint listens on `route` or `/models/NAME`; a redeploy keeps its route and replica count
    unless given, and its stable version joins the history. A route another endpoint (`others`) has is
    refused.
    """
    route = check_route(route) if route else (current.route if current else default_route(model))
    clash = next((e.name for e in others if e.route == route and e.name != model), None)
    if clash:
        raise FactoryError(f"route {route} is taken by endpoint '{clash}'; choose another with --route")
    if current is None:
        return Endpoint(name=model, model=model, follows=follows, route=route, replicas=replicas,
                        stable_version=version, created_s=now_s, updated_s=now_s, deployed_by=by)
    return current.with_stable(version, now_s).model_copy(update={
        "follows": follows, "route": route, "updated_s": now_s, "deployed_by": by,
        "replicas": replicas if replicas is not None else current.replicas})


def default_route(name: str) -> str:
    """Where an endpoint listens unless told: /models/NAME."""
    return f"/models/{name}"


def check_route(route: str) -> str:
    """A Serve route prefix: starts with '/', no trailing '/', not the root (the gateway's)."""
    given = route
    route = route.rstrip("/") or "/"
    if not route.startswith("/") or route == "/" or any(c in route for c in " ?#{}"):
        raise FactoryError(f"route {given!r} is invalid: use a path like /models/NAME (not '/', no spaces, "
                           "'?', '#' or braces)")
    return route


def check_percent(percent: float) -> float:
    """A canary share: more than 0, less than 100."""
    if not 0 < percent < 100:
        raise FactoryError(f"--percent {percent:g} is out of range: give a share between 0 and 100 "
                           "(exclusive); promote the version to send it everything")
    return percent


def judge_canary(canary: dict[str, Any], stable: dict[str, Any], config: ServingConfig) -> str | None:
    """Why the canary must be rolled back, from the counts of both since it started; None: keep it.

    Nothing is judged before the canary answered `canary_min_requests`. Then: an error rate (5xx)
    above `canary_max_error_rate`; or, with as many stable answers to compare with, a share of
    requests refused as invalid (4xx) that exceeds the stable version's by more than that rate, or
    (once both sides answered `LATENCY_MIN_ANSWERS`) a p99 latency above `canary_max_latency_ratio`
    times the stable version's.
    """
    requests = canary["requests"]
    if requests < config.canary_min_requests:
        return None
    error_rate = canary["errors"] / requests
    if error_rate > config.canary_max_error_rate:
        return (f"{canary['errors']} of {requests} requests failed ({error_rate:.0%} > "
                f"{config.canary_max_error_rate:.0%} allowed)")
    if stable["requests"] >= config.canary_min_requests:
        # Requests the canary refuses (4xx) that the stable version accepts: its input schema changed.
        canary_rejected = canary["rejected"] / requests
        stable_rejected = stable["rejected"] / stable["requests"]
        if canary_rejected - stable_rejected > config.canary_max_error_rate:
            return (f"it refused {canary_rejected:.0%} of requests as invalid, the stable version "
                    f"{stable_rejected:.0%} (its input schema differs?)")
        if min(requests, stable["requests"]) < LATENCY_MIN_ANSWERS:
            return None
        canary_p99 = quantile_ms(canary["buckets"], 0.99)
        stable_p99 = quantile_ms(stable["buckets"], 0.99)
        limit = config.canary_max_latency_ratio
        if canary_p99 is not None and stable_p99 and canary_p99 > limit * stable_p99:
            return (f"p99 latency {canary_p99:.1f} ms > {config.canary_max_latency_ratio:g} x the stable "
                    f"version's {stable_p99:.1f} ms")
    return None
