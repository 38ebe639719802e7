"""Power caps on one node's GPUs: each GPU held by a capped job at that job's cap, every other at its default.

The scheduler sends the caps it wants for its jobs (`Decisions.power_caps_w`, W per GPU); the node's agent
sets them through its backend (`set_power_limit_w`, clamped into each device's range) and restores every
other GPU whose limit is not its default. The answer depends only on the caps wanted and on what the
devices read, so a restarted agent or scheduler puts a GPU capped before its crash right on the next call.

Invariants:
  * Only a GPU whose limit differs from the one wanted is written (a write needs root on NVML, and costs).
  * A GPU that cannot be capped is named in the answer's error; the others are still set. A GPU whose
    limit could not be restored is answered as still capped (at the limit it reads), so that the
    scheduler keeps asking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from factory.errors import DeviceNotSupportedError, TelemetryError
from factory.telemetry.backends.base import GpuBackend
from factory.telemetry.models import GpuStatus, PowerCaps

TOLERANCE_W = 0.5  # NVML sets milliwatts; a limit read back within this is the one wanted


def cap_floor_w(backend: GpuBackend | None) -> float | None:
    """The lowest cap every GPU of the node accepts (the highest of their minimums); None: no caps here."""
    if backend is None or backend.gpu_count == 0:
        return None
    try:
        return max(backend.power_limit_range_w(index)[0] for index in range(backend.gpu_count))
    except TelemetryError:  # not supported, or a device refused: caps are no lever on this node
        return None


def apply_job_caps(backend: GpuBackend | None, node_id: str, gpus: Sequence[GpuStatus],
                   caps_by_job: Mapping[str, float]) -> PowerCaps:
    """Set each GPU's limit to the cap of the job holding it (the lowest, if several), else its default."""
    capped: dict[int, float] = {}
    errors: list[str] = []
    changed = False
    for gpu in gpus:
        wanted = min((caps_by_job[job] for job in gpu.consumers if job in caps_by_job), default=None)
        try:
            if backend is None:
                raise TelemetryError("this node reads no GPU backend")
            default_w = backend.power_limit_range_w(gpu.index)[2]
            target_w = default_w if wanted is None else wanted
            if gpu.power_limit_w is None or abs(gpu.power_limit_w - target_w) > TOLERANCE_W:
                set_w = backend.set_power_limit_w(gpu.index, wanted)
                changed = True
            else:
                set_w = gpu.power_limit_w
        except DeviceNotSupportedError as error:  # never capped here: nothing to restore either
            if wanted is not None:
                errors.append(f"GPU {gpu.index}: {error}")
            continue
        except TelemetryError as error:
            errors.append(f"GPU {gpu.index}: {error}" if wanted is not None else
                          f"GPU {gpu.index}: its limit could not be restored: {error}")
            if wanted is None and gpu.power_limit_w is not None:
                capped[gpu.index] = gpu.power_limit_w  # as far as anyone knows, still capped: ask again
            continue
        if set_w < default_w - TOLERANCE_W:
            capped[gpu.index] = set_w
    return PowerCaps(node_id=node_id, capped_w=capped, error="; ".join(errors) or None, changed=changed)
