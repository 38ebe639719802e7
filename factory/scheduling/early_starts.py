"""May a job start before its reservation? Only with room to resume if a due job pauses it.

The price plan may start a flexible job in a cheap hour now, before the reservation the plan booked it
(`reservation.reserve`). Until that reservation its GPUs are the plan's for other jobs: at the first slot
they are promised to another, a job due then pauses it, and it resumes with its overhead, which its
booking does not hold. Where a resume costs, the job may start now only if it fits unbroken from now, or
what it has left at that pause, its resume added, still fits before its deadline, resumed at a decision.

Invariants:
  * Asked for the jobs the price plan runs now, in planning order (the order dispatch starts them in),
    each answer kept in the book: so that starting all of those allowed still holds.
  * A job not asked keeps its reservation in the book; one allowed holds its early run and its resume
    instead; one refused keeps its reservation and is listed in `refused` (no room to resume) or
    `crowded` (no room now: the GPUs are the plan's for others now), or in neither (with less left than
    a resume when paused, it would not be paused: an unbroken run from now takes room promised to
    others).
"""

from __future__ import annotations

from typing import NamedTuple

from factory.scheduling.capacity import CapacityBook
from factory.scheduling.model import JobView


class Candidate(NamedTuple):
    """A preemptible job booked after the current price interval, with a resume that costs."""

    job: JobView
    start: int  # the slot its reservation starts in (its pieces', if booked in pieces)
    needed_s: float
    deadline_s: float
    resume_s: float


class EarlyStarts:
    """The early-start check of the module docstring, on the book of the plan the reservation kept."""

    def __init__(self, book: CapacityBook, candidates: dict[str, Candidate]) -> None:
        self._book = book
        self._candidates = candidates
        self.refused: set[str] = set()  # it would find no room to resume
        self.crowded: set[str] = set()  # no room now at all: the GPUs are the plan's for others now

    def asks(self, job_id: str) -> bool:
        """Whether starting the job now needs the check (else it may start now as far as resumes go)."""
        return job_id in self._candidates

    def may_start(self, job_id: str) -> bool:
        """Whether the job may start now; if so, its early run and resume replace its reservation."""
        candidate = self._candidates.pop(job_id, None)
        if candidate is None:
            return True
        book, job = self._book, candidate.job
        pieces = book.pieces.get(job_id)
        book.book(job, candidate.start, candidate.needed_s, sign=-1.0)  # asked without it in the way
        if book.unbroken_fits_now(job, candidate.needed_s):
            book.take(job, 0, candidate.needed_s)
            return True
        paused_at = book.room_from_now(job)
        ran_s = float(book.start_s[paused_at] - book.start_s[0]) if paused_at < book.count else 0.0
        # With less left than a resume by then, it is never paused (`PriceAwarePolicy._runs_unbroken`): it
        # would run on into the room promised to another, so only an unbroken run from now would do.
        pausable_then = job.remaining_s - ran_s >= candidate.resume_s
        left_s = candidate.needed_s - ran_s + candidate.resume_s
        resume = book.latest(job, left_s, candidate.deadline_s) if pausable_then else None
        if paused_at > 0 and resume is not None and resume >= paused_at and book.resumable_at(job, resume):
            book.take_slots(job, 0, paused_at)
            book.take(job, resume, left_s)
            return True
        if pieces is not None:
            book.pieces[job_id] = pieces
        book.book(job, candidate.start, candidate.needed_s)
        if paused_at == 0:
            self.crowded.add(job_id)
        elif pausable_then:
            self.refused.add(job_id)
        return False
