"""The serving half of the SDK: deploy, canary, rollback, undeploy, list (`FactoryClient` delegates here)."""

from __future__ import annotations

from typing import Any

import ray

from factory.control_plane import SERVING, call_actor, get_actor

# A deploy waits for Serve to start replicas and load the weights: minutes for a large model.
DEPLOY_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 30.0


class ServingClient:
    """The factory's endpoints, as seen from a driver connected to its cluster."""

    def __init__(self) -> None:
        self._actor = get_actor(SERVING)

    def deploy(self, ref: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str = "") -> dict[str, Any]:
        """Create or update the endpoint serving `ref` (NAME@ALIAS follows the alias); its view."""
        return self._call(self._actor.deploy.remote(ref, route, replicas, deployed_by), DEPLOY_TIMEOUT_S)

    def canary(self, name: str, version: int, percent: float, set_by: str = "") -> dict[str, Any]:
        """Send `percent` of endpoint `name`'s requests to `version` (rolled back if it misbehaves)."""
        return self._call(self._actor.canary.remote(name, version, percent, set_by), DEPLOY_TIMEOUT_S)

    def rollback(self, name: str, rolled_back_by: str = "") -> dict[str, Any]:
        """Drop the canary, or return to the previous version."""
        return self._call(self._actor.rollback.remote(name, rolled_back_by), DEPLOY_TIMEOUT_S)

    def undeploy(self, name: str, undeployed_by: str = "") -> dict[str, Any]:
        """Delete the endpoint."""
        return self._call(self._actor.undeploy.remote(name, undeployed_by), DEPLOY_TIMEOUT_S)

    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint: route, URL, versions and split, replicas, request rate, p50/p99, error rate."""
        return self._call(self._actor.list_endpoints.remote(), CALL_TIMEOUT_S)

    def sync(self) -> list[dict[str, Any]]:
        """Roll endpoints that follow an alias to where it points now; every endpoint."""
        return self._call(self._actor.sync.remote(), DEPLOY_TIMEOUT_S)

    def export(self, ref: str, route: str | None = None, replicas: int | None = None) -> dict[str, Any]:
        """A Serve config (as `serve deploy` reads it) that serves `ref` the way the factory would."""
        return self._call(self._actor.export.remote(ref, route, replicas), CALL_TIMEOUT_S)

    def take_down(self) -> list[str]:
        """Delete every endpoint from Serve, keeping it for the next `factory up`; their names."""
        return self._call(self._actor.take_down.remote(), DEPLOY_TIMEOUT_S)

    @staticmethod
    def _call(ref: ray.ObjectRef, timeout_s: float) -> Any:
        return call_actor(ref, f"the factory's '{SERVING}' actor", timeout_s)
