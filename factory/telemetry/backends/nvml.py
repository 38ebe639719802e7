"""Real GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`).

NVML reports power in mW, energy in mJ, memory in bytes; readings convert to W and MiB but keep the
energy counter in mJ (as DCGM does). NVML error codes map to the factory's exceptions:
  library/driver missing            -> DeviceUnavailableError (the backend is not available)
  feature absent on this GPU        -> DeviceNotSupportedError (the field is None, nothing fails)
  anything else on one GPU          -> DeviceError (that GPU is unhealthy in this sample)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from factory.errors import DeviceError, DeviceNotSupportedError, DeviceUnavailableError, TelemetryError
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.models import MIB, GpuProcess, GpuReading

T = TypeVar("T")

_UNAVAILABLE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    pynvml.NVML_ERROR_UNINITIALIZED,
}
_NOT_SUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}

# Clock event ("throttle") reasons NVML can report, as short names people read in `factory gpus`.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def map_nvml_error(error: pynvml.NVMLError, what: str) -> TelemetryError:
    """The factory's exception for an NVML error code, naming what was being read."""
    code = getattr(error, "value", None)
    message = f"NVML {what}: {error}"
    if code in _UNAVAILABLE:
        return DeviceUnavailableError(message)
    if code in _NOT_SUPPORTED:
        return DeviceNotSupportedError(message)
    return DeviceError(message)


def _call(what: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        raise map_nvml_error(exc, what) from None


def _optional(what: str, fn: Callable[..., T], *args: Any) -> T | None:
    """A field some GPUs lack: None when unsupported; other errors propagate."""
    try:
        return _call(what, fn, *args)
    except DeviceNotSupportedError:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend(GpuBackend):
    """Reads every GPU NVML sees on this node."""

    source = "nvml"

    def __init__(self) -> None:
        _call("init", pynvml.nvmlInit)
        # A GPU whose handle cannot be had (fallen off the bus) stays in the list as its error,
        # so that it shows as unhealthy while the others are read.
        self._handles: list[Any] = []
        for index in range(_call("device count", pynvml.nvmlDeviceGetCount)):
            try:
                handle = _call(f"handle of GPU {index}", pynvml.nvmlDeviceGetHandleByIndex, index)
                self._handles.append(handle)
            except TelemetryError as exc:
                self._handles.append(exc)

    @classmethod
    def is_available(cls) -> bool:
        """NVML initialises and sees at least one GPU."""
        try:
            pynvml.nvmlInit()
            try:
                return pynvml.nvmlDeviceGetCount() > 0
            finally:
                pynvml.nvmlShutdown()
        except (pynvml.NVMLError, OSError):
            return False

    @property
    def gpu_count(self) -> int:
        """GPUs NVML reported at start."""
        return len(self._handles)

    def read(self) -> list[GpuReading]:
        """One reading per GPU; a GPU whose read fails is marked unhealthy, the rest go on."""
        readings = []
        for index, handle in enumerate(self._handles):
            try:
                if isinstance(handle, TelemetryError):
                    raise handle
                readings.append(self._read_one(index, handle))
            except Exception as exc:  # noqa: BLE001 - whatever one GPU does, the others are read
                error = str(exc) if isinstance(exc, TelemetryError) else f"{type(exc).__name__}: {exc}"
                readings.append(GpuReading(index=index, source="nvml", healthy=False, error=error))
        return readings

    def close(self) -> None:
        """Shut NVML down (it is reference-counted by the driver library)."""
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass

    def power_limit_range_w(self, index: int) -> tuple[float, float, float]:
        """(min, max, default) power limit of GPU `index` from NVML, in W."""
        handle = self._handle(index)
        constraints = pynvml.nvmlDeviceGetPowerManagementLimitConstraints
        low_mw, high_mw = _call("power limit constraints", constraints, handle)
        default_mw = _call("default power limit", pynvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)
        return low_mw / 1000.0, high_mw / 1000.0, default_mw / 1000.0

    def set_power_limit_w(self, index: int, watts: float | None) -> float:
        """`nvmlDeviceSetPowerManagementLimit`, clamped into the device's range (needs root)."""
        low_w, high_w, default_w = self.power_limit_range_w(index)
        limit_w = default_w if watts is None else min(high_w, max(low_w, float(watts)))
        _call(f"set the power limit of GPU {index}", pynvml.nvmlDeviceSetPowerManagementLimit,
              self._handle(index), round(limit_w * 1000))
        return limit_w

    def _handle(self, index: int) -> Any:
        handle = self._handles[index]
        if isinstance(handle, TelemetryError):
            raise handle
        return handle

    @staticmethod
    def _read_one(index: int, handle: Any) -> GpuReading:
        utilization = _call("utilization", pynvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _call("memory info", pynvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _call("power usage", pynvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = _optional("power limit", pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        reasons = _optional("clock event reasons", pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        processes = _optional("compute processes", pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
        return GpuReading(
            index=index,
            uuid=_text(_call("uuid", pynvml.nvmlDeviceGetUUID, handle)),
            name=_text(_call("name", pynvml.nvmlDeviceGetName, handle)),
            source="nvml",
            utilization_pct=float(utilization.gpu),
            memory_used_mib=memory.used / MIB,
            memory_total_mib=memory.total / MIB,
            power_w=power_mw / 1000.0,
            energy_counter_mj=_optional("energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption, handle),
            temperature_c=float(_call("temperature", pynvml.nvmlDeviceGetTemperature, handle,
                                      pynvml.NVML_TEMPERATURE_GPU)),
            sm_clock_mhz=_optional("SM clock", pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
            mem_clock_mhz=_optional("memory clock", pynvml.nvmlDeviceGetClockInfo, handle,
                                    pynvml.NVML_CLOCK_MEM),
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            throttle_reasons=[name for bit, name in THROTTLE_REASONS.items() if reasons and reasons & bit],
            ecc_corrected_errors=_optional("ECC errors", pynvml.nvmlDeviceGetTotalEccErrors, handle,
                                           pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
            ecc_uncorrected_errors=_optional("ECC errors", pynvml.nvmlDeviceGetTotalEccErrors, handle,
                                             pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                             pynvml.NVML_VOLATILE_ECC),
            processes=[
                GpuProcess(pid=p.pid, used_memory_mib=(p.usedGpuMemory or 0) / MIB) for p in processes or []
            ],
        )
