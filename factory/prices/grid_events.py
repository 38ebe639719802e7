"""Demand-response events in the live factory: the grid's load targets, kept and measured.

An event asks the facility to keep its measured power at or under a target from `start` to `end`:
a target in kW, or a reduction in percent of the baseline measured just before the event starts. The
GridPriceActor keeps them (`GridEventBook`, over the store) and feeds the facility's measured power
to `observe`; the SchedulerActor turns the events into a power cap per interval for its policy
(`factory.scheduling.model.grid_caps_w`), which defers flexible jobs and pauses preemptible ones.

Nomenclature:
  baseline_kw      -- the facility power measured last before the start (a `--reduce-pct` event's
                      target is `baseline x (1 - pct / 100)`); None until then.
  target (resolved) -- the target in kW; for a reduction, None until its baseline is known (the
                      policy then plans with the latest measured power as the baseline).
  intervals        -- the measured power while the event lasts, per `MEASURE_INTERVAL_S`:
                      [start_s, mean_kw, max_kw, samples].
  seconds_to_target -- from the start until the first sample at or under the target (factory seconds).
  real_seconds_to_target -- the same in real seconds: under a replay clock, factory seconds / its
                      speed factor. A response is a physical process (a checkpoint, a worker stopping,
                      the meters seeing it) that no replay speeds up, so it is judged in real seconds.
  complied         -- the power was at or under the target within `RESPONSE_S` real seconds of the
                      start and at every sample after that; None while the event lasts or if nothing
                      was measured.

Invariants:
  * An event is stored before it is answered, and every change (added, cancelled, started with its
    baseline, ended with its outcome) is audited (`grid.event_*`).
  * A cancelled event caps nothing from its cancellation on; an ended one keeps its measurements.
"""

from __future__ import annotations

import csv
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from factory.clock import aware_time_s
from factory.errors import ConfigError, FactoryError
from factory.store import StateStore

MEASURE_INTERVAL_S = 300.0
RESPONSE_S = 60.0  # measured power must be under the target this soon after the start (real seconds)
COMPLIANCE_EPS_KW = 1e-6


class GridEventError(ConfigError):
    """An event that cannot be kept as given (a field to fix: exit code 2)."""


class GridEventNotFoundError(FactoryError):
    """No event with that id."""


class GridEvent(BaseModel):
    """One demand-response event and what was measured during it."""

    event_id: str
    start_s: float
    end_s: float
    target_kw: float | None = None
    reduce_pct: float | None = None
    source: str = ""
    created_s: float
    created_by: str = ""
    cancelled_s: float | None = None
    baseline_kw: float | None = None
    intervals: list[list[float]] = Field(default_factory=list)
    max_kw: float | None = None
    seconds_to_target: float | None = None
    real_seconds_to_target: float | None = None
    late_over_target: bool = False  # a sample over the target after RESPONSE_S or after one under it
    ended: bool = False
    # Why the target could not be met, once the fixed load alone (jobs that cannot be paused or whose
    # deadline cannot move, and the measured draw of everything else) was over it: kW at the meter, names.
    fixed_load_kw: float | None = None
    fixed_load: list[str] = Field(default_factory=list)

    def target_now_kw(self, latest_kw: float | None) -> float | None:
        """The target in kW (a reduction's from its baseline, else from `latest_kw`, the power now)."""
        if self.target_kw is not None:
            return self.target_kw
        baseline = self.baseline_kw if self.baseline_kw is not None else latest_kw
        return None if baseline is None or self.reduce_pct is None else baseline * (1 - self.reduce_pct / 100)

    def state(self, now_s: float) -> str:
        """scheduled, active, ended or cancelled."""
        if self.cancelled_s is not None and self.cancelled_s <= max(now_s, self.start_s):
            return "cancelled"
        if now_s < self.start_s:
            return "scheduled"
        return "active" if now_s < self.end_s else "ended"

    def complied(self, now_s: float | None = None) -> bool | None:
        """Whether the facility met the event (see the module docstring); None until it is known.

        Known once the event is over: marked ended by the first measurement after its end, or, given
        `now_s`, once its end has passed (no later sample counts, so the outcome is the same).
        """
        over = self.ended or (now_s is not None and self.state(now_s) == "ended")
        if not over or self.max_kw is None:
            return None
        response_s = self.real_seconds_to_target if self.real_seconds_to_target is not None \
            else self.seconds_to_target  # an event measured before real seconds were kept
        return response_s is not None and response_s <= RESPONSE_S and not self.late_over_target

    def view(self, now_s: float, latest_kw: float | None = None) -> dict[str, Any]:
        """The event as `factory grid events --json` shows it."""
        return {**self.model_dump(mode="json"), "state": self.state(now_s),
                "target_now_kw": self.target_now_kw(latest_kw), "complied": self.complied(now_s),
                "unmet_reason": self.unmet_reason(latest_kw)}

    def unmet_reason(self, latest_kw: float | None = None) -> str | None:
        """'the fixed load (jobs a, b; other draw) needs 2.38 kW at the meter, over the 1.83 kW target'."""
        target_kw = self.target_now_kw(latest_kw)
        if self.fixed_load_kw is None or target_kw is None:
            return None
        return (f"the fixed load ({'; '.join(self.fixed_load)}) needs {self.fixed_load_kw:.2f} kW at the "
                f"meter, over the {target_kw:.2f} kW target")


class GridEventBook:
    """Every grid event, in the store; the rules for adding, cancelling and measuring them.

    The scheduler's threads share it: readers copy `events` before walking it (a list() of a dict is
    one step under the GIL), and events are replaced whole, never changed in place.
    """

    def __init__(self, store: StateStore, now_s: Callable[[], float], audit: Callable[..., int],
                 speed_factor: float = 1.0) -> None:
        """`speed_factor`: factory seconds per real second (the clock's; 1 on the wall clock)."""
        self.store = store
        self._now_s = now_s
        self._speed_factor = speed_factor
        self._audit = audit
        self.latest_kw: float | None = None  # the last measured facility power
        self._actions_audited: set[tuple[str, str, str]] = set()  # (event, job, action) in the audit log
        self.events: dict[str, GridEvent] = {
            record["event_id"]: GridEvent.model_validate(record) for record in store.list_grid_events()}

    def add(self, start_s: float, end_s: float, *, target_kw: float | None = None,
            reduce_pct: float | None = None, source: str = "", created_by: str = "",
            event_id: str | None = None) -> GridEvent:
        """A new event; GridEventError (one line naming the field) if it cannot be kept as given.

        An `event_id` already kept (an event file read again) returns that event and adds nothing.
        """
        if event_id is not None and event_id in self.events:
            return self.events[event_id]
        now_s = self._now_s()
        if (target_kw is None) == (reduce_pct is None):
            raise GridEventError("give either a target in kW (--target-kw) or a reduction in percent "
                                 "(--reduce-pct), not both or neither")
        if target_kw is not None and not (math.isfinite(target_kw) and target_kw >= 0):
            raise GridEventError(f"--target-kw {target_kw:g} is not a finite power of 0 kW or more")
        if reduce_pct is not None and not (math.isfinite(reduce_pct) and 0 < reduce_pct <= 100):
            raise GridEventError(f"--reduce-pct {reduce_pct:g} is out of range: give a percent in (0, 100]")
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s:
            raise GridEventError("--end must be after --start")
        if end_s <= now_s:
            raise GridEventError("--end is in the past (factory time): the event would be over already")
        event = GridEvent(event_id=event_id or f"ev-{uuid.uuid4().hex[:8]}", start_s=start_s, end_s=end_s,
                          target_kw=target_kw, reduce_pct=reduce_pct, source=source, created_s=now_s,
                          created_by=created_by)
        self._save(event)
        self._audit("grid.event_added", event.event_id, actor=created_by or None, start_s=start_s,
                    end_s=end_s, target_kw=target_kw, reduce_pct=reduce_pct, source=source)
        return event

    def cancel(self, event_id: str, cancelled_by: str = "") -> GridEvent:
        """Cancel an event from now; an event that ended or was cancelled is left as it is."""
        event = self.get(event_id)
        now_s = self._now_s()
        if event.cancelled_s is not None or now_s >= event.end_s:
            return event
        event = event.model_copy(update={"cancelled_s": now_s})
        self._save(event)
        self._audit("grid.event_cancelled", event_id, actor=cancelled_by or None)
        return event

    def add_from_file(self, path: Path) -> list[GridEvent]:
        """The events of an event file not kept yet and not over (ids `file-<its id>`); return those added.

        Raises:
            GridEventError: the file cannot be read (one line naming the file, line and column).
        """
        return self.add_rows(read_event_file(path), "file", f"file:{Path(path).name}", "grid-events-file")

    def add_rows(self, rows: Iterable[EventRow], kind: str, source: str, created_by: str) -> list[GridEvent]:
        """The events of a file or feed (`kind`) not kept yet and not over, with ids `<kind>-<its id>` and
        `source` unless they name theirs; return those added. A row read again adds nothing."""
        now_s, added = self._now_s(), []
        for row in rows:
            event_id = f"{kind}-{row.event_id}"
            if event_id in self.events or row.end_s <= now_s:
                continue
            added.append(self.add(row.start_s, row.end_s, target_kw=row.target_kw, reduce_pct=row.reduce_pct,
                                  source=row.source or source, created_by=created_by, event_id=event_id))
        return added

    def get(self, event_id: str) -> GridEvent:
        """The event `event_id`; GridEventNotFoundError naming the known ones otherwise."""
        if event_id not in self.events:
            known = ", ".join(sorted(self.events)[-5:]) or "none"
            raise GridEventNotFoundError(f"no grid event '{event_id}' (latest: {known}); "
                                         "`factory grid events` lists them")
        return self.events[event_id]

    def listed(self) -> list[GridEvent]:
        """Every event, by start."""
        return sorted(list(self.events.values()), key=lambda e: (e.start_s, e.event_id))

    def caps(self) -> list[tuple[float, float, float, float]]:
        """(start_s, end_s, target_w, announced_s) of the events that still cap, for `grid_caps_w`."""
        now_s = self._now_s()
        kept = []
        for event in list(self.events.values()):
            end_s = event.end_s if event.cancelled_s is None else min(event.end_s, event.cancelled_s)
            target_kw = event.target_now_kw(self.latest_kw)
            if end_s > now_s and target_kw is not None:
                kept.append((event.start_s, end_s, target_kw * 1000.0, event.created_s))
        return kept

    def note_fixed_load(self, now_s: float, fixed_kw: float, names: list[str]) -> None:
        """The fixed load now (kW at the meter; the jobs in it, and 'other draw'): kept on every event under
        way whose target it exceeds, as the reason the target could not be met (audited when its names
        change; the largest kW is kept). It stays on the event once the load is under the target again:
        the record of why the facility was over it then."""
        for event in list(self.events.values()):
            target_kw = event.target_now_kw(self.latest_kw)
            if event.state(now_s) != "active" or event.ended or target_kw is None or \
                    fixed_kw <= target_kw + COMPLIANCE_EPS_KW:
                continue
            if event.fixed_load_kw is not None and event.fixed_load == names:
                if fixed_kw > event.fixed_load_kw:  # the same load, measured higher: the largest is kept
                    self._save(event.model_copy(update={"fixed_load_kw": fixed_kw}))
                continue
            self._save(event.model_copy(update={"fixed_load_kw": fixed_kw, "fixed_load": names}))
            self._audit("grid.event_fixed_load", event.event_id, fixed_load_kw=fixed_kw, fixed_load=names,
                        target_kw=target_kw)

    def record_actions(self, now_s: float, paused: Mapping[str, str], waiting: Mapping[str, str],
                       capped: Mapping[str, str] | None = None) -> None:
        """Audit what the scheduler did for the events under way (`grid.event_action`): each job paused
        (`paused`: job id -> reason), held back (`waiting`) or run with its GPUs capped (`capped`) for the
        power budget while one lasts, once per event, job and action (after a restart an action may be
        audited once more)."""
        active = [event.event_id for event in list(self.events.values())
                  if event.state(now_s) == "active" and not event.ended]
        for action, jobs in (("paused", paused), ("deferred", waiting), ("capped", capped or {})):
            for job_id, reason in jobs.items():
                if not reason.startswith("power budget"):
                    continue
                for event_id in active:
                    if (event_id, job_id, action) not in self._actions_audited:
                        self._actions_audited.add((event_id, job_id, action))
                        self._audit("grid.event_action", event_id, taken=action, job_id=job_id,
                                    reason=reason)

    def target_now_kw(self) -> float | None:
        """The lowest target of the events under way now (None: none is)."""
        now_s = self._now_s()
        targets = [event.target_now_kw(self.latest_kw) for event in list(self.events.values())
                   if event.state(now_s) == "active"]
        known = [target for target in targets if target is not None]
        return min(known) if known else None

    def observe(self, now_s: float, facility_kw: float) -> None:
        """One measurement of the facility's power: baselines, measured intervals, outcomes."""
        previous_kw, self.latest_kw = self.latest_kw, facility_kw
        for event in list(self.events.values()):
            if event.ended or event.state(now_s) == "cancelled":
                continue
            if now_s < event.start_s:
                continue
            changed = event
            if event.baseline_kw is None:
                baseline = previous_kw if previous_kw is not None else facility_kw
                changed = changed.model_copy(update={"baseline_kw": baseline})
                self._audit("grid.event_started", event.event_id, baseline_kw=baseline,
                            target_kw=changed.target_now_kw(baseline))
            if now_s >= event.end_s:
                changed = changed.model_copy(update={"ended": True})
                self._save(changed)
                self._audit("grid.event_ended", event.event_id, max_kw=changed.max_kw,
                            seconds_to_target=changed.seconds_to_target,
                            real_seconds_to_target=changed.real_seconds_to_target,
                            complied=changed.complied())
                continue
            self._save(_measured(changed, now_s, facility_kw, self._speed_factor))

    def _save(self, event: GridEvent) -> None:
        self.store.put_grid_event(event.event_id, event.start_s, event.end_s, event.model_dump(mode="json"))
        self.events[event.event_id] = event


def _measured(event: GridEvent, now_s: float, facility_kw: float, speed_factor: float) -> GridEvent:
    """`event` with one sample of the facility's power taken at `now_s` during it (`speed_factor`: factory
    seconds per real second)."""
    target_kw = event.target_now_kw(None)
    assert target_kw is not None  # a reduction's baseline is set before the first sample
    under = facility_kw <= target_kw + COMPLIANCE_EPS_KW
    seconds_to_target, real_seconds_to_target = event.seconds_to_target, event.real_seconds_to_target
    since_start_real_s = (now_s - event.start_s) / speed_factor
    # Over the target once it was under it, or once the response time is up: not complied (however
    # short the event).
    late_over = event.late_over_target or (not under and (seconds_to_target is not None
                                                          or since_start_real_s > RESPONSE_S))
    if seconds_to_target is None and under:
        seconds_to_target, real_seconds_to_target = now_s - event.start_s, since_start_real_s
    intervals = [list(row) for row in event.intervals]
    slot_s = event.start_s + math.floor((now_s - event.start_s) / MEASURE_INTERVAL_S) * MEASURE_INTERVAL_S
    if intervals and intervals[-1][0] == slot_s:
        start, mean, peak, count = intervals[-1]
        intervals[-1] = [start, (mean * count + facility_kw) / (count + 1), max(peak, facility_kw), count + 1]
    else:
        intervals.append([slot_s, facility_kw, facility_kw, 1])
    return event.model_copy(update={
        "intervals": intervals, "max_kw": max(event.max_kw or 0.0, facility_kw),
        "seconds_to_target": seconds_to_target, "real_seconds_to_target": real_seconds_to_target,
        "late_over_target": late_over})


class EventRow(NamedTuple):
    """One event as a file gives it (see `read_event_file`)."""

    event_id: str
    start_s: float
    end_s: float
    target_kw: float | None
    reduce_pct: float | None
    announced_s: float
    source: str


def read_event_file(path: str | Path, error: type[FactoryError] = GridEventError) -> list[EventRow]:
    """Grid events from a CSV: `start`, `end` (ISO 8601 with offset), `target_kw` or `reduce_pct`, and
    optionally `id`, `announced` (default: the start) and `source`. A bad row raises `error`, one line
    naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file of grid events")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"start", "end"} <= columns or not columns & {"target_kw", "reduce_pct"}:
            raise error(f"{path}: the columns are start, end, and target_kw or reduce_pct (and optionally "
                        f"id, announced, source); it has {', '.join(sorted(columns)) or 'none'}")
        rows = list(enumerate(reader, start=2))
    return event_rows(((f"{path}:{line}", row) for line, row in rows), error)


def event_rows(records: Iterable[tuple[str, Mapping[str, Any]]],
               error: type[FactoryError] = GridEventError) -> list[EventRow]:
    """Grid events from records of the event file's fields (`read_event_file`), each with where it
    came from ("FILE:LINE", "URL event 3"); a bad one raises `error`, one line naming where and the
    field. Values may be text or JSON numbers; an event without an id gets one made of its times and
    target (`event-<hash>`), the same wherever it is read."""
    events = []
    for where, record in records:
        row = {key: "" if value is None else str(value).strip() for key, value in record.items()}

        def at(column: str, where: str = where, row: dict[str, str] = row) -> float:
            try:
                return aware_time_s(row.get(column) or "")
            except ValueError as wrong:
                raise error(f"{where}: {column} {wrong}") from None

        def number(column: str, where: str = where, row: dict[str, str] = row) -> float | None:
            text = row.get(column) or ""
            if not text:
                return None
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise error(f"{where}: {column} {text!r} is not a finite number, 0 or more")
            return value

        start_s, end_s = at("start"), at("end")
        if end_s <= start_s:
            raise error(f"{where}: end {row['end']} is not after start {row['start']}")
        target_kw, reduce_pct = number("target_kw"), number("reduce_pct")
        if (target_kw is None) == (reduce_pct is None):
            raise error(f"{where}: give target_kw or reduce_pct (one of them)")
        if reduce_pct is not None and not 0 < reduce_pct <= 100:
            raise error(f"{where}: reduce_pct {reduce_pct:g} is out of range: give a percent in (0, 100]")
        notice = row.get("announced") or ""
        announced_s = at("announced") if notice else start_s
        if announced_s > start_s:
            raise error(f"{where}: announced {notice} is after the event's start")
        # Without an id, one made of what the event asks: the same event read again (in any place of a
        # file or an answer) is the same event, and no two different ones share an id.
        made_id = hashlib.sha256(f"{start_s}|{end_s}|{target_kw}|{reduce_pct}".encode()).hexdigest()[:10]
        events.append(EventRow(row.get("id") or f"event-{made_id}", start_s, end_s,
                               target_kw, reduce_pct, announced_s, row.get("source") or ""))
    return events
