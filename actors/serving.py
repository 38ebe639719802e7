"""ServingActor: deploys registry models as Ray Serve endpoints and keeps them where they should be.

A thin shell over `factory.serving.manager.EndpointManager`, which holds the endpoints' desired
state (stored before Serve is told: write ahead, then act) and the watch round's rules (follow
aliases, judge canaries, re-apply after a restart), runs its `update()` every
`serving.watch_interval_s` and gives it `RayServe`: `serve.run` of `deployments.model_server`. A
rollout changes only the replicas' `user_config`, which Serve applies in place, so requests keep
being answered throughout.

Replicas send their request counts (`report`); `endpoints()` shows them per endpoint and version.
Every change is audited: `endpoint.deployed`, `endpoint.rolled`, `endpoint.canary`,
`endpoint.rolled_back`, `endpoint.undeployed`, and a user's change Serve refused, `endpoint.refused`.
"""

from __future__ import annotations

import time
from typing import Any

from actors.control_plane import ControlPlaneActor
from deployments.model_server import ServerArgs, build
from factory.config import ServingConfig
from factory.control_plane import REGISTRY, call_actor, get_actor
from factory.errors import FactoryError, summary_line
from factory.registry.catalog import ModelRegistry
from factory.registry.refs import parse_ref, version_ref
from factory.registry.storage import ArtifactStorage
from factory.serving.backend import ServeUnavailableError
from factory.serving.endpoints import Endpoint, check_route, default_route
from factory.serving.manager import EndpointManager

SERVE_APPLY_TIMEOUT_S = 300.0


class RayServe:
    """The `ServeBackend` of the real factory: each endpoint is one Serve application."""

    def __init__(self, settings: ServingConfig) -> None:
        self.settings = settings
        self._started = False

    def apply(self, endpoint: Endpoint) -> None:
        """`serve.run` the endpoint's replicas and wait until Serve runs them (or says it cannot)."""
        import ray
        from ray import serve
        from ray.serve.api import RunTarget

        self._ensure_started()
        canary = version_ref(endpoint.model, endpoint.canary_version) if endpoint.canary_version else None
        args = self.args(endpoint.name, version_ref(endpoint.model, endpoint.stable_version), canary,
                         endpoint.canary_percent, endpoint.replicas)
        try:
            serve.run_many([RunTarget(build(args), name=endpoint.name, route_prefix=endpoint.route)],
                           wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
        except (ray.exceptions.RayActorError, TimeoutError) as error:  # Serve's controller or proxy is down
            raise self._serve_down(error) from None
        except Exception as error:  # noqa: BLE001 - Serve's reasons come in many types
            raise FactoryError(f"Serve could not deploy endpoint '{endpoint.name}' ({endpoint.ref}): "
                               f"{summary_line(error)}") from None
        self._wait_running(endpoint)

    def delete(self, name: str) -> None:
        from ray import serve

        if name in serve.status().applications:  # none while Serve is not running (a fresh cluster)
            serve.delete(name)

    def replica_states(self) -> dict[str, dict[str, Any]]:
        from ray import serve

        if not self._started:
            return {}
        try:
            applications = serve.status().applications
        except Exception:  # noqa: BLE001 - a listing without replica counts beats no listing
            return {}
        return {name: {"status": str(app.status.value if hasattr(app.status, "value") else app.status),
                       "replicas": sum(sum(d.replica_states.values()) for d in app.deployments.values()),
                       "running": sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())}
                for name, app in applications.items()}

    def args(self, name: str, model: str, canary: str | None, percent: float,
             replicas: int | None) -> ServerArgs:
        """The model server's arguments for endpoint `name` serving `model` (and `canary`)."""
        return ServerArgs(endpoint=name, model=model, canary=canary, canary_percent=percent,
                          replicas=replicas, **self.settings.replica_settings().model_dump())

    def http_options(self) -> dict[str, Any]:
        """Serve's HTTP proxy settings."""
        # The proxy's own timeout backs the replicas' (`request_timeout_s`, answered as 504 with an id).
        return {"host": self.settings.http_host, "port": self.settings.http_port,
                "request_timeout_s": self.settings.request_timeout_s + 10}

    def _serve_down(self, error: BaseException) -> ServeUnavailableError:
        """The error for Serve's controller or proxy gone; the next apply waits for Serve to be up again."""
        self._started = False
        return ServeUnavailableError(f"Serve is not up: {summary_line(error)}")

    def _ensure_started(self) -> None:
        if self._started:
            return
        import ray
        from ray import serve

        seen = "serve.start"
        try:
            serve.start(http_options=self.http_options())
        except (ray.exceptions.RayActorError, TimeoutError) as error:
            if getattr(error, "actor_init_failed", False):  # a proxy that cannot start (its port?)
                raise ServeUnavailableError(
                    f"Serve's HTTP proxy could not start: {summary_line(error)}") from None
            # On a busy machine Serve's controller may find its HTTP proxy slow to start and replace it,
            # waiting longer for each new one: the proxy `serve.start` waited for died, and the controller
            # is up. Serve's own answer to a slow start, so the factory waits for the next proxy too.
            seen = f"serve.start: {summary_line(error)}"
        # Also when `serve.start` returned: it does not wait for proxies when Serve was started before.
        self._wait_for_proxies(time.monotonic() + SERVE_APPLY_TIMEOUT_S, seen)
        self._started = True

    def _wait_for_proxies(self, deadline_s: float, seen: str) -> None:
        """Until a proxy of Serve is healthy and none is starting; past `deadline_s` (monotonic)
        ServeUnavailableError, saying what was `seen` last."""
        from ray import serve

        while True:
            try:
                proxies = {node: str(getattr(status, "value", status))
                           for node, status in serve.status().proxies.items()}
            except Exception as error:  # noqa: BLE001 - Serve may be between proxies: ask again
                seen = f"serve.status: {summary_line(error)}"
            else:
                statuses = set(proxies.values())
                if "HEALTHY" in statuses and "STARTING" not in statuses:
                    return
                seen = f"proxies {proxies or 'none'}"
            if time.monotonic() > deadline_s:
                raise ServeUnavailableError(f"Serve's HTTP proxy did not start within "
                                            f"{SERVE_APPLY_TIMEOUT_S:.0f} s ({seen}); see the Serve page "
                                            "of the Ray dashboard")
            time.sleep(0.5)

    def _wait_running(self, endpoint: Endpoint) -> None:
        """Until Serve runs the endpoint's new state; a failure or `SERVE_APPLY_TIMEOUT_S` is an error."""
        import ray
        from ray import serve

        deadline = time.monotonic() + SERVE_APPLY_TIMEOUT_S
        while True:
            try:
                app = serve.status().applications.get(endpoint.name)
            except (ray.exceptions.RayActorError, TimeoutError) as error:  # Serve's controller went away
                raise self._serve_down(error) from None
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


class ServingActor(ControlPlaneActor):
    """The factory's endpoints on Ray Serve."""

    kind = "serving"
    # Replica reports and listings are answered while a deploy waits for Serve.
    max_concurrency = 8

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        self.settings = self.config.serving
        registry = ModelRegistry(self.store, ArtifactStorage(
            self.config.registry.storage_location(self.config.state_dir)), self._now_s)
        self.serve = RayServe(self.settings)
        self.manager = EndpointManager(self.store, registry, self.serve, self.settings, now_s=self._now_s,
                                       audit=self.audit, record_error=self._record_error,
                                       move_alias=self._move_alias)
        self._stopping = self._run_every(self.settings.watch_interval_s, self.manager.update, "serving-watch")

    def deploy(self, ref_text: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Create or update the endpoint of the model `ref_text` names (`EndpointManager.deploy`)."""
        return self.manager.view(self.manager.deploy(ref_text, route, replicas, deployed_by, request_id))

    def canary(self, name: str, version: int, percent: float, set_by: str = "",
               request_id: str | None = None) -> dict[str, Any]:
        """Send `percent` of endpoint `name`'s requests to `version`, watched for errors and latency."""
        return self.manager.view(self.manager.canary(name, version, percent, set_by, request_id))

    def rollback(self, name: str, rolled_back_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Take the canary out; without one, return to the version served before the current one."""
        return self.manager.view(self.manager.rollback(name, rolled_back_by, request_id))

    def undeploy(self, name: str, undeployed_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Delete the endpoint from Serve and forget it."""
        return self.manager.undeploy(name, undeployed_by, request_id).model_dump()

    def take_down(self) -> list[str]:
        """Delete the endpoints from Serve but keep them in the store; return their names.

        `factory down` calls this: the endpoints need the factory's registry, and the next `factory up`
        deploys them again.
        """
        self._stopping.set()
        return self.manager.take_down()

    def sync(self) -> list[dict[str, Any]]:
        """Follow aliases now (rather than at the next watch round); return every endpoint."""
        self.manager.sync()
        return self.manager.views()

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint with its route, versions and split, replicas and request stats."""
        return self.manager.views()

    def export(self, ref_text: str, route: str | None = None, replicas: int | None = None) -> dict[str, Any]:
        """A Serve config (`serve deploy`) for the model `ref_text` names, as the factory would serve it."""
        ref = parse_ref(ref_text)
        self.manager.servable(ref)
        args = self.serve.args(ref.name, str(ref), None, 0.0, replicas)
        return {
            "proxy_location": "EveryNode",
            "http_options": self.serve.http_options(),
            "applications": [{
                "name": ref.name, "route_prefix": check_route(route) if route else default_route(ref.name),
                "import_path": "deployments.model_server:app",
                "args": args.model_dump(exclude_defaults=False),
            }],
        }

    def report(self, endpoint: str, replica_id: str, counts: dict[str, dict[str, Any]]) -> None:
        """A replica's cumulative request counts per version (sent every `report_interval_s`)."""
        self.manager.report(endpoint, replica_id, counts)

    def _move_alias(self, model: str, alias: str, version: int, by: str, if_last_change: int | None) -> int:
        # Through the registry actor, so the move is audited there and its cache sees it.
        registry = get_actor(REGISTRY)
        change = call_actor(registry.set_alias.remote(model, alias, version, by, None, if_last_change),
                            f"the factory's '{REGISTRY}' actor", 30.0)
        return int(change["id"])

    def _now_s(self) -> float:
        assert self.clock is not None
        return self.clock.now_s()
