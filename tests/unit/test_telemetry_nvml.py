"""The NVML backend against `pynvml` mocked with autospec (the hardware seam): real call
signatures, recorded device answers, and NVML's own error classes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml
import pytest

from factory.config import TelemetryConfig
from factory.errors import DeviceError, DeviceNotSupportedError, DeviceUnavailableError
from factory.telemetry.backends.nvml import NvmlBackend, map_nvml_error
from factory.telemetry.select import select_backend

MIB = 1024 * 1024


@dataclass
class FakeGpu:
    """What one recorded GPU answers. `energy_mj=None`: the GPU has no energy counter."""

    power_mw: int = 250_000
    energy_mj: int | None = 1_000_000
    util: int = 87
    used_bytes: int = 30_000 * MIB
    total_bytes: int = 81_559 * MIB
    temperature_c: int = 61
    fail_with: int | None = None  # an NVML error code every query of this GPU raises
    pids: list[int] = field(default_factory=lambda: [4242])
    limit_mw: int = 700_000
    set_error: int | None = None  # what setting the power limit raises (e.g. NO_PERMISSION)


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml turns the code into its subclass, e.g. NVMLError_GpuIsLost


class FakeNvml:
    """The recorded machine: its GPUs, and the error `nvmlInit` raises (None: it works)."""

    def __init__(self) -> None:
        self.gpus: list[FakeGpu] = []
        self.init_error: int | None = None


@pytest.fixture()
def fake_nvml() -> Iterator[FakeNvml]:
    """Patch every NVML function the backend calls, with autospec; tests fill in the machine."""
    machine = FakeNvml()
    gpus = machine.gpus

    def gpu(handle: Any) -> FakeGpu:
        device = gpus[handle]
        if device.fail_with is not None:
            raise nvml_error(device.fail_with)
        return device

    def energy(handle: Any) -> int:
        device = gpu(handle)
        if device.energy_mj is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return device.energy_mj

    def set_limit(handle: Any, limit_mw: int) -> None:
        device = gpu(handle)
        if device.set_error is not None:
            raise nvml_error(device.set_error)
        device.limit_mw = limit_mw

    def init() -> None:
        if machine.init_error is not None:
            raise nvml_error(machine.init_error)

    answers = {
        "nvmlInit": init,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetUUID": lambda h: f"GPU-{gpu(h) and h:04d}",
        "nvmlDeviceGetName": lambda h: gpu(h) and "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=gpu(h).util, memory=10),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=gpu(h).used_bytes,
                                                             total=gpu(h).total_bytes),
        "nvmlDeviceGetPowerUsage": lambda h: gpu(h).power_mw,
        "nvmlDeviceGetTotalEnergyConsumption": energy,
        "nvmlDeviceGetTemperature": lambda h, sensor: gpu(h).temperature_c,
        "nvmlDeviceGetClockInfo": lambda h, kind: {pynvml.NVML_CLOCK_SM: 1980,
                                                   pynvml.NVML_CLOCK_MEM: 2619}[kind],
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: gpu(h).limit_mw,
        "nvmlDeviceGetPowerManagementLimitConstraints": lambda h: gpu(h) and [200_000, 700_000],
        "nvmlDeviceGetPowerManagementDefaultLimit": lambda h: gpu(h) and 700_000,
        "nvmlDeviceSetPowerManagementLimit": set_limit,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: 0x4 | 0x20,
        "nvmlDeviceGetTotalEccErrors": lambda h, error_type, counter: 3 if error_type == 0 else 0,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            SimpleNamespace(pid=pid, usedGpuMemory=1024 * MIB) for pid in gpu(h).pids
        ],
    }
    with ExitStack() as stack:
        for name, answer in answers.items():
            stack.enter_context(mock.patch.object(pynvml, name, autospec=True, side_effect=answer))
        yield machine


def test_normal_readings_are_converted_to_the_documented_units(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus.extend([FakeGpu(), FakeGpu(power_mw=90_500, util=0, pids=[])])

    readings = NvmlBackend().read()

    first, second = readings
    assert first.source == "nvml" and first.healthy and first.name == "NVIDIA H100 80GB HBM3"
    assert first.power_w == 250.0 and first.power_limit_w == 700.0
    assert first.energy_counter_mj == 1_000_000
    assert first.utilization_pct == 87.0 and first.temperature_c == 61.0
    assert first.memory_used_mib == 30_000 and first.memory_total_mib == 81_559
    assert first.sm_clock_mhz == 1980 and first.mem_clock_mhz == 2619
    assert first.throttle_reasons == ["sw_power_cap", "sw_thermal_slowdown"]
    assert first.ecc_corrected_errors == 3 and first.ecc_uncorrected_errors == 0
    assert [(p.pid, p.used_memory_mib) for p in first.processes] == [(4242, 1024)]
    assert second.power_w == 90.5 and second.processes == []


def test_a_gpu_without_an_energy_counter_reads_none_and_integrates(fake_nvml: FakeNvml) -> None:
    from factory.telemetry.energy import GpuEnergyMeter

    fake_nvml.gpus.append(FakeGpu(energy_mj=None, power_mw=300_000))
    backend = NvmlBackend()
    meter = GpuEnergyMeter()

    meter.update(backend.read()[0], interval_s=0.0)
    reading = backend.read()[0]
    assert reading.healthy and reading.energy_counter_mj is None
    assert meter.update(reading, interval_s=10.0) == pytest.approx(3000.0)  # 300 W x 10 s


def test_an_nvml_error_on_one_gpu_marks_it_unhealthy_and_the_others_are_read(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml.gpus.extend([FakeGpu(), FakeGpu(), FakeGpu(power_mw=100_000)])
    backend = NvmlBackend()
    fake_nvml.gpus[1].fail_with = pynvml.NVML_ERROR_GPU_IS_LOST

    readings = backend.read()

    assert [r.healthy for r in readings] == [True, False, True]
    assert readings[1].power_w is None and "GPU is lost" in (readings[1].error or "")
    assert readings[2].power_w == 100.0


def test_a_gpu_lost_before_start_and_an_unexpected_answer_leave_the_others_readable(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml.gpus.extend([FakeGpu(), FakeGpu(fail_with=pynvml.NVML_ERROR_GPU_IS_LOST), FakeGpu()])
    handle_of = pynvml.nvmlDeviceGetHandleByIndex.side_effect

    def lost_handle(index: int) -> int:
        if index == 1:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handle_of(index)

    pynvml.nvmlDeviceGetHandleByIndex.side_effect = lost_handle
    backend = NvmlBackend()  # starts although GPU 1 has no handle
    fake_nvml.gpus[1].fail_with = None
    fake_nvml.gpus[2].util = "garbage"  # a driver answer the reading cannot hold

    readings = backend.read()

    assert backend.gpu_count == 3
    assert [r.healthy for r in readings] == [True, False, False]
    assert "handle of GPU 1" in (readings[1].error or "") and readings[0].power_w == 250.0
    assert "could not convert" in (readings[2].error or "")


def test_a_driver_that_is_not_loaded_makes_nvml_unavailable(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus.append(FakeGpu())
    fake_nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    assert NvmlBackend.is_available() is False
    with pytest.raises(DeviceUnavailableError, match="Driver Not Loaded"):
        NvmlBackend()
    # auto falls back to simulated GPUs on a node that declares GPUs to Ray, else to the host
    config = TelemetryConfig()
    assert select_backend(config, ray_gpus=2, usage=dict).backend.source == "simulated"
    assert select_backend(config, ray_gpus=0, usage=dict).backend is None
    forced = select_backend(TelemetryConfig(backend="nvml"), ray_gpus=0, usage=dict)
    assert forced.backend is None and "NVML is not available" in (forced.error or "")


def test_nvml_error_codes_map_to_the_factorys_exceptions() -> None:
    cases = {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: DeviceUnavailableError,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED: DeviceUnavailableError,
        pynvml.NVML_ERROR_NOT_SUPPORTED: DeviceNotSupportedError,
        pynvml.NVML_ERROR_GPU_IS_LOST: DeviceError,
        pynvml.NVML_ERROR_TIMEOUT: DeviceError,
    }
    for code, expected in cases.items():
        error = map_nvml_error(nvml_error(code), "power usage")
        assert type(error) is expected and "power usage" in str(error)


def test_auto_prefers_nvml_when_it_works(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus.append(FakeGpu())
    selection = select_backend(TelemetryConfig(), ray_gpus=1, usage=dict)
    assert selection.backend is not None and selection.backend.source == "nvml"
    assert selection.backend.gpu_count == 1


def test_a_power_cap_is_set_within_the_devices_range_read_back_and_restored(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus.extend([FakeGpu(), FakeGpu()])
    backend = NvmlBackend()

    assert backend.power_limit_range_w(0) == (200.0, 700.0, 700.0)
    assert backend.set_power_limit_w(0, 450.0) == 450.0
    assert backend.set_power_limit_w(1, 50.0) == 200.0  # clamped to the device's minimum
    assert [reading.power_limit_w for reading in backend.read()] == [450.0, 200.0]
    assert backend.set_power_limit_w(0, None) == 700.0  # restored to the default
    assert backend.read()[0].power_limit_w == 700.0


def test_a_power_cap_the_driver_refuses_is_a_device_error_naming_the_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus.append(FakeGpu(set_error=pynvml.NVML_ERROR_NO_PERMISSION))
    with pytest.raises(DeviceError, match="set the power limit of GPU 0"):
        NvmlBackend().set_power_limit_w(0, 400.0)
