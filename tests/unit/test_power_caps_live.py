"""GPU power caps in the live factory without Ray: the controller's caps, each node's agent setting them on
simulated GPUs, and the scheduler's record in a real store that restores them after a crash."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from factory.jobs.controller import JobController
from factory.jobs.power_caps import STATE_NAME, PowerCapKeeper
from factory.jobs.snapshot import ClusterView
from factory.scheduling import FifoPolicy
from factory.store import SQLiteStore, open_store
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.backends.simulated import SimulatedGpuBackend
from factory.telemetry.models import GpuStatus, NodeStatus, PowerCaps
from factory.telemetry.power_caps import apply_job_caps, cap_floor_w
from tests.unit.test_job_controller import MemoryRunners, submit

T0 = 1_719_792_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_store(tmp_path / "factory.db")
    yield opened  # type: ignore[misc]
    opened.close()


def statuses(backend: GpuBackend, holders: Mapping[int, str]) -> list[GpuStatus]:
    """The node's readings as its agent sees them, each GPU held by the job in `holders`."""
    return [GpuStatus(**reading.model_dump(), node_id="n1", time_s=T0, busy=reading.index in holders,
                      energy_kwh=0.0, consumers=[holders[reading.index]] if reading.index in holders else [])
            for reading in backend.read()]


def test_the_controller_caps_the_gpus_an_event_would_otherwise_pause(store: SQLiteStore) -> None:
    runners = MemoryRunners()
    controller = JobController(store, runners, FifoPolicy(), gpu_power_w=1000.0)
    jobs = [submit(controller, name=f"j{i}", gpus=1, now_s=T0) for i in range(4)]
    controller.step(T0, ClusterView({"node-1": 4}), None)
    event = [(T0 + 60, T0 + 660, 2000.0, T0)]

    result = controller.step(T0 + 60, ClusterView({"node-1": 4}, grid_events=event, min_cap_share=0.5), None)
    assert result.paused == [] and result.power_caps_w == {job: 500.0 for job in jobs}  # 4 x 500 W = 2 kW
    result = controller.step(T0 + 90, ClusterView({"node-1": 4}, grid_events=event, min_cap_share=0.7), None)
    # GPUs that go no lower than 70 %: three jobs would need 2.1 kW, so two are paused, two run uncapped.
    assert len(result.paused) == 2 and result.power_caps_w == {}
    assert controller.step(T0 + 700, ClusterView({"node-1": 4}, min_cap_share=0.5), None).power_caps_w == {}


def test_an_agent_caps_the_gpus_of_capped_jobs_and_restores_every_other() -> None:
    backend = SimulatedGpuBackend(4, usage=lambda: {0: 1.0, 1: 1.0, 2: 1.0})
    backend.set_power_limit_w(3, 400.0)  # capped for a job that has ended meanwhile
    caps = apply_job_caps(backend, "n1", statuses(backend, {0: "a", 1: "a", 2: "b"}), {"a": 420.0, "z": 1.0})

    assert caps == PowerCaps(node_id="n1", capped_w={0: 420.0, 1: 420.0}, changed=True)
    again = apply_job_caps(backend, "n1", statuses(backend, {0: "a", 1: "a", 2: "b"}), {"a": 420.0})
    assert again.capped_w == caps.capped_w and not again.changed  # nothing written twice
    assert [gpu.power_limit_w for gpu in backend.read()] == [420.0, 420.0, 700.0, 700.0]
    assert [gpu.power_w for gpu in backend.read()][:3] == [420.0, 420.0, 700.0]  # power follows the cap
    # Asked again with nothing capped (the event is over): every GPU back at its default.
    assert apply_job_caps(backend, "n1", statuses(backend, {0: "a"}), {}).capped_w == {}
    assert [gpu.power_limit_w for gpu in backend.read()] == [700.0] * 4
    assert cap_floor_w(backend) == 350.0


def test_gpus_that_cannot_be_capped_are_named_and_caps_are_no_lever_there() -> None:
    class Uncappable(SimulatedGpuBackend):
        def power_limit_range_w(self, index: int) -> tuple[float, float, float]:
            return GpuBackend.power_limit_range_w(self, index)

    backend = Uncappable(2, usage=lambda: {0: 1.0})
    caps = apply_job_caps(backend, "n1", statuses(backend, {0: "a"}), {"a": 400.0})
    assert caps.capped_w == {} and caps.error == "GPU 0: simulated GPUs cannot be power-capped here"
    assert cap_floor_w(backend) is None
    nodes = [NodeStatus(node_id="n1", state="alive", gpus=2, power_cap_floor_w=None),
             NodeStatus(node_id="n2", state="alive", gpus=2, power_cap_floor_w=350.0)]
    assert PowerCapKeeper.min_cap_share(nodes, 700.0) is None  # one node that cannot cap: no lever
    assert PowerCapKeeper.min_cap_share(nodes[1:], 700.0) == 0.5


class Nodes:
    """Agents answering `apply_power_caps` on simulated GPUs (one GPU per job per node), or silent."""

    def __init__(self) -> None:
        self.backends = {node: SimulatedGpuBackend(2, usage=lambda: {}) for node in ("n1", "n2")}
        self.holders: dict[str, dict[int, str]] = {"n1": {0: "a"}, "n2": {0: "b"}}
        self.silent: set[str] = set()
        self.asked: list[list[str]] = []

    def ask(self, nodes: list[str], caps: dict[str, float]) -> dict[str, Any]:
        self.asked.append(nodes)
        def answer(node: str) -> Any:
            backend = self.backends[node]
            return apply_job_caps(backend, node, statuses(backend, self.holders[node]), caps)

        return {node: "no answer" if node in self.silent else answer(node) for node in nodes}

    def limits(self, node: str) -> list[float | None]:
        return [gpu.power_limit_w for gpu in self.backends[node].read()]


def test_caps_are_recorded_and_a_restarted_scheduler_restores_them(store: SQLiteStore) -> None:
    nodes = Nodes()
    keeper = PowerCapKeeper(store, nodes.ask)
    keeper.keep({}, {}, ["n1", "n2"])
    assert nodes.asked == []  # nothing wanted, nothing recorded: no agent is bothered

    keeper.keep({"a": 400.0, "b": 500.0}, {"a": ["n1"], "b": ["n2"]}, ["n1", "n2"])
    assert nodes.limits("n1") == [400.0, 700.0] and nodes.limits("n2") == [500.0, 700.0]
    assert store.get_actor_state(STATE_NAME) == {"nodes": {"n1": {"0": 400.0}, "n2": {"0": 500.0}}}

    # The scheduler crashes; the job on n1 ends and the event is over. Its successor reads the record
    # and restores both nodes, although no job it knows of is capped.
    restarted = PowerCapKeeper(store, nodes.ask)
    nodes.silent = {"n2"}  # one agent is restarting: its record is kept, to be asked again
    restarted.keep({}, {}, ["n1", "n2"])
    assert nodes.limits("n1") == [700.0, 700.0] and restarted.capped_w == {"n2": {0: 500.0}}
    assert restarted.last_error is not None and "node n2: no answer" in restarted.last_error
    nodes.silent = set()
    restarted.keep({}, {}, ["n1", "n2"])
    assert nodes.limits("n2") == [700.0, 700.0] and store.get_actor_state(STATE_NAME) == {"nodes": {}}
    asked = len(nodes.asked)
    restarted.keep({}, {}, ["n1", "n2"])
    assert len(nodes.asked) == asked  # all restored: quiet again


def test_a_node_that_left_loses_its_record(store: SQLiteStore) -> None:
    nodes = Nodes()
    keeper = PowerCapKeeper(store, nodes.ask)
    keeper.keep({"b": 500.0}, {"b": ["n2"]}, ["n1", "n2"])
    assert keeper.keep({}, {}, ["n1"]) == {} and store.get_actor_state(STATE_NAME) == {"nodes": {}}


def test_the_facility_power_manager_plans_on_measured_power_and_reads_the_cap_floor_once(
        store: SQLiteStore) -> None:
    from factory.config import SchedulerConfig
    from factory.jobs.facility_power import FacilityPower

    runners = MemoryRunners()
    controller = JobController(store, runners, FifoPolicy(), gpu_power_w=700.0)
    job = submit(controller, name="flex", gpus=2, now_s=T0)
    controller.step(T0, ClusterView({"n1": 4}), None)
    node = NodeStatus(node_id="n1", state="alive", gpus=4, gpu_power_w=1400.0 + 2 * 75.0,
                      it_power_w=1400.0 + 2 * 75.0, power_cap_floor_w=350.0)
    reads: list[int] = []

    def read_nodes() -> list[NodeStatus]:
        reads.append(1)
        return [node]

    power = FacilityPower(SchedulerConfig(gpu_power_w=700.0), 1.4, store, read_nodes, Nodes().ask)
    assert power.cluster_view({"n1": 4}, [], T0, 1.0).min_cap_share is None and reads == []  # no event
    event = [(T0, T0 + 3600, 1400.0, T0)]  # 1.4 kW at the meter: 1 kW of IT power at PUE 1.4
    view = power.cluster_view({"n1": 4, "cpu-only": 0}, event, T0, 1.0)
    assert view.min_cap_share == 0.5 and reads == [1]  # read once, before the first step of an event
    assert view.grid_events[0][2] == pytest.approx(1000.0) and view.node_gpus == {"n1": 4}  # no sample yet

    power.measure([node], store.list_jobs(["RUNNING"]), T0)  # idle GPUs draw 150 W above the plan
    # less the 5 % margin and the drift
    assert power.cluster_view({"n1": 4}, event, T0, 1.0).grid_events[0][2] == pytest.approx(950.0 - 150.0)
    power.caps.caps_w = {job: 500.0}  # capped: the plan counts 1 kW for it, so the idle draw still shows
    capped = node.model_copy(update={"gpu_power_w": 1000.0 + 150.0, "it_power_w": 1000.0 + 150.0})
    for _ in range(4):
        power.measure([capped], store.list_jobs(["RUNNING"]), T0)
    assert power.drift.it_w == pytest.approx(150.0)
    assert power.fresh_drift(T0 + 11.0, 1.0).it_w is None  # five 2-second rounds without a sample
    off = FacilityPower(SchedulerConfig(power_caps=False), 1.4, store, read_nodes, Nodes().ask)
    assert off.cluster_view({"n1": 4}, event, T0, 1.0).min_cap_share is None


def test_a_limit_that_cannot_be_restored_keeps_its_node_on_the_record(store: SQLiteStore) -> None:
    from factory.errors import DeviceError

    class Stuck(SimulatedGpuBackend):
        refuse = False

        def set_power_limit_w(self, index: int, watts: float | None) -> float:
            if self.refuse:
                raise DeviceError(f"GPU {index} refused (not permitted)")
            return super().set_power_limit_w(index, watts)

    nodes = Nodes()
    stuck = Stuck(2, usage=lambda: {})
    nodes.backends["n1"] = stuck
    keeper = PowerCapKeeper(store, nodes.ask)
    keeper.keep({"a": 400.0}, {"a": ["n1"]}, ["n1", "n2"])
    stuck.refuse = True  # the event is over, but the driver refuses to restore the limit
    keeper.keep({}, {}, ["n1", "n2"])
    assert nodes.limits("n1")[0] == 400.0 and keeper.capped_w == {"n1": {0: 400.0}}
    assert keeper.last_error is not None and "its limit could not be restored" in keeper.last_error
    stuck.refuse = False
    keeper.keep({}, {}, ["n1", "n2"])
    assert nodes.limits("n1") == [700.0, 700.0] and keeper.capped_w == {}


def test_a_node_is_recorded_before_it_is_asked_so_a_lost_answer_is_put_right(store: SQLiteStore) -> None:
    nodes = Nodes()
    recorded_when_asked: list[Any] = []

    def ask_then_crash(node_ids: list[str], caps: dict[str, float]) -> dict[str, Any]:
        recorded_when_asked.append(store.get_actor_state(STATE_NAME))
        nodes.ask(node_ids, caps)  # the agent caps its GPUs ...
        raise RuntimeError("the scheduler died before the answer came")

    with pytest.raises(RuntimeError):
        PowerCapKeeper(store, ask_then_crash).keep({"a": 400.0}, {"a": ["n1"]}, ["n1", "n2"])
    assert recorded_when_asked == [{"nodes": {"n1": {}}}] and nodes.limits("n1")[0] == 400.0
    PowerCapKeeper(store, nodes.ask).keep({}, {}, ["n1", "n2"])  # its successor: nothing wanted now
    assert nodes.limits("n1") == [700.0, 700.0] and store.get_actor_state(STATE_NAME) == {"nodes": {}}
