"""Why a job waits, in words: the reasons `price_aware` gives for each job it does not run now.

Every waiting job of a long queue gets one, so the texts that repeat (slot starts, latest safe starts) are
built once and remembered; a reason names the job's latest safe start wherever the reservation plan has one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

from factory.prices.series import utc_label
from factory.scheduling.model import Snapshot, Wait, WaitReason, grid_event_hold
from factory.scheduling.plan import JobPlan
from factory.scheduling.reservation import Reservation

CROWDED_OUT = (WaitReason.CAPACITY, "the GPUs are planned for more urgent jobs now")
UNBROKEN = (WaitReason.CAPACITY, "an unbroken run from now would take GPUs promised to admitted jobs; it "
            "starts once they leave it room")
NO_RESUME_ROOM = (WaitReason.CAPACITY, "run now, it could be paused for a job due before its "
                  "reservation, and its resume would find no room; it starts at its reservation")
RECLAIMED = (WaitReason.QUOTA, "its borrowed GPUs were reclaimed for a team within its guarantee")


def held_reason(plan: JobPlan, snapshot: Snapshot) -> tuple[WaitReason, str]:
    """Why a job planned for later is not running now: the price, or room taken by more urgent jobs."""
    assert snapshot.prices is not None
    reason = {None: WaitReason.PRICE, "power": WaitReason.POWER_BUDGET}.get(plan.crowded_now,
                                                                            WaitReason.CAPACITY)
    what = "power budget is" if reason is WaitReason.POWER_BUDGET else "GPUs are"
    crowded = f"the {what} planned for more urgent jobs now"
    grid_cap_w = snapshot.grid_cap_now_w()
    if reason is WaitReason.POWER_BUDGET and grid_cap_w is not None:
        crowded = grid_event_hold(grid_cap_w)
    if not len(plan.intervals):
        if reason is WaitReason.PRICE:
            return reason, "no room is planned for it before its deadline"
        return reason, crowded
    start_s = max(snapshot.now_s, float(snapshot.prices.starts_s[int(plan.intervals[0])])) + \
        (plan.later_start_s or 0.0)
    if reason is WaitReason.PRICE:
        return reason, f"cheap window at {_at(start_s)}"
    return reason, f"{crowded}; planned to run from {_at(start_s)}"


@functools.lru_cache(maxsize=65536)
def _at(time_s: float) -> str:
    """`utc_label`, remembered: a long queue's reasons repeat the same slot starts many times."""
    return utc_label(time_s)


def cannot_finish(deadline_s: float, earliest_finish_s: float, puts_at_risk: bool = False) -> str:
    """The admission message of a newcomer the reservation plan has no room for, or (`puts_at_risk`) one
    whose promise would put an earlier one at risk (`Reservation.puts_at_risk`: its earliest finish, in the
    room the promises leave, may come before its deadline, and is not promised)."""
    earliest = "not within the price outlook" if math.isinf(earliest_finish_s) else \
        utc_label(earliest_finish_s)
    if puts_at_risk:
        return (f"cannot be promised to finish before {utc_label(deadline_s)} without putting an earlier "
                f"promise at risk: earliest finish {earliest}, not promised")
    return f"cannot finish before {utc_label(deadline_s)}: earliest finish {earliest}"


def with_latest_starts(waits: Sequence[Wait], promise: Reservation,
                       deadlines: Mapping[str, float]) -> tuple[Wait, ...]:
    """Each wait with the job's latest safe start (and, for a price wait, its deadline) in its reason.

    (One loop, not a call per wait: a long queue's every job waits.)
    """
    latest_start_s, price, make = promise.latest_start_s.get, WaitReason.PRICE, Wait._make
    out = []
    for wait in waits:
        job_id, reason, detail, _ = wait
        latest_s = latest_start_s(job_id)
        if latest_s is None:
            out.append(wait)
        elif reason is price:
            out.append(make((job_id, price, f"{detail}; latest safe start {_at(latest_s)}; "
                                            f"deadline {_at(deadlines[job_id])}", latest_s)))
        else:
            out.append(make((job_id, reason, _with_start(detail, latest_s), latest_s)))
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def _with_start(detail: str, latest_s: float) -> str:
    """A capacity wait's reason with its latest safe start (remembered: a long queue repeats them).

    (`utc_label` itself, not `_at`: a latest start new here is new there too, and one cache miss is enough.)
    """
    return f"{detail}; latest safe start {utc_label(latest_s)}"
