"""`JobTrace`: the jobs of a simulation, as columns (one numpy array per field, one row per job).

Nomenclature:
  time zero   -- the start of the price trace; `submit_s` counts seconds from it.
  deadline_s  -- seconds after *submit* by which the job must have finished (not an absolute time).
  power_w     -- draw per GPU while the job runs; a job's power is `num_gpus * power_w`.

Invariants (checked by the loader, relied on by the simulator and the offline optimum):
  * every array has one entry per job, in file order; `job_id` values are unique;
  * `submit_s >= 0`, `duration_s > 0`, `num_gpus >= 1`, `deadline_s > 0`, `power_w >= 0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JobTrace:
    """Columns of a job trace; see the module docstring for units and invariants."""

    job_id: np.ndarray        # str (object dtype)
    submit_s: np.ndarray      # float64, seconds after time zero
    duration_s: np.ndarray    # float64, run time on its GPUs
    num_gpus: np.ndarray      # int64
    deadline_s: np.ndarray    # float64, seconds after submit
    preemptible: np.ndarray   # bool
    power_w: np.ndarray       # float64, per GPU
    team: np.ndarray          # str (object dtype); "" when the file names none
    priority: np.ndarray      # int64; higher runs first under the `priority` policy

    def __len__(self) -> int:
        return len(self.job_id)

    @property
    def energy_kwh(self) -> np.ndarray:
        """Each job's energy if it runs exactly its duration (no pause overhead)."""
        return self.num_gpus * self.power_w * self.duration_s / 3.6e6
