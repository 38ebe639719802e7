"""Plain-text rendering for people: aligned tables and short durations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from factory.client import FactoryStatus
from factory.store import AuditEvent


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as '-'."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def duration(seconds: float | None) -> str | None:
    """'42s', '7m03s', '5h12m', '3d04h'."""
    if seconds is None:
        return None
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def status_text(status: FactoryStatus) -> str:
    """`factory status` for people."""
    clock = status.clock
    speed = "" if clock.mode == "wall" else f" x{clock.speed_factor:g}"
    header = [
        f"Factory    {status.version} ({'healthy' if status.healthy else 'DEGRADED'})",
        f"Ray        {status.ray_address}",
        f"Dashboard  {status.dashboard_url or 'none (cluster started without a dashboard)'}",
        f"Clock      {clock.mode}{speed}  {clock.now:%Y-%m-%d %H:%M:%S} UTC",
        f"State      {status.state_store.path} (schema v{status.state_store.schema_version})",
    ]
    rows = [
        (
            actor.name if len(actor.name) <= 24 else actor.name[:24] + "…",
            actor.kind,
            actor.status,
            actor.node_ip,
            actor.pid,
            duration(actor.uptime_s),
            actor.incarnation,
            actor.last_error,
        )
        for actor in status.actors
    ]
    actors = table(["actor", "kind", "status", "node", "pid", "uptime", "incarnation",
                    "last error"], rows)
    return "\n".join(header) + "\n\n" + actors


def audit_text(events: Sequence[AuditEvent]) -> str:
    """`factory audit` for people."""
    rows = [
        (
            event.id,
            datetime.fromtimestamp(event.time_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            event.actor,
            event.action,
            event.subject,
            " ".join(f"{k}={v}" for k, v in event.detail.items()),
        )
        for event in events
    ]
    return table(["id", "time (utc)", "actor", "action", "subject", "detail"], rows)
