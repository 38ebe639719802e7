"""Plain-text rendering for people: aligned tables and short durations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime

from factory.client import FactoryStatus
from factory.store import AuditEvent
from factory.telemetry.models import FacilityView, GpuStatus, NodeStatus


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; None shows as '-'."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending in '...' when cut."""
    return text if len(text) <= width else text[: width - 3] + "..."


_UTC_LABEL = re.compile(r"\b(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})(?::\d{2})? UTC\b")


def compact_times(text: str, today: date) -> str:
    """`text` with each factory time it names (`utc_label`'s '2024-07-01 02:00[:SS] UTC', as reasons do)
    shortened to the minute: '02:00' on `today`, '2024-07-02 02:00' on another day (factory time is UTC)."""
    day = today.isoformat()
    return _UTC_LABEL.sub(lambda m: m.group(2) if m.group(1) == day else f"{m.group(1)} {m.group(2)}", text)


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


def _num(value: float | None, digits: int = 0) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def _when(time_s: float | None) -> str | None:
    return None if time_s is None else datetime.fromtimestamp(time_s, tz=UTC).strftime("%Y-%m-%d %H:%M")


def facility_text(view: FacilityView) -> str:
    """The facility in three lines."""
    return "\n".join([
        f"Facility   {view.facility_power_w / 1000:.2f} kW (IT {view.it_power_w / 1000:.2f} kW x PUE "
        f"{view.pue:g}); today {view.facility_energy_today_kwh:.2f} kWh",
        f"GPUs       {view.gpus_total} total: {view.gpus_busy} busy, {view.gpus_idle} idle, "
        f"{view.gpus_unhealthy} unhealthy ({', '.join(view.sources) or 'no GPUs'})",
        f"Nodes      {view.nodes_alive} alive, {view.nodes_down} down"
        + (f", {view.nodes_unreachable} not answering (not counted)" if view.nodes_unreachable else ""),
    ])


def nodes_text(view: FacilityView, nodes: Sequence[NodeStatus]) -> str:
    """`factory nodes` for people."""
    rows = [
        (
            node.node_ip, node.node_id[:12], node.state, node.source,
            f"{node.gpus_busy}/{node.gpus}" if node.state == "alive" else None,
            _num(node.gpu_power_w) if node.state == "alive" else None,
            _num(node.it_power_w) if node.state == "alive" else None,
            _num(node.cpu_utilization_pct),
            None if node.memory_used_mib is None else
            f"{node.memory_used_mib / 1024:.1f}/{(node.memory_total_mib or 0) / 1024:.1f}",
            _num(node.energy_kwh, 3) if node.state == "alive" else None,
            f"since {_when(node.since_s)}" if node.state == "down" and node.since_s else node.error,
        )
        for node in nodes
    ]
    return facility_text(view) + "\n\n" + table(
        ["node", "id", "state", "source", "gpus busy", "gpu w", "it w", "cpu %", "mem gib",
         "energy kwh", "note"], rows)


def gpus_text(gpus: Sequence[GpuStatus]) -> str:
    """`factory gpus` for people."""
    if not gpus:
        return "no GPUs on any alive node (real or simulated); see `factory nodes`"
    rows = [
        (
            gpu.node_ip or gpu.node_id[:12], gpu.index, gpu.source,
            "ok" if gpu.healthy else f"UNHEALTHY: {gpu.error}",
            _num(gpu.utilization_pct), None if gpu.memory_used_mib is None else
            f"{gpu.memory_used_mib / 1024:.1f}/{(gpu.memory_total_mib or 0) / 1024:.1f}",
            _num(gpu.power_w), _num(gpu.power_limit_w), _num(gpu.temperature_c), _num(gpu.energy_kwh, 3),
            ",".join(gpu.consumers) or "-",
        )
        for gpu in gpus
    ]
    return table(["node", "gpu", "source", "health", "util %", "mem gib", "power w", "cap w", "temp c",
                  "energy kwh", "jobs"], rows)
