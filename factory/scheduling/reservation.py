"""Latest safe starts: a reservation plan of future capacity that keeps every admitted job's deadline.

Nomenclature:
  slot              -- the plan's time step: each price interval cut into slots of at most `capacity.SLOT_S`
                       (an hour into quarters); the first slot starts now.
  reservation       -- an unbroken run of whole slots in which a job's GPUs and watts are set aside:
                       `[start of slot k, start of k + L)`. A job holds its GPUs for every slot of its
                       run, its last one too, even if it finishes inside it.
  latest safe start -- the start of a job's reservation in the plan below: if the job is running by then
                       it finishes before its deadline, whatever the other admitted jobs do inside theirs.
  due               -- a job whose reservation begins in the current price interval: it must run now (it
                       starts as soon as its GPUs are free: a release inside the interval is a decision).
  margin            -- `margin_fraction` x the job's run time: the plan tries to finish each job that much
                       before its deadline, so that capacity stays free for jobs that have not arrived yet
                       (arrivals are unknown). Only where other jobs hold GPUs before its deadline (alone,
                       a job leaves every other GPU free for newcomers), and dropped for a job that cannot
                       otherwise be placed.

The plan (`reserve`):
  1. running jobs hold their GPUs from now until they finish (kept running, they pay no resume); a
     preemptible one may be paused only if, taken out and booked again with its resume overhead, it
     still fits without being due now (`pausable`);
  2. admitted jobs, latest deadline first, each as late as it can finish before its deadline (backward
     earliest-deadline-first: the classic way to find the latest start of every job at once);
  3. if step 2 leaves an admitted job without room, the plan is redone without margins, with running
     jobs movable (paused and resumed in time), then up to four times with every job left short so far
     placed first (the backward order is exact on one GPU, a heuristic with several), and the plan
     leaving the fewest short is kept (a running job such a plan pauses now must be `pausable`: one that
     is not keeps running in the room the plan gave others, so it is held from now and the plan redone:
     `KEPT_ROUNDS` attempts with running jobs movable at most, then one with every running job held; they
     are asked latest deadline first, each one refused held from now before the next is asked, so that a
     plan that moved three jobs where one pause makes the room holds two, not all three);
     those still not placed are `short`, booked as soon as possible in what the others leave (the
     policy runs one that could still finish from now ahead of jobs not yet due; the others are late,
     and run before flexible jobs only). A short job that must start now to finish alone (`due_alone`)
     may take room from running jobs only if that keeps the other promises: held from now, it
     fits beside the running jobs that may not be paused and leaves no promise short that the plan did
     not (`rescuable`; else a job already late by the plan would make others late too: an 8-GPU job on
     one node of 8 pausing eight 1-GPU jobs for 16 hours);
  4. newcomers, smallest first (more of them fit), each as late as it fits in what the admitted jobs
     left, short ones included: a newcomer that finds no room before its deadline is infeasible, and told
     its earliest finish (as soon as possible in that room). A promise made before outranks a new one: the
     room a short job is booked in (its earliest unbroken run) is not promised to a newcomer, which would
     make the short job later still. (Within one plan: the next decision plans again from scratch.)
  5. promises the next plan keeps: the newcomers step 4 admitted are planned again as admitted jobs
     (latest deadline first, as the next decision will). With several GPUs that order is a heuristic, and
     it may find no room for a job that the order above did (a wide job, or a tie, blocks it). A newcomer
     whose admission leaves an admitted job short there that was not short before is not promised (one
     by one, smallest first; by bisection in a large batch): it is told that a promise to it would put
     another at risk, with its earliest finish in the room the promises leave, and runs as soon as it can
     (`Reservation.puts_at_risk`).

Invariants:
  * Pure numpy on the price outlook's grid (prices play no part); no I/O, deterministic.
  * Conservative: a job is reserved whole slots and unbroken, so a plan found here is one the
    cluster can carry out (on GPU and watt totals: placement of gangs on nodes is dispatch's concern).
  * Bounded work (a queue just under `EXACT_JOBS` took seconds): past `PLAN_BUDGET_PLACEMENTS` bookings
    placed in a decision, step 3 makes no further round and checks no more rescues (then none unchecked is
    rescuable), the next attempt holds every running job, step 5 plans no harder than the plan it checks.
  * Past `EXACT_JOBS` jobs to plan, the latest starts come from the fluid bound instead
    (`fluid_latest_starts`): vectorised, O(n log n), exact on one GPU, optimistic with gangs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import compress
from typing import NamedTuple

import numpy as np

from factory.scheduling.capacity import EPS_S, CapacityBook
from factory.scheduling.early_starts import Candidate, EarlyStarts
from factory.scheduling.model import JobView, PriceOutlook
from factory.scheduling.plan import MIN_SLICE_S

SHORT_FIRST_ROUNDS = 4  # rounds with the jobs left short so far placed first (each may leave others short)
KEPT_ROUNDS = 3  # attempts with running jobs movable (those a plan moved but may not pause then held)
EXACT_JOBS = 2000  # beyond this many jobs to plan, the fluid bound (a 100,000-job queue decides in < 1 s)
ONE_BY_ONE_NEWCOMERS = 8  # newcomers checked one by one against the next plan (more: by bisection)
RESCUE_CHECKS = 8  # short jobs due now checked one by one for `rescuable` (more: rescuable, unchecked)
PLAN_BUDGET_PLACEMENTS = 20_000  # bookings placed in one decision past which no optional plan is made
# How late (factory seconds) a decision may come after the latest start it asked for and still count as
# on time: the live scheduler wakes just after the time asked, plus a step's own run time.
SHORT_START_LAG_S = 60.0


class Booking(NamedTuple):
    """A job to plan: run time it needs, its deadline, how wide it is, whether it was admitted."""

    job: JobView
    needed_s: float
    deadline_s: float
    admitted: bool
    resume_s: float = math.inf  # what a resume costs it; finite: it may be booked in pieces if need be
    # Slack past `deadline_s` (the outlook's end, when its true deadline lies beyond: `needed_s` is then only
    # the part that must run inside it), beyond what leaving the rest out already took: it also lets a
    # resume slip (`Reservation.price_pausable`).
    beyond_outlook_s: float = 0.0


@dataclass
class Reservation:
    """The outcome of `reserve`: when each job must start at the latest, and who cannot make it.

    `latest_start_s`: every placed job (admitted, or a newcomer admitted by this plan). `due`: jobs that
    must run now (their reservation starts in the current interval, or an admitted job that found no room).
    `urgent` (a subset of `due`): jobs that must start now, preempting flexible jobs if need be (short,
    booked from now, or booked in room that running jobs hold now); the others are due at a release
    later in the interval, which is a decision. `short`: admitted jobs the plan found no room for (by the
    exact plan's order, a heuristic with several GPUs, one may still make it if it runs from now; by the
    fluid bound, late for sure). `rescuable` (a subset of `short`): those due now alone whose start now, in
    room the plan gave others, leaves no other promise short (see `_rescuable`); only they may preempt.
    `infeasible`: newcomers that cannot finish before their deadline, with their earliest finish (inf: not
    within the outlook). `unbroken_now`: queued non-preemptible jobs that
    may start now without breaking the plan (they run unbroken from now). `pausable`: running preemptible
    jobs that, paused now, could still be placed (resume overhead included) without being due now; their
    `latest_start_s` is then the latest safe resume. `price_pausable` (a subset of `pausable`): those with a
    resume after the current interval from which they would finish `price_pause_guard_s` before their
    deadline (an unbroken run in the room the plan leaves): only they may be paused for price. A pause for
    a due job is a promise kept; a pause for price is a bet, and one that leaves no room for the resume to
    slip (a later arrival or a gang that does not pack takes its room) turns a saving into a missed
    deadline. A short admitted job's `latest_start_s` is its deadline less its run time (the latest it could
    still finish from, alone). `puts_at_risk` (a subset of `infeasible`): newcomers that fit, but whose
    promise the next plan may not keep without leaving an earlier one short (step 5); their earliest finish
    may come before their deadline, and is not promised. `early_starts`: whether a job booked after this
    interval may start now, before its reservation (asked in planning order: `early_starts.EarlyStarts`).
    """

    latest_start_s: dict[str, float] = field(default_factory=dict)
    due: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)
    infeasible: dict[str, float] = field(default_factory=dict)
    unbroken_now: set[str] = field(default_factory=set)
    pausable: set[str] = field(default_factory=set)
    urgent: set[str] = field(default_factory=set)
    price_pausable: set[str] = field(default_factory=set)
    puts_at_risk: set[str] = field(default_factory=set)
    fluid: bool = False  # from `fluid_latest_starts`: an optimistic bound (its short jobs are late for sure)
    rescuable: set[str] = field(default_factory=set)
    early_starts: EarlyStarts | None = None  # None: every job may start early (the fluid bound)


def reserve(outlook: PriceOutlook, now_s: float, total_gpus: int, power_budget_w: float | np.ndarray | None,
            pinned: Sequence[tuple[JobView, float]], bookings: Sequence[Booking],
            margin_fraction: float, unbroken: Sequence[tuple[JobView, float]] = (),
            running: Sequence[Booking] = (), price_pause_guard_s: float = 0.0) -> Reservation:
    """The reservation plan of the module docstring.

    `pinned`: (running job, remaining s), held from now: non-preemptible ones, and preemptible ones reported
    infeasible. `running`: running preemptible jobs, held from now too (kept running, they pay no resume),
    each with `needed_s` = remaining + its resume overhead, checked for `Reservation.pausable`.
    `unbroken`: (queued non-preemptible job, run time s) to check for `Reservation.unbroken_now`, booked or
    not (a job reported infeasible is not). `price_pause_guard_s`: how late a job paused for price must still
    be able to resume (`Reservation.price_pausable`).
    """
    held = [*pinned, *((b.job, b.job.remaining_s) for b in running)]
    if len(bookings) > EXACT_JOBS:
        result = fluid_latest_starts(outlook, now_s, total_gpus, power_budget_w, held, bookings,
                                     margin_fraction)
        result.unbroken_now = {job.job_id for job, _ in unbroken}  # not checked at this scale
        interval_end_s = float(outlook.starts_s[0]) + float(outlook.interval_s)
        result.pausable = {b.job.job_id for b in running if b.deadline_s - b.needed_s >= interval_end_s}
        result.price_pausable = {
            b.job.job_id for b in running
            if b.deadline_s - b.needed_s - _guard_s(b, price_pause_guard_s) >= interval_end_s}
        return result
    admitted = sorted((b for b in bookings if b.admitted), key=_latest_first)
    # Newcomers take what the admitted jobs leave, smallest first: when not all of them fit, more of them do.
    newcomers = sorted((b for b in bookings if not b.admitted),
                       key=lambda b: (b.job.num_gpus * b.needed_s, -b.deadline_s, b.job.job_id))
    kept: frozenset[str] = frozenset()
    spent: Counter[str] = Counter()
    for attempt in range(KEPT_ROUNDS + 1):
        plan = _Planning(outlook, now_s, total_gpus, power_budget_w, pinned, running, kept, spent)
        movable = attempt < KEPT_ROUNDS and not plan.over_budget
        best = _best_round(plan, admitted, newcomers, margin_fraction, movable=movable)
        _keep_promises_the_next_plan_keeps(plan, best, admitted, newcomers, margin_fraction, movable=movable)
        result = _outcome(best, bookings, admitted, newcomers, unbroken, running, price_pause_guard_s)
        # A plan with running jobs movable counts on pausing now those it booked later (or left out): their
        # room went to others (a newcomer admitted, a job due now). One that may not be paused after all (it
        # could not be resumed in time: `pausable`) keeps running in that room, and the promises made in it
        # would be broken: it is held from now and the plan made again (after `KEPT_ROUNDS` attempts with
        # running jobs movable, one with every running job held).
        refused = best.moved - result.pausable
        if best.running_held or not refused:
            result.rescuable = _rescuable(plan, best, admitted, newcomers, result.pausable, margin_fraction)
            return result
        kept = kept | refused
    raise AssertionError("unreachable: the last attempt holds every running job")


def _best_round(plan: _Planning, admitted: Sequence[Booking], newcomers: Sequence[Booking],
                margin_fraction: float, movable: bool, max_extra: int | None = None) -> _Round:
    """The round leaving the fewest admitted jobs short, then the fewest newcomers out (module docstring's
    step 3); running jobs movable only if `movable`; at most `max_extra` further rounds (None: in budget)."""
    best = plan.round(admitted, newcomers, margin_fraction, running_held=True)
    made = 0  # further rounds
    if best.short or best.turned_away:
        # Some job found no room. The margins may have taken it (plan again without them); a running job
        # kept running may hold it (plan again with running jobs movable: paused and resumed in time); or
        # the places the backward order gave the others were its only ones (plan again with it first, and
        # with those that this leaves short first too).
        # The plan that leaves the fewest admitted jobs short, then the fewest newcomers out, is kept.
        first = set(best.short)
        rounds = [(True, False), (False, False)] + [(False, True)] * SHORT_FIRST_ROUNDS if movable else \
            [(True, False)] + [(True, True)] * SHORT_FIRST_ROUNDS
        for running_held, short_first in rounds:
            if (plan.over_budget if max_extra is None else made >= max_extra):
                break
            made += 1
            again = plan.round(admitted, newcomers, 0.0, running_held, first=first if short_first else set())
            if (len(again.short), len(again.turned_away)) < (len(best.short), len(best.turned_away)):
                best = again
            if not best.short and not best.turned_away:
                break
            first |= again.short  # those the order left short go first next time
    if best.short:  # likely late: as soon as possible in what the other admitted jobs leave, before newcomers
        best = plan.round(admitted, newcomers, 0.0, best.running_held, last=best.short,
                          first=best.first - best.short)
    best.extra_rounds = made
    return best


def _rescuable(plan: _Planning, best: _Round, admitted: Sequence[Booking], newcomers: Sequence[Booking],
               pausable: set[str], margin_fraction: float) -> set[str]:
    """The short jobs of `best` due now alone (`due_alone` of their latest start alone) that may start now
    in room the plan gave others (step 3 of the module docstring).

    Each is held from now (as a pinned job) and the other promises planned again (the admitted jobs and the
    newcomers `best` admits), running jobs movable as a start now would move them, but for those that may
    not be paused (not `pausable`: dispatch keeps them running): it is rescuable if it fits beside those now
    and that plan leaves no job short that `best` did not. Most urgent first, each rescue held for the next
    (so that starting all of them still holds); past `RESCUE_CHECKS` of them in one decision, the rest are
    rescuable unchecked (a plan per job is the cost), unless the budget stopped the checks: then none is.
    """
    start_s = float(plan.outlook.starts_s[0])
    end_s = start_s + float(plan.outlook.interval_s)
    candidates = sorted((b for b in admitted if b.job.job_id in best.short
                         and due_alone(b.deadline_s - b.needed_s, now_s=plan.now_s, interval_start_s=start_s,
                                       interval_end_s=end_s)),
                        key=lambda b: (b.deadline_s - b.needed_s, b.job.job_id))
    if not candidates:
        return set()
    promised = _as_promised(admitted, [b for b in newcomers if b.job.job_id not in best.turned_away])
    kept = plan.kept | {b.job.job_id for b in plan.running if b.job.job_id not in pausable}
    held_gpus = sum(job.num_gpus for job, _ in plan.pinned) + \
        sum(b.job.num_gpus for b in plan.running if b.job.job_id in kept)
    rescued: set[str] = set()
    pinned = list(plan.pinned)
    for booking in candidates[:RESCUE_CHECKS]:
        if plan.over_budget:
            return rescued  # none unchecked is rescuable (they run in the room the others leave)
        if held_gpus + booking.job.num_gpus > plan.total_gpus:
            continue  # it could not start now: GPUs that stay busy hold its room
        held_from_now = replace(plan, pinned=[*pinned, (booking.job, booking.needed_s)], kept=frozenset(kept))
        others = [b for b in promised if b.job.job_id != booking.job.job_id and b.job.job_id not in rescued]
        if not _best_round(held_from_now, others, [], margin_fraction, movable=True).short - best.short:
            rescued.add(booking.job.job_id)
            pinned.append((booking.job, booking.needed_s))
            held_gpus += booking.job.num_gpus
    return rescued | {b.job.job_id for b in candidates[RESCUE_CHECKS:]}


def _keep_promises_the_next_plan_keeps(plan: _Planning, best: _Round, admitted: Sequence[Booking],
                                       newcomers: Sequence[Booking], margin_fraction: float,
                                       movable: bool) -> None:
    """Turn away the newcomers `best` admitted whose promise the next plan may not keep (step 5 of the
    module docstring): their bookings are given back and they join `best.turned_away` and `best.puts_at_risk`.

    The next decision plans every admitted job again, latest deadline first; with several GPUs that order
    may find no room where newcomers placed after the admitted jobs found some, and the job it leaves short
    is an earlier promise broken for a new one. So the accepted newcomers are planned again as admitted, at
    this instant (arrivals and releases to come are unknown), and kept if that leaves no job short that
    `best` did not. (By name: which jobs a plan leaves short depends on the order it tried, so this also
    turns away a newcomer that only swaps one short job for another. Counting them instead, no more short
    than the admitted jobs planned alone, was measured: on the tuning half of bench/scheduler_matrix.py it
    broke more promises, 13 -> 17.) One extra plan when they all pass; otherwise one per newcomer, smallest
    first, or for a batch of more than `ONE_BY_ONE_NEWCOMERS`, the longest passing run of them, smallest
    first, by bisection (a plan per newcomer would make a large batch's decision take minutes).
    """
    accepted = [b for b in newcomers if b.job.job_id not in best.turned_away]
    if not accepted:
        return
    short_before = set(best.short)

    def keeps_promises(promised: Sequence[Booking]) -> bool:
        # Past the budget, no harder than `best` was planned (its further rounds): like compared with like,
        # else every newcomer could seem to put a promise at risk.
        max_extra = best.extra_rounds if plan.over_budget else None
        return not _best_round(plan, _as_promised(admitted, promised), [], margin_fraction, movable,
                               max_extra).short - short_before

    if keeps_promises(accepted):
        return
    if len(accepted) <= ONE_BY_ONE_NEWCOMERS:
        promised: list[Booking] = []
        for booking in accepted:
            if keeps_promises([*promised, booking]):
                promised.append(booking)
        kept = {b.job.job_id for b in promised}
    else:  # bisect for a passing prefix: all of them fail, the first `passing` pass (0: none is kept)
        passing, failing = 0, len(accepted)
        while failing - passing > 1:
            middle = (passing + failing) // 2
            if keeps_promises(accepted[:middle]):
                passing = middle
            else:
                failing = middle
        kept = {b.job.job_id for b in accepted[:passing]}
    for booking in accepted:
        job_id = booking.job.job_id
        if job_id not in kept:
            best.book.book(booking.job, best.placed.pop(job_id), booking.needed_s, sign=-1.0)
            best.turned_away.add(job_id)
            best.puts_at_risk.add(job_id)


def _outcome(best: _Round, bookings: Sequence[Booking], admitted: Sequence[Booking],
             newcomers: Sequence[Booking], unbroken: Sequence[tuple[JobView, float]],
             running: Sequence[Booking], price_pause_guard_s: float) -> Reservation:
    """What the chosen round promises: latest starts, due and short jobs, infeasible newcomers, and which
    queued jobs may start unbroken and which running ones may be paused (answered in `best.book`)."""
    book, placed = best.book, best.placed
    result = Reservation(short=set(best.short), puts_at_risk=set(best.puts_at_risk))
    for booking in newcomers:
        if booking.job.job_id in best.turned_away:
            result.infeasible[booking.job.job_id] = book.earliest_finish_s(booking.job, booking.needed_s)
    running_ids = {b.job.job_id for b in running}
    for job_id, start in placed.items():
        if job_id in running_ids:
            continue  # a running job's start is when it must resume, if it is paused: see below
        result.latest_start_s[job_id] = float(book.start_s[start])
        if start < book.now_slots and job_id not in best.short:
            result.due.add(job_id)
            if start == 0 or not best.running_held:
                result.urgent.add(job_id)
    result.due -= best.short
    # A job left short has no safe start in the plan (its booking, as soon as possible in what the others
    # leave, may lie past its deadline): it is told the latest start at which it could still finish alone.
    for booking in admitted:
        if booking.job.job_id in best.short:
            result.latest_start_s[booking.job.job_id] = booking.deadline_s - booking.needed_s
    # May a queued job that will run unbroken once started (so will a late one: it is never paused) start
    # now without breaking the plan?
    late = [(b.job, b.needed_s) for b in bookings if b.job.job_id in best.short or
            b.job.job_id in best.turned_away]
    booked_s = {b.job.job_id: b.needed_s for b in bookings}  # what a placement holds (`_place`, `round`)
    # One after the other, each one allowed booked from now: so that starting all of them still holds. Each
    # job once (one that will not be paused may be late too): a second pass would give back its booking twice.
    asked: set[str] = set()
    for job, needed_s in [*unbroken, *late]:
        if job.job_id in asked:
            continue
        asked.add(job.job_id)
        start = placed.get(job.job_id)
        if start is not None:
            book.book(job, start, booked_s.get(job.job_id, needed_s), sign=-1.0)
        if book.unbroken_fits_now(job, needed_s):
            result.unbroken_now.add(job.job_id)
            book.take(job, 0, needed_s)
        elif start is not None:
            book.book(job, start, booked_s.get(job.job_id, needed_s))
    # May a running job be paused now and still finish in time once resumed? Asked one job after the other,
    # latest deadline first, each answer kept in the book: so that pausing all of them at once still holds.
    # One refused keeps running: held from now for those asked after (else, of three moved where one pause
    # makes room, each finds room to restart in the others' GPUs and all three are held: rand24's pai-0860).
    for booking in sorted(running, key=_latest_first):
        job = booking.job
        if best.running_held:
            book.take(job, 0, job.remaining_s, sign=-1.0)
            start = _place(book, booking, {}, 0.0)
        else:
            start = placed.get(job.job_id)
        pausable = False
        pieces = book.pieces.get(job.job_id)
        if start is not None:  # asked without its own booking in the way
            book.book(job, start, booking.needed_s, sign=-1.0)
            pausable = book.resumable_at(job, start) and job.job_id not in best.short
            # Paused for price, it must have a resume after this interval that may slip by the guard
            # (see `Reservation.price_pausable`).
            if pausable:
                guarded = book.latest(job, booking.needed_s,
                                      booking.deadline_s - _guard_s(booking, price_pause_guard_s))
                if guarded is not None and guarded >= book.now_slots:
                    result.price_pausable.add(job.job_id)
            if pausable:
                if pieces is not None:  # (giving a booking back forgets its pieces)
                    book.pieces[job.job_id] = pieces
                book.book(job, start, booking.needed_s)
        if not pausable and (best.running_held or start is not None):
            book.take(job, 0, job.remaining_s)  # kept running after all
        if pausable:
            result.pausable.add(job.job_id)
            result.latest_start_s[job.job_id] = float(book.start_s[start])
    result.early_starts = EarlyStarts(book, {
        b.job.job_id: Candidate(b.job, placed[b.job.job_id], b.needed_s, b.deadline_s, b.resume_s)
        for b in bookings if b.job.preemptible and 0.0 < b.resume_s < math.inf
        and b.job.remaining_s >= b.resume_s  # (one with less left is never paused: see `unbroken_now`)
        and placed.get(b.job.job_id, -1) >= book.now_slots
        and b.job.job_id not in best.short and b.job.job_id not in result.unbroken_now})
    return result


def _guard_s(booking: Booking, price_pause_guard_s: float) -> float:
    """The guard a pause for price must leave inside the outlook: what the slack past it does not give."""
    return max(0.0, price_pause_guard_s - booking.beyond_outlook_s)


@dataclass
class _Round:
    """One attempt at the plan: the capacity left, where each booking went, and who found no room."""

    book: CapacityBook
    placed: dict[str, int]
    short: set[str]          # admitted jobs without room
    turned_away: set[str]    # newcomers without room
    running_held: bool
    first: set[str]          # the bookings placed before the others
    # Running jobs this round pauses now: movable ones booked after slot 0, or not booked at all (one booked
    # from slot 0 runs on now; a later gap in its pieces is a later decision's pause).
    moved: set[str] = field(default_factory=set)
    puts_at_risk: set[str] = field(default_factory=set)  # newcomers turned away to keep earlier promises
    extra_rounds: int = 0  # further rounds `_best_round` made to find it


@dataclass
class _Planning:
    """What every round of `reserve` starts from."""

    outlook: PriceOutlook
    now_s: float
    total_gpus: int
    power_budget_w: float | np.ndarray | None
    pinned: Sequence[tuple[JobView, float]]
    running: Sequence[Booking]
    kept: frozenset[str] = frozenset()  # running jobs held from now even when running jobs are movable
    # Bookings placed by this decision's rounds ("placements"), one counter shared by the copies of `replace`.
    spent: Counter[str] = field(default_factory=Counter)

    @property
    def over_budget(self) -> bool:
        """Whether this decision's plans have placed `PLAN_BUDGET_PLACEMENTS` bookings already."""
        return self.spent["placements"] >= PLAN_BUDGET_PLACEMENTS

    def round(self, admitted: Sequence[Booking], newcomers: Sequence[Booking], margin_fraction: float,
              running_held: bool, last: set[str] = frozenset(), first: set[str] = frozenset()) -> _Round:
        """Admitted bookings as late as they fit (`first` before the others), then `last` (admitted jobs
        already known to be short) as soon as possible in what is left, then newcomers in what they leave.

        (Rounds are compared on the newcomers they turn away before those left short are booked. Booking
        them in every round, so that the comparison sees what the chosen round will, was measured: on the
        tuning half of bench/scheduler_matrix.py it broke more promises, 14 -> 21, for fewer misses.)

        `running_held`: running preemptible jobs hold their GPUs from now (kept running), else they are
        booked like the admitted ones (paused now and resumed in time, their resume overhead included),
        but for those that a pause would make late: they are held from now either way.
        """
        book = CapacityBook(self.outlook, self.now_s, self.total_gpus, self.power_budget_w)
        for job, remaining_s in self.pinned:
            book.take(job, 0, remaining_s)
        order = list(admitted)
        # Running jobs held from now: all of them, or (movable) those that a pause would make late anyway.
        held = self.running if running_held else \
            [b for b in self.running
             if self.now_s + b.needed_s > b.deadline_s + EPS_S or b.job.job_id in self.kept]
        for booking in held:
            book.take(booking.job, 0, booking.job.remaining_s)
        held_ids = {b.job.job_id for b in held}
        if not running_held:
            order = sorted([*order, *(b for b in self.running if b.job.job_id not in held_ids)],
                           key=_latest_first)
        if first:  # these first (as late as they fit), then the others
            order = [b for b in order if b.job.job_id in first] + [b for b in order if b.job.job_id not in first]
        placed: dict[str, int] = {}
        self.spent["placements"] += len(order) + len(newcomers)
        short = set(last)  # still short (they cannot finish in time), but booked where they will run
        for booking in order:
            if booking.job.job_id not in last and _place(book, booking, placed, margin_fraction) is None:
                short.add(booking.job.job_id)
        for booking in order:
            if booking.job.job_id in last:
                start = book.earliest(booking.job, booking.needed_s)
                if start is not None:
                    book.take(booking.job, start, booking.needed_s)
                    placed[booking.job.job_id] = start
        turned_away = {b.job.job_id for b in newcomers if _place(book, b, placed, margin_fraction) is None}
        moved = {b.job.job_id for b in self.running
                 if b.job.job_id not in held_ids and placed.get(b.job.job_id) != 0}
        return _Round(book, placed, short, turned_away, running_held, set(first), moved)


def due_alone(latest_alone_s: float, *, now_s: float, interval_start_s: float,
              interval_end_s: float) -> bool:
    """Whether a short job (one the plan found no room for) must start now to finish alone: the one rule for
    which short jobs are checked for `Reservation.rescuable` and which of those the policy makes due.

    Its latest start alone is near now: the decision asked for at that start may come a little after it
    (the live scheduler wakes just after the time asked), so one that passed at most `SHORT_START_LAG_S`
    ago is due, not late; or it lies in the interval's last slice, where no decision can be asked for.
    """
    if latest_alone_s < max(interval_start_s, now_s - SHORT_START_LAG_S) - EPS_S:
        return False  # late: it waits as late jobs do
    in_last_slice = interval_end_s - MIN_SLICE_S <= latest_alone_s < interval_end_s
    return latest_alone_s < now_s + MIN_SLICE_S or in_last_slice


def _as_promised(admitted: Sequence[Booking], accepted: Sequence[Booking]) -> list[Booking]:
    """The admitted jobs and the newcomers `accepted` now, as the next decision plans them: all admitted,
    latest deadline first."""
    return sorted([*admitted, *accepted], key=_latest_first)


def _latest_first(booking: Booking) -> tuple[float, float, str]:
    """Latest deadline first; on a tie the smaller job (GPU-seconds) first, so that more jobs find room."""
    return (-booking.deadline_s, booking.job.num_gpus * booking.needed_s, booking.job.job_id)


def _place(book: CapacityBook, booking: Booking, placed: dict[str, int], margin_fraction: float) -> int | None:
    """Reserve the booking as late as it can finish, `margin` early if possible; its slot or None."""
    job, needed_s = booking.job, booking.needed_s
    start = None
    if margin_fraction > 0 and book.shared_before(booking.deadline_s):  # alone, it needs no margin
        start = book.latest(job, needed_s, booking.deadline_s - margin_fraction * needed_s)
    if start is None:
        start = book.latest(job, needed_s, booking.deadline_s)
    if start is not None:
        book.take(job, start, needed_s)
        placed[job.job_id] = start
        return start
    if job.preemptible and math.isfinite(booking.resume_s):
        # No unbroken run fits: a preemptible job may use the holes the others leave, paying a resume for
        # each one after the first (they would otherwise leave it short, where a plain cluster finishes it).
        pieces = book.latest_pieces(job, needed_s, booking.deadline_s, booking.resume_s)
        if pieces is not None:
            for first, end in pieces:
                book.take_slots(job, first, end)
            book.pieces[job.job_id] = pieces
            placed[job.job_id] = pieces[0][0]
            return pieces[0][0]
    return None


def fluid_latest_starts(outlook: PriceOutlook, now_s: float, total_gpus: int,
                        power_budget_w: float | np.ndarray | None,
                        pinned: Sequence[tuple[JobView, float]], bookings: Sequence[Booking],
                        margin_fraction: float) -> Reservation:
    """Latest starts from the fluid bound, for queues too long to place job by job.

    Jobs in earliest-deadline order; each job's work takes `block` seconds of the whole cluster (GPU-seconds
    over the GPUs a job of its width can use at once, or watt-seconds over the budget, whichever is longer);
    backwards from the last deadline, job i's block must start by `S_i = min(d_i, S_{i+1}) - block_i`. A job's
    latest start is `min(d_i - run time, S_i)`. Newcomers with a latest start before now are infeasible.
    """
    result = Reservation(fluid=True)
    if not bookings:
        return result
    gpus = float(total_gpus - sum(job.num_gpus for job, _ in pinned))
    # A budget per interval (grid events) counts at its mean over the outlook: a short event does not
    # stand for the whole horizon (the exact plan and the dispatch keep to each interval's).
    mean_w = None if power_budget_w is None else float(np.mean(power_budget_w))
    budget_w = math.inf if mean_w is None else mean_w - sum(job.draw_w for job, _ in pinned)
    width = np.array([b.job.num_gpus for b in bookings], dtype=float)
    needed = np.array([b.needed_s for b in bookings], dtype=float)
    deadline = np.array([b.deadline_s for b in bookings], dtype=float)
    draw = width * np.array([b.job.power_w for b in bookings], dtype=float)
    deadline = np.where(deadline - margin_fraction * needed >= now_s + needed,
                        deadline - margin_fraction * needed, deadline)
    usable = np.maximum(1.0, np.floor(gpus / np.maximum(width, 1.0)) * width)
    block = width * needed / usable
    if math.isfinite(budget_w):
        block = np.maximum(block, draw * needed / max(budget_w, 1.0))
    order = np.argsort(deadline, kind="stable")
    d, b = deadline[order], block[order]
    after = np.concatenate((np.cumsum(b[::-1])[::-1], [0.0]))  # work of jobs i.. (suffix sums)
    block_start = np.minimum.accumulate((d + after[1:])[::-1])[::-1] - after[:-1]
    latest = np.empty(len(bookings))
    latest[order] = np.minimum(d - needed[order], block_start)
    interval_end_s = float(outlook.starts_s[0]) + float(outlook.interval_s)
    # (Masks and `compress` rather than a loop with a branch per job: this runs for every job of the queue.)
    ids = [b.job.job_id for b in bookings]
    admitted = np.fromiter((b.admitted for b in bookings), dtype=bool, count=len(bookings))
    late = latest < now_s - EPS_S
    infeasible = late & ~admitted
    placed = ~infeasible
    result.infeasible = dict(zip(compress(ids, infeasible.tolist()),
                                 (now_s + needed[infeasible] + (now_s - latest[infeasible])).tolist(),
                                 strict=True))
    result.latest_start_s = dict(zip(compress(ids, placed.tolist()),
                                     np.maximum(now_s, latest[placed]).tolist(), strict=True))
    due = placed & (latest < interval_end_s)
    result.due = set(compress(ids, due.tolist()))
    result.urgent = set(result.due)  # the fluid bound knows no releases: due means now
    result.short = set(compress(ids, (due & late).tolist()))
    return result
