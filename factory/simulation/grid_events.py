"""Demand-response events in the simulator: the grid asks the facility to stay under a load target.

An event: `id`, `start`, `end` (ISO 8601 timestamps), `target_kw` (facility power to stay at or
under), and optionally `announced` (when the grid told the facility; default: at its start, no
notice). A CSV file holds one per row (`factory simulate --grid-events FILE`).

Nomenclature:
  cap   -- the power the events allow, per price interval of the policy's outlook: the lowest target of
           the announced events that overlap the interval (inf where none). In the current interval only
           an event already under way counts, so that nothing is paused before its start.
  max_kw -- the highest facility power while the event lasted (the simulator's power is piecewise
           constant: the GPUs of the running jobs at their `power_w`).
  complied -- max_kw <= target_kw (to a milliwatt).
  unmet_reason -- why an event was not complied where the fixed load alone (the running jobs that
           cannot be paused, at their power) was over its target; None otherwise.

Invariants:
  * The policy sees an event only once it is announced; the simulator decides again at each event's
    announcement, start and end, so a cap takes effect at its start, not at the next price interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from factory.errors import SimulationInputError
from factory.prices.grid_events import COMPLIANCE_EPS_KW, read_event_file
from factory.scheduling.model import grid_caps_w


@dataclass(frozen=True)
class GridEvents:
    """Events as arrays (absolute Unix seconds, watts), ordered by start."""

    ids: tuple[str, ...]
    start_s: np.ndarray
    end_s: np.ndarray
    target_w: np.ndarray
    announced_s: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def boundaries_s(self) -> np.ndarray:
        """Every announcement, start and end: the simulator decides again at each."""
        return np.unique(np.concatenate([self.announced_s, self.start_s, self.end_s]))

    def cap_w(self, now_s: float, starts_s: np.ndarray, interval_s: float) -> np.ndarray:
        """The cap per interval starting at `starts_s` (see the module docstring), as seen at `now_s`."""
        return grid_caps_w(now_s, starts_s, interval_s, zip(
            self.start_s.tolist(), self.end_s.tolist(), self.target_w.tolist(), self.announced_s.tolist(),
            strict=True))


class GridEventReport(BaseModel):
    """How the facility met one event (`factory simulate --grid-events` JSON)."""

    id: str
    start: str
    end: str
    target_kw: float
    max_kw: float
    complied: bool
    unmet_reason: str | None = None


def load_grid_events(path: str | Path) -> GridEvents:
    """Read a CSV of events (`factory.prices.grid_events.read_event_file`); a bad row is one line
    naming the file, line and column. The simulator needs each event's target in kW."""
    rows = read_event_file(path, SimulationInputError)
    reduced = next((row for row in rows if row.target_kw is None), None)
    if reduced is not None:
        raise SimulationInputError(f"{path}: event {reduced.event_id} gives reduce_pct; the simulator needs "
                                   "target_kw (it has no measured baseline to reduce from)")
    rows.sort(key=lambda row: row.start_s)
    return GridEvents(tuple(row.event_id for row in rows), np.array([row.start_s for row in rows]),
                      np.array([row.end_s for row in rows]),
                      np.array([float(row.target_kw or 0.0) * 1000.0 for row in rows]),
                      np.array([row.announced_s for row in rows]))


def compliance(events: GridEvents, segment_start_s: np.ndarray, segment_end_s: np.ndarray,
               segment_power_w: np.ndarray,
               segment_fixed_w: np.ndarray | None = None) -> list[GridEventReport]:
    """Each event's target against the highest power the facility drew while it lasted, and the fixed
    load (`segment_fixed_w`) named where it alone was over the target."""
    reports = []
    for i, event_id in enumerate(events.ids):
        start_s, end_s = float(events.start_s[i]), float(events.end_s[i])
        during = (segment_start_s < end_s) & (segment_end_s > start_s)
        max_kw = float(segment_power_w[during].max()) / 1000.0 if during.any() else 0.0
        target_kw = float(events.target_w[i]) / 1000.0
        fixed_kw = float(segment_fixed_w[during].max()) / 1000.0 \
            if segment_fixed_w is not None and during.any() else 0.0
        unmet = (f"the fixed load (jobs that cannot be paused) needs {fixed_kw:.2f} kW, over the "
                 f"{target_kw:.2f} kW target") if fixed_kw > target_kw + COMPLIANCE_EPS_KW else None
        reports.append(GridEventReport(id=event_id, start=_iso(start_s), end=_iso(end_s), target_kw=target_kw,
                                       max_kw=max_kw, complied=max_kw <= target_kw + COMPLIANCE_EPS_KW,
                                       unmet_reason=unmet))
    return reports


def _iso(time_s: float) -> str:
    return datetime.fromtimestamp(time_s, UTC).isoformat()
