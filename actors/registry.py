"""RegistryActor: model versions, aliases and lineage arrive with issue 7.

Today it is a shell that reports health, so the registry's place in the control plane (head node,
durable store, restart with reload) is in force before the registry fills it.
"""

from __future__ import annotations

from actors.control_plane import ControlPlaneActor


class RegistryActor(ControlPlaneActor):
    """The model registry's actor."""

    kind = "registry"
