"""RegistryActor: model versions, aliases and lineage arrive with issue 7.

Today it resolves where artifacts live and reports health, so the registry's place in the control
plane (head node, durable store, restart with reload) is in force before the registry fills it.
"""

from __future__ import annotations

from actors.control_plane import ControlPlaneActor


class RegistryActor(ControlPlaneActor):
    """The model registry's actor."""

    kind = "registry"

    def storage_uri(self) -> str:
        """Where model artifacts are stored: the configured URI, else `<state_dir>/artifacts`."""
        return self.config.registry.storage_uri or str(self.config.state_dir / "artifacts")
