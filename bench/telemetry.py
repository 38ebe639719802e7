"""Benchmark telemetry's cost: per GPU sample, per node tick, the live actor, and history memory.

Three measurements, in one run:

  (a) per-sample CPU time (µs per GPU, `time.process_time`): the simulated backend, and the NVML
      backend over an in-process stand-in for the driver (plain functions, not mocks, so the figure
      is our code's cost: the real driver adds its own ioctl time on top).
  (b) a whole node tick with 8 GPUs: read, energy, attribution, history and the status models,
      as the TelemetryActor runs it every `interval_s`; as a fraction of one core at 1 Hz.
  (c) the live TelemetryActor on a real local Ray node declaring 8 (simulated) GPUs, 4 of them
      held by a job, sampling at 1 Hz with attribution and Ray metrics export: its process's CPU
      time over a window, side by side with an idle actor's (the baseline every Ray worker pays)
      measured over the same window. Target: under 1% of a core.

Memory: the history ring holds `SAMPLE_BYTES` per GPU per sample, fixed at creation.

    python bench/telemetry.py [--seconds 20] [--ticks 2000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml

from factory.clock import WallClock
from factory.config import FactoryConfig, TelemetryConfig
from factory.telemetry.attribution import RayWorkloads
from factory.telemetry.backends.host import HostBackend
from factory.telemetry.backends.nvml import NvmlBackend
from factory.telemetry.backends.simulated import SimulatedGpuBackend
from factory.telemetry.history import SAMPLE_BYTES, GpuHistory
from factory.telemetry.sampler import NodeSampler

GPUS = 8
MIB = 1024 * 1024


def cpu_us_per_call(fn: Callable[[], Any], calls: int) -> float:
    """Median over 5 rounds of CPU µs per call."""
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.process_time() - start) / calls * 1e6)
    return sorted(rounds)[2]


def stand_in_driver() -> dict[str, Callable[..., Any]]:
    """Plain-function answers for every NVML call the backend makes (an H100-like GPU)."""
    utilization = SimpleNamespace(gpu=87, memory=30)
    memory = SimpleNamespace(used=30_000 * MIB, total=81_559 * MIB)
    processes = [SimpleNamespace(pid=4242, usedGpuMemory=1024 * MIB)]
    return {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: GPUS,
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h}",
        "nvmlDeviceGetName": lambda h: "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUtilizationRates": lambda h: utilization,
        "nvmlDeviceGetMemoryInfo": lambda h: memory,
        "nvmlDeviceGetPowerUsage": lambda h: 650_000,
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: int(time.monotonic() * 1e6),
        "nvmlDeviceGetTemperature": lambda h, sensor: 61,
        "nvmlDeviceGetClockInfo": lambda h, kind: 1980,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: 0,
        "nvmlDeviceGetTotalEccErrors": lambda h, error_type, counter: 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: processes,
    }


def bench_in_process(ticks: int) -> None:
    """(a) and (b): no Ray."""
    # What the Ray state API would answer: four jobs holding a GPU each.
    actors = [{"actor_id": f"actor-{i}", "pid": 1000 + i, "job_id": "01000000",
               "required_resources": {"GPU": 1.0}} for i in range(4)]

    def workloads() -> RayWorkloads:
        return RayWorkloads("node", lambda **_: actors, lambda **_: [],
                            job_of_pid=lambda pid: f"job-{pid - 1000}")

    sampler_ref: dict[str, NodeSampler] = {}
    simulated = SimulatedGpuBackend(GPUS, lambda: sampler_ref["s"].usage_shares())
    clock = WallClock()
    config = TelemetryConfig()  # attribution refreshed every 2 s, as in the actor
    sampler = NodeSampler("node", "10.0.0.1", simulated, HostBackend(), clock, config, workloads())
    sampler_ref["s"] = sampler

    with mock.patch.multiple(pynvml, **stand_in_driver()):
        nvml = NvmlBackend()
        nvml_sampler = NodeSampler("node", "10.0.0.1", nvml, HostBackend(), clock, config, workloads())
        nvml_us = cpu_us_per_call(nvml.read, ticks // 4) / GPUS
        nvml_tick_us = cpu_us_per_call(nvml_sampler.tick, ticks // 4)
    simulated_us = cpu_us_per_call(simulated.read, ticks) / GPUS
    tick_us = cpu_us_per_call(sampler.tick, ticks)

    print("(a) one sample, CPU time per GPU (median of 5 rounds):")
    print(f"  simulated backend:                    {simulated_us:8.1f} µs")
    print(f"  NVML backend (stand-in driver):       {nvml_us:8.1f} µs")
    print(f"(b) one node tick with {GPUS} GPUs (GPU and host read, energy, attribution, history, status):")
    print(f"  simulated: {tick_us:8.0f} µs = {tick_us / 1e6 * 100:.3f}% of a core at 1 Hz")
    print(f"  NVML:      {nvml_tick_us:8.0f} µs = {nvml_tick_us / 1e6 * 100:.3f}% of a core at 1 Hz")
    hour = GpuHistory(3600)
    print(f"history: {SAMPLE_BYTES} B per sample; one hour at 1 s = {hour.nbytes:,} B "
          f"({hour.nbytes / 1024:.0f} KiB) per GPU")


class IdleActor:
    """The baseline: a Ray actor that does nothing."""

    def pid(self) -> int:
        import os

        return os.getpid()


class HoldsGpus:
    """A job holding GPUs, so attribution has work to do."""

    def ready(self) -> bool:
        return True


def bench_actor(seconds: float) -> None:
    """(c): the real TelemetryActor on a local Ray node with 8 simulated GPUs."""
    import psutil
    import ray

    from actors.telemetry import TelemetryActor

    ray.init(num_cpus=1, num_gpus=GPUS, logging_level="ERROR", log_to_driver=False,
             include_dashboard=True)
    try:
        config = FactoryConfig(telemetry=TelemetryConfig(interval_s=1.0)).model_dump(mode="json")
        spec = WallClock().spec().model_dump()
        agent = ray.remote(TelemetryActor).options(num_cpus=0).remote("bench", config, spec)
        idle = ray.remote(IdleActor).options(num_cpus=0).remote()
        job = ray.remote(HoldsGpus).options(num_cpus=0, num_gpus=4).remote()
        ray.get([agent.ping.remote(), idle.pid.remote(), job.ready.remote()])
        agent_proc = psutil.Process(ray.get(agent.health.remote()).pid)
        idle_proc = psutil.Process(ray.get(idle.pid.remote()))
        time.sleep(5.0)  # first samples, first attribution, metrics pipeline warm
        busy = sum(gpu.busy for gpu in ray.get(agent.gpus.remote()))

        def cpu_s(proc: psutil.Process) -> float:
            times = proc.cpu_times()
            return times.user + times.system

        start = (time.monotonic(), cpu_s(agent_proc), cpu_s(idle_proc))
        time.sleep(seconds)
        wall = time.monotonic() - start[0]
        agent_share = (cpu_s(agent_proc) - start[1]) / wall
        idle_share = (cpu_s(idle_proc) - start[2]) / wall
        print(f"(c) live TelemetryActor, {GPUS} simulated GPUs ({busy} busy), 1 Hz, {wall:.0f} s window:")
        print(f"  telemetry actor process:  {agent_share * 100:6.2f}% of a core")
        print(f"  idle actor (baseline):    {idle_share * 100:6.2f}% of a core")
        print(f"  telemetry beyond baseline: {(agent_share - idle_share) * 100:5.2f}% of a core "
              f"(target < 1%); ratio {agent_share / max(idle_share, 1e-9):.1f}x the idle actor")
    finally:
        ray.shutdown()


def main() -> None:
    """Run all three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="live actor window (real s)")
    parser.add_argument("--ticks", type=int, default=2000, help="in-process calls per round")
    parser.add_argument("--no-ray", action="store_true", help="skip the live actor measurement")
    args = parser.parse_args()
    bench_in_process(args.ticks)
    if not args.no_ray:
        bench_actor(args.seconds)


if __name__ == "__main__":
    main()
