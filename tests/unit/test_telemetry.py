"""Telemetry without Ray: simulated GPUs follow Ray's assignment, energy integrates over a known
schedule and is charged to the right jobs, history stays within its memory bound, RAPL wraps,
and the facility view adds up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from factory.clock import WallClock
from factory.config import TelemetryConfig
from factory.telemetry.attribution import (
    FACTORY_JOB_ENV,
    Consumer,
    GpuHolder,
    RayWorkloads,
    SimulatedAssignment,
    factory_job_of,
    gpus_requested,
)
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.backends.host import HostBackend
from factory.telemetry.backends.simulated import SimulatedGpuBackend
from factory.telemetry.energy import GpuEnergyMeter
from factory.telemetry.facility import facility_view
from factory.telemetry.history import SAMPLE_BYTES, GpuHistory
from factory.telemetry.models import GpuProcess, GpuReading, NodeStatus
from factory.telemetry.sampler import NodeSampler

IDLE_W, BUSY_W = 75.0, 700.0
START_S = 1_719_792_000.0  # 2024-07-01T00:00:00Z


class FakeTime:
    """Factory time and monotonic time that a test moves by hand."""

    def __init__(self) -> None:
        self.factory_s = START_S
        self.mono_s = 100.0

    def advance(self, seconds: float) -> None:
        self.factory_s += seconds
        self.mono_s += seconds


class FakeRayState:
    """What `ray.util.state` would answer for one node; tests set actors and tasks."""

    def __init__(self) -> None:
        self.actors: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    def list_actors(self, **_: Any) -> list[dict[str, Any]]:
        if self.fail:
            raise self.fail
        return self.actors

    def list_tasks(self, **_: Any) -> list[dict[str, Any]]:
        return self.tasks


def gpu_actor(actor_id: str, pid: int, gpus: float, job: str = "01000000") -> dict[str, Any]:
    return {"actor_id": actor_id, "pid": pid, "job_id": job, "required_resources": {"GPU": gpus}}


def simulated_sampler(num_gpus: int, ray_state: FakeRayState, jobs_by_pid: dict[int, str],
                      fake: FakeTime) -> NodeSampler:
    config = TelemetryConfig(attribution_interval_s=0.001, history_samples=600)
    workloads = RayWorkloads("node-a", ray_state.list_actors, ray_state.list_tasks,
                             job_of_pid=lambda pid: jobs_by_pid.get(pid, "other"))
    holder: dict[str, NodeSampler] = {}
    backend = SimulatedGpuBackend(num_gpus, lambda: holder["sampler"].usage_shares(),
                                  idle_power_w=IDLE_W, busy_power_w=BUSY_W)
    sampler = NodeSampler("node-a", "10.0.0.1", backend, host=None,
                          clock=WallClock(wall=lambda: fake.factory_s), config=config,
                          workloads=workloads, monotonic=lambda: fake.mono_s)
    holder["sampler"] = sampler
    return sampler


# --- simulated GPUs -----------------------------------------------------------------------------


def jobs_by_index(usage: dict[int, list[tuple[float, Consumer]]]) -> dict[int, list[str]]:
    return {index: [consumer.factory_job for _, consumer in holders] for index, holders in usage.items()}


def test_simulated_gpus_take_the_lowest_free_indices_and_keep_them() -> None:
    assignment = SimulatedAssignment(num_gpus=4)
    a = GpuHolder("actor-a", 1, 2.0, Consumer("job-a"))
    b = GpuHolder("actor-b", 2, 1.0, Consumer("job-b"))
    c = GpuHolder("actor-c", 3, 1.0, Consumer("job-c"))

    usage = assignment.update([a, b])
    assert jobs_by_index(usage) == {0: ["job-a"], 1: ["job-a"], 2: ["job-b"]}

    usage = assignment.update([b, c])  # a finished: c takes its lowest index, b stays on 2
    assert jobs_by_index(usage) == {0: ["job-c"], 2: ["job-b"]}

    too_big = GpuHolder("actor-e", 5, 8.0, Consumer("job-e"))
    assert "job-e" not in str(jobs_by_index(assignment.update([too_big])))


def test_fractional_holders_share_a_simulated_gpu_as_ray_packs_them() -> None:
    assignment = SimulatedAssignment(num_gpus=2)
    halves = [GpuHolder(f"task-{i}", 10 + i, 0.5, Consumer(f"job-{i}")) for i in range(4)]

    usage = assignment.update(halves)

    assert jobs_by_index(usage) == {0: ["job-0", "job-1"], 1: ["job-2", "job-3"]}
    assert all(sum(share for share, _ in holders) == 1.0 for holders in usage.values())
    whole = GpuHolder("actor-w", 20, 1.0, Consumer("job-w"))
    assert "job-w" not in str(jobs_by_index(assignment.update([*halves, whole])))  # no GPU is free


def test_simulated_power_follows_the_assignment() -> None:
    shares = {1: 1.0, 2: 0.5}
    backend = SimulatedGpuBackend(3, lambda: shares, idle_power_w=IDLE_W, busy_power_w=BUSY_W)

    readings = backend.read()

    assert [r.power_w for r in readings] == [IDLE_W, BUSY_W, (IDLE_W + BUSY_W) / 2]
    assert [r.utilization_pct for r in readings] == [0.0, 100.0, 50.0]
    assert all(r.source == "simulated" and r.energy_counter_mj is None for r in readings)
    shares.clear()
    assert [r.power_w for r in backend.read()] == [IDLE_W] * 3


def test_simulated_energy_integrates_over_a_known_schedule_and_is_charged_to_the_job() -> None:
    fake = FakeTime()
    ray_state = FakeRayState()
    sampler = simulated_sampler(2, ray_state, {4242: "job-a"}, fake)
    # 0..10 s idle, 10..40 s job-a holds both GPUs, 40..50 s idle; one sample per second.
    for second in range(51):
        if second == 10:
            ray_state.actors = [gpu_actor("actor-a", 4242, 2.0)]
        if second == 40:
            ray_state.actors = []
        snapshot = sampler.tick()
        if second == 20:
            assert [g.busy for g in snapshot.gpus] == [True, True]
            assert [g.consumers for g in snapshot.gpus] == [["job-a"], ["job-a"]]
            assert snapshot.node.gpu_power_w == 2 * BUSY_W
        fake.advance(1.0)

    # Trapezoid over power samples: the two transitions each cost half a step of the difference.
    per_gpu_j = IDLE_W * 20 + BUSY_W * 30 + (BUSY_W - IDLE_W) * 0.0
    assert [m.energy_j for m in sampler.meters] == pytest.approx([per_gpu_j] * 2)
    job = sampler.job_energy("job-a")
    assert job is not None
    # The job is charged 30 intervals at the end of which it held the GPUs; the first of them
    # is a transition interval (half idle), and the interval after it left is charged to idle.
    expected_job_j = 2 * (BUSY_W * 29 + (IDLE_W + BUSY_W) / 2)
    assert job.energy_kwh == pytest.approx(expected_job_j / 3.6e6)
    assert job.gpu_seconds == pytest.approx(60.0)
    assert sampler.job_energy("01000000") is not None  # the Ray job id finds it too
    assert sampler.job_energy("job-b") is None
    total_kwh = sum(m.energy_j for m in sampler.meters) / 3.6e6
    assert snapshot.node.energy_today_kwh == pytest.approx(total_kwh)
    assert snapshot.job_energy_kwh["idle"] + snapshot.job_energy_kwh["job-a"] == pytest.approx(total_kwh)


def test_simulated_energy_runs_on_factory_time_in_a_replay() -> None:
    fake = FakeTime()
    sampler = simulated_sampler(1, FakeRayState(), {}, fake)
    sampler.tick()
    fake.factory_s += 3600.0  # an accelerated clock: a factory hour in one real second
    fake.mono_s += 1.0
    sampler.tick()
    assert sampler.meters[0].energy_j == pytest.approx(IDLE_W * 3600.0)


# --- real GPUs: processes, counters -------------------------------------------------------------


class RecordedGpus(GpuBackend):
    """A backend replaying fixed NVML-like readings (the sampler above the hardware seam)."""

    source = "nvml"

    def __init__(self, readings: list[GpuReading]) -> None:
        self.readings = readings

    @classmethod
    def is_available(cls) -> bool:
        return True

    @property
    def gpu_count(self) -> int:
        return len(self.readings)

    def read(self) -> list[GpuReading]:
        return [reading.model_copy(deep=True) for reading in self.readings]


def test_gpu_processes_are_attributed_to_factory_jobs_and_others() -> None:
    fake = FakeTime()
    ray_state = FakeRayState()
    ray_state.actors = [gpu_actor("actor-a", 100, 1.0, job="02000000")]
    reading = GpuReading(index=0, source="nvml", power_w=400.0, energy_counter_mj=5_000_000,
                         processes=[GpuProcess(pid=100), GpuProcess(pid=999)])
    backend = RecordedGpus([reading])
    sampler = NodeSampler(
        "node-a", None, backend, None, WallClock(wall=lambda: fake.factory_s), TelemetryConfig(),
        RayWorkloads("node-a", ray_state.list_actors, ray_state.list_tasks,
                     job_of_pid=lambda pid: {100: "job-a"}.get(pid, "other")),
        monotonic=lambda: fake.mono_s,
    )
    sampler.tick()
    fake.advance(2.0)
    backend.readings[0].energy_counter_mj = 5_800_000  # +800 J from the hardware counter
    snapshot = sampler.tick()

    processes = snapshot.gpus[0].processes
    assert [(p.pid, p.factory_job, p.ray_job_id) for p in processes] == [
        (100, "job-a", "02000000"), (999, "other", None)]
    assert snapshot.gpus[0].consumers == ["job-a", "other"]
    assert sampler.job_energy("job-a").energy_kwh == pytest.approx(400.0 / 3.6e6)  # half of 800 J
    assert sampler.job_energy("other").energy_kwh == pytest.approx(400.0 / 3.6e6)


def test_a_counter_that_goes_backwards_falls_back_to_integration() -> None:
    meter = GpuEnergyMeter()
    meter.update(GpuReading(index=0, source="nvml", power_w=100.0, energy_counter_mj=10_000), 1.0)
    meter.update(GpuReading(index=0, source="nvml", power_w=100.0, energy_counter_mj=12_000), 1.0)
    assert meter.energy_j == pytest.approx(2.0)
    meter.update(GpuReading(index=0, source="nvml", power_w=100.0, energy_counter_mj=500), 1.0)  # reset
    assert meter.energy_j == pytest.approx(102.0)


def test_energy_over_failed_reads_is_carried_to_the_next_good_one() -> None:
    meter = GpuEnergyMeter()
    meter.update(GpuReading(index=0, source="nvml", power_w=100.0), 1.0)
    for _ in range(3):  # three failed reads, one second each
        meter.update(GpuReading(index=0, source="nvml", healthy=False, error="lost"), 1.0)
    meter.update(GpuReading(index=0, source="nvml", power_w=100.0), 1.0)
    assert meter.energy_j == pytest.approx(400.0)  # 100 W over the 4 s since the last good read


def test_a_process_read_as_other_is_read_again_later() -> None:
    ray_state = FakeRayState()
    ray_state.actors = [gpu_actor("actor-a", 4242, 1.0)]
    answers = iter(["other", "job-late"])  # its environment was not readable the first time
    workloads = RayWorkloads("node-a", ray_state.list_actors, ray_state.list_tasks,
                             job_of_pid=lambda pid: next(answers))
    workloads.refresh()
    assert workloads.consumer_of_pid(4242).factory_job == "other"
    workloads.refresh()
    assert workloads.consumer_of_pid(4242).factory_job == "job-late"


def test_a_failing_ray_state_api_keeps_the_last_picture_and_says_why() -> None:
    fake = FakeTime()
    ray_state = FakeRayState()
    ray_state.actors = [gpu_actor("actor-a", 4242, 1.0)]
    sampler = simulated_sampler(1, ray_state, {4242: "job-a"}, fake)
    sampler.tick()
    ray_state.fail = ConnectionError("dashboard down")
    fake.advance(1.0)

    snapshot = sampler.tick()

    assert snapshot.gpus[0].consumers == ["job-a"] and snapshot.gpus[0].power_w == BUSY_W
    assert "dashboard down" in (snapshot.node.error or "")


def test_the_factory_job_is_read_from_the_worker_process_environment() -> None:
    env = {**os.environ, FACTORY_JOB_ENV: "job-from-env"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        time.sleep(0.2)
        assert factory_job_of(child.pid) == "job-from-env"
    finally:
        child.kill()
        child.wait()
    assert factory_job_of(os.getpid()) == os.environ.get(FACTORY_JOB_ENV, "other")
    assert factory_job_of(None) == "other"


# --- history -------------------------------------------------------------------------------------


def test_history_memory_is_bounded_per_gpu_as_documented() -> None:
    history = GpuHistory(capacity=3600)
    assert SAMPLE_BYTES == 33  # docs/telemetry.md and configs/factory.yaml state 33 bytes per sample
    assert history.nbytes == 3600 * 33

    for second in range(10_000):
        history.append(float(second), GpuReading(index=0, source="simulated", power_w=float(second)), 0.0)

    assert len(history) == 3600 and history.nbytes == 3600 * 33
    window = history.since(9_990.0)
    assert window["time_s"] == [float(s) for s in range(9_990, 10_000)]
    assert history.since()["time_s"][0] == 6_400.0  # the oldest kept, in order
    assert history.mean(9_990.0)["power_w"] == pytest.approx(9_994.5)


# --- host ------------------------------------------------------------------------------------------


def test_rapl_package_energy_is_read_and_unwrapped(tmp_path: Path) -> None:
    zone = tmp_path / "intel-rapl:0"
    (zone / "intel-rapl:0:0").mkdir(parents=True)  # a subzone (core) must not be double counted
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("900000\n")
    host = HostBackend(powercap_root=tmp_path)

    (zone / "energy_uj").write_text("950000\n")
    assert host.read().cpu_energy_counter_j == pytest.approx(0.05)
    (zone / "energy_uj").write_text("100000\n")  # wrapped past 1 J
    reading = host.read()
    assert reading.cpu_energy_counter_j == pytest.approx(0.2)
    assert 0 <= reading.cpu_utilization_pct <= 100 and reading.memory_total_mib > 0


def test_a_machine_without_rapl_reads_cpu_and_memory_only(tmp_path: Path) -> None:
    host = HostBackend(powercap_root=tmp_path / "absent")
    reading = host.read()
    assert not host.has_rapl and "RAPL unreadable" in (host.rapl_error or "")
    assert reading.cpu_energy_counter_j is None and reading.memory_used_mib > 0


# --- facility ------------------------------------------------------------------------------------


def test_the_facility_view_sums_alive_nodes_and_applies_pue() -> None:
    nodes = [
        NodeStatus(node_id="a", state="alive", source="simulated", gpus=4, gpus_busy=3,
                   it_power_w=2400.0, energy_today_kwh=10.0),
        NodeStatus(node_id="b", state="alive", source="nvml", gpus=8, gpus_busy=2, gpus_unhealthy=1,
                   it_power_w=1600.0, energy_today_kwh=5.0),
        NodeStatus(node_id="c", state="down", gpus=8, it_power_w=999.0),
    ]
    view = facility_view(nodes, pue=1.5, time_s=START_S)
    assert (view.nodes_alive, view.nodes_down) == (2, 1)
    assert (view.gpus_total, view.gpus_busy, view.gpus_idle, view.gpus_unhealthy) == (12, 5, 6, 1)
    assert view.it_power_w == 4000.0 and view.facility_power_w == 6000.0
    assert view.facility_energy_today_kwh == pytest.approx(22.5)
    assert view.sources == ["nvml", "simulated"]


def test_ray_train_workers_in_a_placement_group_are_gpu_holders() -> None:
    # Ray Train runs its workers in a placement group: Ray renames their GPU request per bundle.
    group = "6a0d81e79b7a701cc9620f2bac0a01000000"
    worker = {"actor_id": "train-worker-0", "pid": 4343, "job_id": "03000000", "required_resources": {
        f"CPU_group_0_{group}": 1.0, f"GPU_group_{group}": 1.0, f"GPU_group_0_{group}": 1.0,
        f"CPU_group_{group}": 1.0, f"bundle_group_0_{group}": 0.001}}
    ray_state = FakeRayState()
    ray_state.actors = [worker]
    workloads = RayWorkloads("node-a", ray_state.list_actors, ray_state.list_tasks,
                             job_of_pid=lambda pid: {4343: "train-job"}.get(pid, "other"))
    workloads.refresh()
    assert [(h.num_gpus, h.consumer.factory_job) for h in workloads.holders] == [(1.0, "train-job")]
    assert gpus_requested({f"GPU_group_{group}": 2.0}) == 2.0  # only the group-wide form
    assert gpus_requested({"GPU": 0.5, "CPU": 1.0}) == 0.5
    assert gpus_requested({"CPU": 1.0}) == 0.0


def test_a_capped_simulated_gpu_draws_at_most_its_cap_and_keeps_most_of_its_speed() -> None:
    from factory.errors import DeviceError
    from factory.telemetry.backends.simulated import throughput_share

    backend = SimulatedGpuBackend(2, lambda: {0: 1.0, 1: 1.0}, idle_power_w=75.0, busy_power_w=700.0)
    assert backend.power_limit_range_w(0) == (350.0, 700.0, 700.0)

    assert backend.set_power_limit_w(0, 490.0) == 490.0
    assert backend.set_power_limit_w(1, 100.0) == 350.0  # not below half its power
    assert [(r.power_w, r.power_limit_w) for r in backend.read()] == [(490.0, 490.0), (350.0, 350.0)]
    assert backend.set_power_limit_w(0, None) == 700.0 and backend.read()[0].power_w == 700.0
    assert throughput_share(490.0, 700.0) == pytest.approx(0.90, abs=0.005)  # 70 % power, ~90 % speed
    assert throughput_share(700.0, 700.0) == 1.0
    with pytest.raises(DeviceError, match="no simulated GPU 5"):
        backend.set_power_limit_w(5, 400.0)
