"""The port through which the scheduler runs jobs: one runner per job.

The scheduler can start, pause and cancel a runner and ask how it is doing. `actors/job_runner.py`
implements it with a JobRunner Ray actor per job; tests implement it in memory.

Invariants every implementation keeps:
  * `start(job, attempt)` is idempotent per attempt: a runner for this job and attempt that already
    exists is left alone (a scheduler that restarts re-issues what it wrote ahead, and nothing
    starts twice). A runner of an older attempt is cancelled first.
  * `reports()` covers every runner that exists, including ones that finished and were not yet
    `release`d; a job with no report has no runner (never started, or lost with its node), unless
    `all_answered` is False after it: a runner did not answer in time, so a job with no report may
    have a silent runner, and the scheduler does not hand its run to a second one.
  * `release(job_id)` forgets a finished runner; the scheduler calls it only after it has written
    the outcome to the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from factory.store import JobRow


class RunnerStatus(StrEnum):
    """What a runner says about its job."""

    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"        # stopped at a checkpoint, as asked
    SUCCEEDED = "succeeded"
    FAILED = "failed"        # after Ray Train's own retries (`max_retries`)
    CANCELLED = "cancelled"

    @property
    def is_over(self) -> bool:
        """Whether the runner's work has ended (it can be released)."""
        return self not in (RunnerStatus.STARTING, RunnerStatus.RUNNING)


@dataclass(frozen=True)
class RunnerReport:
    """One runner's state: its attempt, latest reported progress (step, metrics), error if failed."""

    job_id: str
    attempt: int
    status: RunnerStatus
    progress: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Runners(Protocol):
    """Starts, pauses and cancels the runners of jobs; see the module docstring for the invariants."""

    all_answered: bool  # whether the last `reports()` heard from every runner that may run a job

    def start(self, job: JobRow, attempt: int, placement: tuple[tuple[str, int], ...]) -> None:
        """Start (or resume from its latest checkpoint) `job` as attempt number `attempt`."""

    def pause(self, job_id: str) -> None:
        """Ask the job to stop at its next checkpoint (it reports PAUSED once it has)."""

    def cancel(self, job_id: str) -> None:
        """Stop the job now, wherever it is."""

    def reports(self) -> dict[str, RunnerReport]:
        """The state of every runner that exists, by job id."""

    def release(self, job_id: str) -> None:
        """Forget a runner whose work is over."""
