"""The serving half of the SDK: deploy, canary, rollback, undeploy, list (`FactoryClient` delegates here)."""

from __future__ import annotations

from typing import Any

from factory.control_plane import DEFAULT_RESTART_WAIT_S, SERVING, NamedActor, new_request_id

# A deploy waits for Serve to start replicas and load the weights: minutes for a large model.
DEPLOY_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 30.0


class ServingClient:
    """The factory's endpoints, as seen from a driver connected to its cluster."""

    def __init__(self, restart_wait_s: float = DEFAULT_RESTART_WAIT_S) -> None:
        self._actor = NamedActor(SERVING, restart_wait_s)  # its calls ride out a restart

    def deploy(self, ref: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Create or update the endpoint serving `ref` (NAME@ALIAS follows the alias); its view.

        A deploy with the `request_id` of one that took effect changes nothing and returns the endpoint.
        """
        return self._call("deploy", ref, route, replicas, deployed_by, timeout_s=DEPLOY_TIMEOUT_S,
                          request_id=request_id or new_request_id())

    def canary(self, name: str, version: int, percent: float, set_by: str = "",
               request_id: str | None = None) -> dict[str, Any]:
        """Send `percent` of endpoint `name`'s requests to `version` (rolled back if it misbehaves)."""
        return self._call("canary", name, version, percent, set_by, timeout_s=DEPLOY_TIMEOUT_S,
                          request_id=request_id or new_request_id())

    def rollback(self, name: str, rolled_back_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Drop the canary, or return to the previous version (once per `request_id`: resent after a
        restart, it does not roll back twice)."""
        return self._call("rollback", name, rolled_back_by, timeout_s=DEPLOY_TIMEOUT_S,
                          request_id=request_id or new_request_id())

    def undeploy(self, name: str, undeployed_by: str = "", request_id: str | None = None) -> dict[str, Any]:
        """Delete the endpoint; the endpoint as it was."""
        return self._call("undeploy", name, undeployed_by, timeout_s=DEPLOY_TIMEOUT_S,
                          request_id=request_id or new_request_id())

    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint: route, URL, versions and split, replicas, request rate, p50/p99, error rate."""
        return self._call("list_endpoints", timeout_s=CALL_TIMEOUT_S)

    def sync(self) -> list[dict[str, Any]]:
        """Roll endpoints that follow an alias to where it points now; every endpoint."""
        return self._call("sync", timeout_s=DEPLOY_TIMEOUT_S)

    def export(self, ref: str, route: str | None = None, replicas: int | None = None) -> dict[str, Any]:
        """A Serve config (as `serve deploy` reads it) that serves `ref` the way the factory would."""
        return self._call("export", ref, route, replicas, timeout_s=CALL_TIMEOUT_S)

    def take_down(self) -> list[str]:
        """Delete every endpoint from Serve, keeping it for the next `factory up`; their names."""
        return self._call("take_down", timeout_s=DEPLOY_TIMEOUT_S)

    def _call(self, method: str, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
        return self._actor.call(method, *args, timeout_s=timeout_s, **kwargs)
