"""What telemetry reports: one GPU's reading, a node's host reading, and the views built on them.

Nomenclature:
  reading   -- what a backend read from one device at one instant (`GpuReading`, `HostReading`).
  consumer  -- who a GPU's energy is attributed to: a factory job (found by the `FACTORY_JOB_ID`
               in its worker's environment), `other` (a process that is not the factory's) or
               `idle` (no process holds the GPU).
  source    -- `nvml` (a real GPU) or `simulated` (a GPU a CPU node declares to Ray). Every
               reading and view says which, so simulated figures are never mistaken for measured ones.

Units are in the names. Times are factory-clock seconds since the epoch (`time_s`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Source = Literal["nvml", "simulated"]
IDLE = "idle"
OTHER = "other"
MIB = 1024 * 1024  # bytes


class GpuProcess(BaseModel):
    """A compute process on a GPU, and who it belongs to."""

    pid: int
    used_memory_mib: float | None = None
    factory_job: str = OTHER
    ray_job_id: str | None = None
    actor_id: str | None = None


class GpuReading(BaseModel):
    """One GPU at one instant. A field the device does not offer is None.

    `healthy=False` with `error` set means the device failed this read; its other fields are None.
    """

    index: int
    uuid: str | None = None
    name: str | None = None
    source: Source
    healthy: bool = True
    error: str | None = None
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    power_w: float | None = None
    energy_counter_mj: int | None = Field(
        None, description="The device's cumulative energy counter (mJ); None where it has none."
    )
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_limit_w: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)
    ecc_corrected_errors: int | None = None
    ecc_uncorrected_errors: int | None = None
    processes: list[GpuProcess] = Field(default_factory=list)


class HostReading(BaseModel):
    """The node's CPU and memory; CPU package energy where RAPL is readable."""

    cpu_utilization_pct: float
    cpu_count: int
    memory_used_mib: float
    memory_total_mib: float
    cpu_energy_counter_j: float | None = Field(
        None, description="RAPL package energy since boot (J, wrap-corrected); None without RAPL."
    )


class GpuStatus(GpuReading):
    """A GPU as `factory gpus` shows it: the latest reading plus energy and who uses it."""

    node_id: str
    node_ip: str | None = None
    time_s: float
    busy: bool
    energy_kwh: float = Field(description="Energy since this node's telemetry actor started.")
    consumers: list[str] = Field(default_factory=list, description="Factory jobs (or 'other').")


class NodeStatus(BaseModel):
    """A node as `factory nodes` shows it. `state='down'`: the node left the cluster."""

    node_id: str
    node_ip: str | None = None
    state: Literal["alive", "down", "unreachable"]
    since_s: float | None = Field(None, description="Down since (factory time), for down nodes.")
    source: Source | Literal["host"] | None = None
    error: str | None = Field(None, description="Why the telemetry of this node is degraded.")
    time_s: float | None = None
    gpus: int = 0
    gpus_busy: int = 0
    gpus_unhealthy: int = 0
    gpu_power_w: float = 0.0
    cpu_power_w: float | None = Field(None, description="From RAPL; None where unreadable.")
    it_power_w: float = Field(0.0, description="GPU power plus CPU package power where known.")
    cpu_utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    energy_kwh: float = Field(0.0, description="GPU + CPU energy since the actor started.")
    energy_today_kwh: float = Field(0.0, description="Since factory-clock midnight UTC.")
    history_bytes: int = Field(0, description="Memory held by this node's sample history.")
    power_cap_floor_w: float | None = Field(
        None, description="The lowest power cap every GPU here accepts (W); None: GPUs cannot be capped.")


class PowerCaps(BaseModel):
    """What a node's agent left capped after applying the scheduler's caps (factory.telemetry.power_caps)."""

    node_id: str
    capped_w: dict[int, float] = Field(default_factory=dict, description="GPU index -> its limit (W).")
    error: str | None = Field(None, description="GPUs that could not be capped (or restored), and why.")
    changed: bool = Field(False, description="Whether any GPU's limit was written.")


class FacilityView(BaseModel):
    """The whole facility at a glance: power, GPU counts and today's energy."""

    time_s: float
    nodes_alive: int
    nodes_down: int
    nodes_unreachable: int = Field(0, description="Alive in Ray, telemetry not answering: not summed.")
    gpus_total: int
    gpus_busy: int
    gpus_idle: int
    gpus_unhealthy: int
    it_power_w: float
    pue: float
    facility_power_w: float = Field(description="IT power x PUE.")
    it_energy_today_kwh: float
    facility_energy_today_kwh: float
    sources: list[str] = Field(description="Where the figures come from: nvml, simulated, host.")


class JobEnergy(BaseModel):
    """The GPU energy attributed to one job, summed over every node and GPU it used."""

    job_id: str
    energy_kwh: float
    gpu_seconds: float = Field(description="GPU-seconds held (factory time for simulated GPUs).")
    by_node_kwh: dict[str, float] = Field(default_factory=dict)
    first_seen_s: float | None = None
    last_seen_s: float | None = None
