"""Registering a succeeded job's model: SUCCEEDED -> REGISTERING -> REGISTERED or REGISTRATION_FAILED.

The state manager behind the SchedulerActor's registration thread, without Ray: the actor passes the
store, its clock, and `register(job_id)` (a call to the RegistryActor's `register_job`), so the whole
state machine is tested on a real SQLite store with a fake registry.

Invariants:
  * A job is queued only once it is REGISTERING (written first): a restarted scheduler finds every
    queued job again in the store (`resume`), and a job queued twice is registered once (the second
    entry finds it no longer REGISTERING).
  * The registry registers a job's checkpoint once (it looks the job up before committing), so neither
    a restart nor a user's retry makes a second version.
  * `register` raising `ClusterError` (the registry restarting or busy) is tried again, `attempts` times
    in all, `retry_s` real seconds apart; a `FactoryError` is a refusal, recorded at once. Any other
    error (a busy store, a bad answer) is tried again too, within the same number of attempts.
  * The outcome is the job's state and reason ("registered as NAME:VERSION", or why not); it is also kept
    in the accounting (`model` or `registration_error`, an earlier attempt's dropped), where `--json`
    readers found it before registration had states.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from factory.errors import ClusterError, FactoryError, summary_line
from factory.jobs.states import JobState
from factory.jobs.stored import stored_spec
from factory.registry.refs import version_ref
from factory.store import JobRow, StateConflictError, StateStore

RETRY_S = 10.0  # real seconds before a registration the registry did not answer is tried again
ATTEMPTS = 4  # then the job is REGISTRATION_FAILED, with why

Register = Callable[[str], dict[str, Any] | None]  # job id -> the version row (name, version), None if none


class Registrations:
    """Moves jobs with `register_as` from SUCCEEDED to REGISTERED (or REGISTRATION_FAILED), one at a time."""

    def __init__(self, store: StateStore, now_s: Callable[[], float], register: Register, *,
                 on_error: Callable[[BaseException], None] = lambda exc: None,
                 retry_s: float = RETRY_S, attempts: int = ATTEMPTS) -> None:
        self.store = store
        self.now_s = now_s
        self.register = register
        self.on_error = on_error
        self.retry_s = retry_s
        self.attempts = attempts
        self.stopping = threading.Event()
        self._queue: queue.Queue[str] = queue.Queue()
        self._failures: dict[str, int] = {}  # registry calls that did not answer, per queued job

    # -- entering REGISTERING --------------------------------------------------------------------------

    def resume(self) -> None:
        """After a (re)start: queue the REGISTERING jobs, and start the accounted SUCCEEDED ones."""
        for job in self.store.list_jobs([JobState.SUCCEEDED.value, JobState.REGISTERING.value]):
            if job.state == JobState.REGISTERING.value:
                self._queue.put(job.job_id)
            elif job.accounting:
                self.after_accounting(job)

    def after_accounting(self, job: JobRow) -> None:
        """A finished job was just accounted: if it succeeded with `register_as`, it starts registering.

        After accounting, not before: the model's lineage records the run's energy and cost. The caller
        writes the accounting in the same transaction, so an accounted job never stays SUCCEEDED. A job
        another call moved on already (accounted twice in a race) is left as it is.
        """
        model_name = stored_spec(job).register_as
        if job.state == JobState.SUCCEEDED.value and model_name:
            try:
                self._start(job.job_id, model_name, expected_from=JobState.SUCCEEDED)
            except StateConflictError:
                pass

    def retry(self, job: JobRow, retried_by: str) -> JobRow | None:
        """A user's retry of a failed registration: the job, REGISTERING again (None: nothing to redo).

        Raises `FactoryError` (one line) for a job that registers no model, or whose run is not over or
        did not succeed. A job already REGISTERING or REGISTERED is left as it is (None). An accounted
        SUCCEEDED job is started too (one the scheduler did not move on: it should not happen).
        """
        model_name = stored_spec(job).register_as
        if not model_name:
            raise FactoryError(f"job {job.job_id} has no register_as: it registers no model")
        if job.state in (JobState.REGISTERING.value, JobState.REGISTERED.value):
            return None
        state = JobState(job.state)
        if not (state is JobState.REGISTRATION_FAILED or (state is JobState.SUCCEEDED and job.accounting)):
            raise FactoryError(f"job {job.job_id} is {job.state}: only a job whose registration failed "
                               f"({JobState.REGISTRATION_FAILED.value}) is registered again")
        return self._start(job.job_id, model_name, expected_from=state, retried_by=retried_by)

    def _start(self, job_id: str, model_name: str, expected_from: JobState, retried_by: str = "") -> JobRow:
        reason = f"registering as {model_name}" + (f" (retried by {retried_by})" if retried_by else "")
        self.store.transition_job(job_id, JobState.REGISTERING.value, reason, self.now_s(),
                                  expected_from=[expected_from.value])
        self._queue.put(job_id)
        job = self.store.get_job(job_id)
        assert job is not None
        return job

    # -- the registration thread ---------------------------------------------------------------------

    def run(self) -> None:
        """The thread's loop: register queued jobs until `stopping` is set."""
        while not self.stopping.is_set():
            self.register_next(wait_s=1.0)

    def register_next(self, wait_s: float = 0.0) -> str | None:
        """Register the next queued job (waiting up to `wait_s` for one); return its id, None if none.

        Never raises: a registry that does not answer, or an unexpected error (a busy store), is reported
        to `on_error` and the job queued again after `retry_s`, until `attempts` are spent.
        """
        try:
            job_id = self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        try:
            self._register(job_id)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad job or a busy store
            self.on_error(exc)
            if self._failed_once_more(job_id):
                self._again_later(job_id)
            else:
                self._give_up(job_id, exc)
        return job_id

    def _failed_once_more(self, job_id: str) -> bool:
        """Count a failed attempt; whether attempts are left."""
        failures = self._failures[job_id] = self._failures.get(job_id, 0) + 1
        return failures < self.attempts

    def _give_up(self, job_id: str, exc: BaseException) -> None:
        """Out of attempts: REGISTRATION_FAILED with the last error, if the store takes it.

        A user may then retry it; if the store refuses, the job stays REGISTERING and the restarted
        scheduler finds it again.
        """
        try:
            job = self.store.get_job(job_id)
            if job is not None and job.state == JobState.REGISTERING.value:
                self._finish(job, JobState.REGISTRATION_FAILED,
                             f"{summary_line(exc)} ({self._failures.get(job_id, 0)} attempts)")
        except Exception as again:  # noqa: BLE001 - reported; the restart finds the job again
            self.on_error(again)
        self._failures.pop(job_id, None)

    def _register(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job is None or job.state != JobState.REGISTERING.value:
            return  # queued twice (a restart, a retry): registered already
        try:
            row = self.register(job_id)
        except ClusterError:  # the registry is restarting or busy: counted and tried again (`register_next`)
            raise
        except FactoryError as exc:  # refused for good: recorded on the job, where its user looks
            self._finish(job, JobState.REGISTRATION_FAILED, summary_line(exc))
            return
        if not row:
            self._finish(job, JobState.REGISTRATION_FAILED, "the job has no register_as")
            return
        model = version_ref(row["name"], row["version"])
        self._finish(job, JobState.REGISTERED, f"registered as {model}", model=model)

    def _again_later(self, job_id: str) -> None:
        self.stopping.wait(self.retry_s)
        self._queue.put(job_id)

    def _finish(self, job: JobRow, state: JobState, reason: str, model: str | None = None) -> None:
        """REGISTERING -> `state`, with the outcome in the accounting too (an earlier attempt's dropped)."""
        self._failures.pop(job.job_id, None)
        accounting = {key: value for key, value in job.accounting.items()
                      if key not in ("model", "registration_error")}
        accounting.update({"model": model} if model is not None else {"registration_error": reason})
        self.store.transition_job(job.job_id, state.value, reason, self.now_s(),
                                  expected_from={JobState.REGISTERING.value}, accounting=accounting)
