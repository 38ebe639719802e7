"""A real GPU under a power cap: set it, read it back, read power under a small load, restore it.

    python bench/gpu_check.py [--index 0] [--cap-share 0.7] [--load-s 10]

Through the factory's own NVML backend (`factory.telemetry.backends.nvml`): the cap is
`--cap-share` of the device's default limit, clamped into its range. Power is read under a matmul
load (torch on CUDA; without it the GPU is read idle and the script says so), first uncapped, then
capped; the default limit is restored at the end, also after an error or Ctrl-C. Setting a limit
needs root (or the driver's permission); a refusal is one line.

Where no NVIDIA GPU is present the script says so and exits 0, so it can run anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factory.errors import TelemetryError  # noqa: E402 - after the path
from factory.telemetry.backends.nvml import NvmlBackend  # noqa: E402


def loaded_power_w(backend: NvmlBackend, index: int, seconds: float,
                   load: Callable[[], None] | None) -> float:
    """Median power of GPU `index` over `seconds` while `load` runs (read every 0.2 s)."""
    samples, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if load is not None:
            load()
        samples.append(float(backend.read()[index].power_w or 0.0))
        time.sleep(0.2)
    return statistics.median(samples)


def matmul_load(index: int) -> Callable[[], None] | None:
    """A few big matmuls on GPU `index` per call; None without torch on CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    device = torch.device(f"cuda:{index}")
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def run() -> None:
        for _ in range(20):
            a.matmul(a)
        torch.cuda.synchronize(device)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, default=0, help="Which GPU.")
    parser.add_argument("--cap-share", type=float, default=0.7, help="The cap as a share of the default.")
    parser.add_argument("--load-s", type=float, default=10.0, help="Seconds of load per reading.")
    options = parser.parse_args()
    if not NvmlBackend.is_available():
        print("no NVIDIA GPU here (NVML finds no device): nothing to check; run this where a GPU is")
        return 0
    backend = NvmlBackend()
    capped = False
    try:
        gpu = backend.read()[options.index]
        low_w, high_w, default_w = backend.power_limit_range_w(options.index)
        print(f"GPU {options.index}: {gpu.name}; power limit range {low_w:.0f}-{high_w:.0f} W, default "
              f"{default_w:.0f} W, now {gpu.power_limit_w:.0f} W")
        load = matmul_load(options.index)
        if load is None:
            print("no torch on CUDA here: power is read with the GPU idle")
        uncapped_w = loaded_power_w(backend, options.index, options.load_s, load)
        target_w = options.cap_share * default_w
        try:
            set_w = backend.set_power_limit_w(options.index, target_w)
        except TelemetryError as error:
            print(f"could not set the power limit: {error} (setting it needs root)")
            return 1
        capped = True
        read_back_w = backend.read()[options.index].power_limit_w
        capped_w = loaded_power_w(backend, options.index, options.load_s, load)
        print(f"cap asked {target_w:.0f} W, set {set_w:.0f} W, read back {read_back_w:.0f} W")
        print(f"power under load: uncapped {uncapped_w:.0f} W, capped {capped_w:.0f} W "
              f"({capped_w / max(uncapped_w, 1e-9):.2f} of uncapped); within the cap: "
              f"{'yes' if capped_w <= set_w * 1.05 else 'NO'}")
    finally:
        if capped:
            restored_w = backend.set_power_limit_w(options.index, None)
            print(f"restored the default limit: {restored_w:.0f} W "
                  f"(read back {backend.read()[options.index].power_limit_w:.0f} W)")
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
