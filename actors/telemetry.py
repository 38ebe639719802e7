"""TelemetryActor: one per Ray node, pinned to it. GPU/host sampling arrives with issue 3.

It holds no durable state (the store lives on the head node); a restart begins a fresh sample
series, which is why it reports `restarted` but no persisted incarnation.
"""

from __future__ import annotations

from actors.base import FactoryActor


class TelemetryActor(FactoryActor):
    """The telemetry agent of one node."""

    kind = "telemetry"
