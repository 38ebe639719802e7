"""The facility view: every node's telemetry summed into what an operator watches."""

from __future__ import annotations

from collections.abc import Sequence

from factory.telemetry.models import FacilityView, GpuStatus, JobEnergy, NodeStatus


def facility_view(nodes: Sequence[NodeStatus], pue: float, time_s: float) -> FacilityView:
    """Sum alive nodes' power, GPU counts and today's energy; facility power is IT power x PUE."""
    alive = [node for node in nodes if node.state == "alive"]
    it_power_w = sum(node.it_power_w for node in alive)
    it_today_kwh = sum(node.energy_today_kwh for node in alive)
    gpus_total = sum(node.gpus for node in alive)
    busy = sum(node.gpus_busy for node in alive)
    unhealthy = sum(node.gpus_unhealthy for node in alive)
    return FacilityView(
        time_s=time_s,
        nodes_alive=len(alive),
        nodes_down=sum(node.state == "down" for node in nodes),
        nodes_unreachable=sum(node.state == "unreachable" for node in nodes),
        gpus_total=gpus_total,
        gpus_busy=busy,
        gpus_idle=gpus_total - busy - unhealthy,
        gpus_unhealthy=unhealthy,
        it_power_w=it_power_w,
        pue=pue,
        facility_power_w=it_power_w * pue,
        it_energy_today_kwh=it_today_kwh,
        facility_energy_today_kwh=it_today_kwh * pue,
        sources=sorted({node.source for node in alive if node.source is not None}),
    )


def merge_job_energy(job_id: str, parts: Sequence[JobEnergy]) -> JobEnergy:
    """One job's energy over every node that charged it (zero, with no times, if none did)."""
    seen_first = [part.first_seen_s for part in parts if part.first_seen_s is not None]
    seen_last = [part.last_seen_s for part in parts if part.last_seen_s is not None]
    by_node: dict[str, float] = {}
    for part in parts:
        for node_id, energy_kwh in part.by_node_kwh.items():
            by_node[node_id] = by_node.get(node_id, 0.0) + energy_kwh
    return JobEnergy(
        job_id=job_id,
        energy_kwh=sum(part.energy_kwh for part in parts),
        gpu_seconds=sum(part.gpu_seconds for part in parts),
        by_node_kwh=by_node,
        first_seen_s=min(seen_first) if seen_first else None,
        last_seen_s=max(seen_last) if seen_last else None,
    )


def sorted_gpus(gpus: Sequence[GpuStatus]) -> list[GpuStatus]:
    """GPUs ordered by node IP, node and index, as tables show them."""
    return sorted(gpus, key=lambda gpu: (gpu.node_ip or "", gpu.node_id, gpu.index))
