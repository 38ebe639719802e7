"""What every factory actor reports about itself (`health()`), as seen by the CLI and the SDK."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from factory.clock import ClockSpec


class ActorHealth(BaseModel):
    """One actor's self-report.

    `status` is 'unreachable' when the actor exists but did not answer, 'missing' when the factory
    should have it (a control-plane actor, or the telemetry agent of an alive node) and it is not
    on the cluster.
    """

    name: str
    kind: str
    status: Literal["ok", "unreachable", "missing"] = "ok"
    version: str | None = None
    node_id: str | None = None
    node_ip: str | None = None
    pid: int | None = None
    uptime_s: float | None = Field(None, description="Seconds since this incarnation started.")
    incarnation: int | None = Field(
        None,
        description="1 for the first start, +1 per start after it (a Ray restart or a new `up`); "
        "None where not persisted.",
    )
    restarted: bool = Field(False, description="This incarnation was started by a Ray restart.")
    last_error: str | None = None
    clock: ClockSpec | None = Field(
        None, description="The clock this actor reads; every actor of a factory has the same."
    )
