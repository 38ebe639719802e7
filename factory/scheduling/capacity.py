"""The capacity a reservation plan books: free GPUs and watts per slot of one price outlook.

A slot is a price interval cut into parts of at most `SLOT_S` (an hour into quarters); the first starts
now. A reservation is an unbroken run of whole slots (or, for a preemptible job, runs of them: pieces) in
which a job's GPUs and watts are set aside; `reservation.reserve` decides where each job goes.
"""

from __future__ import annotations

import math

import numpy as np

from factory.scheduling.model import JobView, PriceOutlook, budget_array_w

EPS_S = 1e-6
SLOT_S = 900.0  # the plan's time step within a price interval (at most)


class CapacityBook:
    """Free GPUs and watts per slot of one outlook, with unbroken reservations taken out of them."""

    def __init__(self, outlook: PriceOutlook, now_s: float, total_gpus: int,
                 power_budget_w: float | np.ndarray | None) -> None:
        # Slots of at most SLOT_S within each price interval, so that a short job sets aside a quarter of an
        # hour rather than a whole hour; those that ended before now are dropped.
        per_interval = max(1, round(float(outlook.interval_s) / SLOT_S))
        self.slot_s = float(outlook.interval_s) / per_interval
        nominal = (np.asarray(outlook.starts_s, dtype=float)[:, None]
                   + self.slot_s * np.arange(per_interval)[None, :]).ravel()
        keep = nominal + self.slot_s > now_s + EPS_S
        keep[0] |= not keep.any()
        nominal = nominal[keep]
        self.start_s = np.maximum(nominal, now_s)
        self.end_s = nominal + self.slot_s
        self.first_usable_s = float(self.end_s[0] - self.start_s[0])
        self.count = len(nominal)
        # Slots that begin before the current price interval ends: a reservation starting in one is due now
        # (the next decision may come only at the interval's end).
        self.now_slots = int(np.searchsorted(nominal, float(outlook.starts_s[0]) + float(outlook.interval_s) - EPS_S))
        self.total_gpus = float(total_gpus)
        self.pieces: dict[str, list[tuple[int, int]]] = {}  # jobs booked in several runs of slots
        self.free_gpus = np.full(self.count, float(total_gpus))
        # A budget per price interval (grid events) holds in each of its slots.
        per_slot = power_budget_w if not isinstance(power_budget_w, np.ndarray) else \
            np.repeat(power_budget_w, per_interval)[keep]
        self.free_w = budget_array_w(per_slot, self.count)

    def span(self, start: int, needed_s: float) -> int:
        """Slots an unbroken run of `needed_s` starting at slot `start` covers."""
        if start == 0:
            return 1 + max(0, math.ceil((needed_s - self.first_usable_s) / self.slot_s - EPS_S))
        return max(1, math.ceil(needed_s / self.slot_s - EPS_S))

    def _ok(self, job: JobView, end: int) -> np.ndarray:
        ok = self.free_gpus[:end] >= job.num_gpus - EPS_S
        if job.draw_w > 0:
            ok &= self.free_w[:end] >= job.draw_w - EPS_S
        return ok

    def latest(self, job: JobView, needed_s: float, deadline_s: float) -> int | None:
        """The latest slot an unbroken run can start in and finish by `deadline_s`, or None."""
        last = int(np.searchsorted(self.start_s, deadline_s - needed_s + EPS_S, side="right")) - 1
        if last < 0:
            return None
        later = self.span(1, needed_s)
        first = self.span(0, needed_s)
        end = min(self.count, max(last + later, first))
        ok = self._ok(job, end)
        blocked = np.concatenate(([0], np.cumsum(~ok)))
        if last >= 1:
            top = min(last, end - later)
            if top >= 1:
                starts = np.arange(1, top + 1)
                clean = np.flatnonzero(blocked[starts + later] == blocked[starts])
                if len(clean):
                    return int(starts[clean[-1]])
        if first <= end and blocked[first] == 0 and self.start_s[0] + needed_s <= deadline_s + EPS_S:
            return 0
        return None

    def earliest_finish_s(self, job: JobView, needed_s: float) -> float:
        """When the job would finish if it ran as soon as the room left allows (inf: not in the outlook).

        A preemptible job may use the room in pieces; a non-preemptible one needs an unbroken run.
        """
        ok = self._ok(job, self.count)
        usable = self.end_s - self.start_s
        if job.preemptible:
            room = np.where(ok, usable, 0.0)
            done = np.cumsum(room)
            k = int(np.searchsorted(done, needed_s - EPS_S))
            if k >= self.count:
                return math.inf
            return float(self.end_s[k] - (done[k] - needed_s))
        start = self.earliest(job, needed_s)
        return math.inf if start is None else float(self.start_s[start] + needed_s)

    def take(self, job: JobView, start: int, needed_s: float, sign: float = 1.0) -> None:
        """Set the job's GPUs and watts aside from slot `start` for its run (or give them back)."""
        self.take_slots(job, start, min(self.count, start + self.span(start, needed_s)), sign)

    def take_slots(self, job: JobView, start: int, end: int, sign: float = 1.0) -> None:
        """Set the job's GPUs and watts aside in slots [start, end) (or give them back)."""
        self.free_gpus[start:end] -= sign * job.num_gpus
        self.free_w[start:end] -= sign * job.draw_w

    def book(self, job: JobView, start: int, needed_s: float, sign: float = 1.0) -> None:
        """Take (or give back) what `_place` booked for the job from slot `start`: one run, or its pieces."""
        pieces = self.pieces.get(job.job_id)
        if pieces is None or pieces[0][0] != start:
            self.take(job, start, needed_s, sign)
            return
        for first, end in pieces:
            self.take_slots(job, first, end, sign)
        if sign < 0:
            del self.pieces[job.job_id]

    def latest_pieces(self, job: JobView, needed_s: float, deadline_s: float,
                      resume_s: float) -> list[tuple[int, int]] | None:
        """Runs of free slots, latest first, that add up to `needed_s` plus a resume for each run after the
        first, all finishing by `deadline_s`; as [(start, end), ...] in time order, or None.
        """
        last = int(np.searchsorted(self.start_s, deadline_s - EPS_S, side="left"))
        if last <= 0:
            return None
        ok = self._ok(job, last)
        usable = np.minimum(self.end_s[:last], deadline_s) - self.start_s[:last]
        edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
        runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))
        pieces: list[tuple[int, int]] = []
        got_s = 0.0
        for start, end in reversed(runs):
            want_s = needed_s + resume_s * len(pieces) - got_s  # this run, if not the last one taken
            room = usable[start:end]
            if float(room.sum()) >= want_s - EPS_S:  # only the latest slots of this run are needed
                filled = np.cumsum(room[::-1])
                count = int(np.searchsorted(filled, want_s - EPS_S)) + 1
                pieces.append((end - count, end))
                return sorted(pieces)
            pieces.append((start, end))
            got_s += float(room.sum())
        return None

    def earliest(self, job: JobView, needed_s: float) -> int | None:
        """The first slot an unbroken run of `needed_s` can start in, or None within the outlook."""
        ok = self._ok(job, self.count)
        blocked = np.concatenate(([0], np.cumsum(~ok)))
        for start in np.flatnonzero(ok).tolist():
            end = start + self.span(start, needed_s)
            if end > self.count:
                return None
            if blocked[end] == blocked[start]:
                return start
        return None

    def resumable_at(self, job: JobView, start: int) -> bool:
        """Whether a job paused now can count on a decision to resume it by slot `start`: the next price
        interval, or inside this one after a slot without room for it where room frees up (a run ends
        there, and the end of a run is a decision, at which a booking in this interval is due).
        """
        if start >= self.now_slots:
            return True
        ok = self._ok(job, start + 1)
        return bool(np.any(~ok[:-1] & ok[1:]))  # room frees up at or before its booking: a decision

    def room_from_now(self, job: JobView) -> int:
        """How many slots from now the job's GPUs and watts stay free: up to the first slot without room."""
        blocked = np.flatnonzero(~self._ok(job, self.count))
        return int(blocked[0]) if len(blocked) else self.count

    def shared_before(self, deadline_s: float) -> bool:
        """Whether any job holds GPUs in the slots that start before `deadline_s`."""
        last = int(np.searchsorted(self.start_s, deadline_s))
        return bool((self.free_gpus[:last] < self.total_gpus - EPS_S).any())

    def unbroken_fits_now(self, job: JobView, needed_s: float) -> bool:
        """Whether the job's GPUs and watts are free from now for an unbroken run of `needed_s`."""
        end = min(self.count, self.span(0, needed_s))
        return bool(self._ok(job, end).all())
