"""What the endpoint manager needs from Ray Serve (`ServeBackend`), and how Serve says it is not up.

The manager is plain Python; the ServingActor hands it the real backend (`actors.serving.RayServe`),
the unit tests a fake.
"""

from __future__ import annotations

from typing import Any, Protocol

from factory.errors import ClusterError
from factory.serving.endpoints import Endpoint


class ServeUnavailableError(ClusterError):
    """Serve itself is not up (say, its HTTP proxy did not start): no verdict on an endpoint's state.

    Unlike Serve refusing a state (any other `FactoryError` from `ServeBackend.apply`), the stored state
    stands and the watch rounds apply it once Serve is up.
    """


class ServeBackend(Protocol):
    """What the manager needs from Ray Serve."""

    def apply(self, endpoint: Endpoint) -> None:
        """Serve `endpoint` as it is now, returning once Serve runs it; `ServeUnavailableError` if Serve is
        not up, another FactoryError if Serve cannot run that state."""

    def delete(self, name: str) -> None:
        """Stop serving the endpoint `name` (nothing if it is not served)."""

    def replica_states(self) -> dict[str, dict[str, Any]]:
        """{endpoint: {"status", "replicas", "running"}} for what Serve runs now; {} if unknown."""
