"""The job state machine: every state a factory job can be in, and the transitions between them.

Nomenclature:
  state       -- one of `JobState`; a job is in exactly one at a time, recorded in the state store.
  transition  -- a move from one state to another (or to the same WAITING state with a new reason),
                 written to the store *before* the scheduler acts on it, with its reason and time,
                 so `factory job ID` can show the job's timeline and a restarted scheduler knows
                 what it was doing.
  finished    -- the run is over (SUCCEEDED and the registration states after it, FAILED, CANCELLED): the
                 job holds no GPUs, no policy plans it, and it is accounted.
  terminal    -- FAILED, CANCELLED, REGISTERED: nothing leaves them.
  settled     -- nothing more happens to the job by itself (`settled`): terminal, REGISTRATION_FAILED (a
                 user may retry it), or SUCCEEDED for a job that registers no model.

Life of a job:
  QUEUED   -- accepted and persisted, not yet considered by a policy.
  WAITING  -- considered and held back; the reason says why (price, capacity, quota, power budget,
              priority), and changes of reason are transitions too (WAITING -> WAITING).
  RUNNING  -- its JobRunner holds its GPUs and Ray Train runs it.
  PAUSING  -- asked to stop at its next checkpoint (a price peak, a reclaim); still holds its GPUs.
  PAUSED   -- stopped with a checkpoint; resumes from it, under the same run name and storage path.
  SUCCEEDED, FAILED (with the error; after `max_retries`), CANCELLED (by a user, from any state before
  the run is over).
  A job with `register_as` goes on once its run is accounted (the lineage records its energy and cost):
  REGISTERING          -- its checkpoint is being registered as the next version of its model.
  REGISTERED           -- done; the reason names the version ("registered as NAME:VERSION").
  REGISTRATION_FAILED  -- refused, or the registry did not answer; the reason says why. A retry
                          (`factory register --job ID`) moves it to REGISTERING again, and never creates
                          two versions: the registry registers a job's checkpoint once.
"""

from __future__ import annotations

from enum import StrEnum

from factory.errors import FactoryError


class JobState(StrEnum):
    """A job's state; the value is what the store, the CLI and `--json` show."""

    QUEUED = "QUEUED"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REGISTERING = "REGISTERING"
    REGISTERED = "REGISTERED"
    REGISTRATION_FAILED = "REGISTRATION_FAILED"

    @property
    def is_terminal(self) -> bool:
        """Whether no transition leaves this state."""
        return self in TERMINAL

    @property
    def is_finished(self) -> bool:
        """Whether the job's run is over (it may still be registering its model)."""
        return self in FINISHED

    @property
    def holds_gpus(self) -> bool:
        """Whether a job in this state occupies its GPUs (its runner is alive and training)."""
        return self in (JobState.RUNNING, JobState.PAUSING)


TERMINAL = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.REGISTERED})
REGISTRATION = frozenset({JobState.REGISTERING, JobState.REGISTERED, JobState.REGISTRATION_FAILED})
FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, *REGISTRATION})

# Every transition the scheduler may write; anything else is a bug (or a stale decision after a race,
# e.g. a job that finished while a pause was being decided) and is refused by the store.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.WAITING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.WAITING: frozenset({JobState.WAITING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    # RUNNING -> RUNNING: a retry after a worker failure (a new attempt of the same job).
    JobState.RUNNING: frozenset({JobState.RUNNING, JobState.PAUSING, JobState.SUCCEEDED, JobState.FAILED,
                                 JobState.CANCELLED}),
    # PAUSING -> SUCCEEDED: the job finished before it reached the checkpoint it was asked to stop at.
    JobState.PAUSING: frozenset({JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.PAUSED: frozenset({JobState.WAITING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    # SUCCEEDED -> REGISTERING: only for a job with `register_as`, once its run is accounted.
    JobState.SUCCEEDED: frozenset({JobState.REGISTERING}),
    JobState.REGISTERING: frozenset({JobState.REGISTERED, JobState.REGISTRATION_FAILED}),
    JobState.REGISTRATION_FAILED: frozenset({JobState.REGISTERING}),  # a retry by a user
    JobState.REGISTERED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransitionError(FactoryError):
    """A transition the state machine does not allow (e.g. cancelling a job that already finished)."""


def predecessors(state: JobState) -> frozenset[JobState]:
    """The states from which a job may move to `state`."""
    return frozenset(origin for origin, targets in ALLOWED.items() if state in targets)


def settled(state: JobState, registers_model: bool) -> bool:
    """Whether nothing more happens to a job in `state` by itself (what `wait` waits for).

    `registers_model`: whether the job has `register_as` (its SUCCEEDED is followed by REGISTERING).
    """
    if state is JobState.SUCCEEDED:
        return not registers_model
    return state in TERMINAL or state is JobState.REGISTRATION_FAILED


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    """Raise `InvalidTransitionError` (one line naming the job and both states) unless allowed."""
    if target not in ALLOWED[current]:
        if current.is_finished:
            raise InvalidTransitionError(f"job {job_id} is already {current}; it cannot become {target}")
        raise InvalidTransitionError(f"job {job_id} cannot go from {current} to {target}")
