"""`factory simulate --plot FILE.png`: price, facility power and queue over time, one panel each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.errors import SimulationInputError
from factory.prices.series import IntervalSeries
from factory.simulation.engine import Outcome

HOUR_S = 3600.0


def plot(outcome: Outcome, baseline: Outcome | None, price: IntervalSeries, currency: str,
         path: str | Path, *, power_budget_w: float | None = None) -> None:
    """Write a PNG of the run (and the baseline's power and queue, dashed) to `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise SimulationInputError("--plot needs matplotlib: pip install -e '.[bench]'") from None
    runs = [outcome] + ([baseline] if baseline is not None else [])
    start_s = price.start_s
    end_s = max(float(run.segment_end_s.max(initial=start_s)) for run in runs)
    end_s = max(end_s, start_s + price.interval_s)
    shown = price.window(start_s, end_s)
    figure, (ax_price, ax_power, ax_queue) = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    ax_price.step((shown.starts() - start_s) / HOUR_S, shown.values, where="post", color="tab:orange",
                  linewidth=0.8)
    ax_price.axhline(0, color="grey", linewidth=0.5)
    ax_price.set_ylabel(f"price ({currency}/MWh)")
    for run, style in zip(runs, ("-", "--"), strict=False):
        label = run.policy + (" (baseline)" if run is baseline else "")
        times_h, power_kw = _steps(run, start_s)
        ax_power.step(times_h, power_kw, where="post", linestyle=style, linewidth=0.9, label=label)
        ax_queue.step((run.timeline_s - start_s) / HOUR_S, run.timeline_waiting, where="post",
                      linestyle=style, linewidth=0.9, label=label)
    if power_budget_w is not None:
        ax_power.axhline(power_budget_w / 1000, color="red", linewidth=0.8, label="power budget")
    ax_power.set_ylabel("GPU power (kW)")
    ax_power.legend(loc="upper right", fontsize="small")
    ax_queue.set_ylabel("jobs waiting")
    ax_queue.set_xlabel("hours from time zero")
    ax_queue.legend(loc="upper right", fontsize="small")
    figure.suptitle(f"factory simulate: {outcome.policy}")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise SimulationInputError(f"cannot write --plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)


def _steps(run: Outcome, start_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Power as a step function in hours from `start_s`, dropping to zero where nothing ran."""
    starts, ends, power = run.segment_start_s, run.segment_end_s, run.segment_power_w / 1000
    if not len(starts):
        return np.zeros(1), np.zeros(1)
    gap = np.append(starts[1:] > ends[:-1] + 1e-6, True)  # idle after this segment
    times = np.concatenate([starts, ends[gap]])
    values = np.concatenate([power, np.zeros(int(gap.sum()))])
    order = np.argsort(times, kind="stable")
    return (times[order] - start_s) / HOUR_S, values[order]
