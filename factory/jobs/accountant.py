"""Accounting each job once its run is over, and handing a succeeded one on to its model's registration.

The state manager behind the SchedulerActor's accounting, without Ray: the actor passes the store, the
telemetry's energy of a job (`energy_kwh(job_id)`), the price integral (`price`), and what follows an
account (`after`: `Registrations.after_accounting`). `factory.jobs.accounting.account` computes the
record itself.

Invariants:
  * Each finished job is accounted once: a job with an accounting is skipped, and the pending set is
    found again in the store after a restart (`pending_in_store`).
  * The accounting and what follows it (SUCCEEDED -> REGISTERING) are written in one transaction, so an
    accounted job is never left SUCCEEDED; if either fails, neither is written and the job stays pending,
    accounted at the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from factory.jobs.accounting import PriceProfile, account
from factory.jobs.states import FINISHED
from factory.store import JobRow, StateStore


class Accountant:
    """The finished jobs still to account, and their accounting."""

    def __init__(self, store: StateStore, energy_kwh: Callable[[str], float | None], price: PriceProfile,
                 gpu_power_w: float, *, after: Callable[[JobRow], None] = lambda job: None,
                 on_accounted: Callable[[JobRow, dict[str, Any]], None] = lambda job, record: None) -> None:
        self.store = store
        self.energy_kwh = energy_kwh
        self.price = price
        self.gpu_power_w = gpu_power_w
        self.after = after
        self.on_accounted = on_accounted
        self.pending: set[str] = self.pending_in_store()

    def pending_in_store(self) -> set[str]:
        """Jobs whose run is over and that have no accounting yet (after a restart, too)."""
        return {job.job_id for job in self.store.list_jobs([state.value for state in FINISHED])
                if not job.accounting}

    def finished(self, job_ids: Iterable[str]) -> None:
        """These jobs' runs are over (or they were cancelled): account them at the next `account_pending`."""
        self.pending.update(job_ids)

    def account_pending(self) -> list[str]:
        """Account every pending job (oldest id first); return those accounted now.

        A job whose accounting or hand-on fails stays pending; the error is raised after the others
        were tried, so that one bad job does not hold up the rest.
        """
        accounted, failure = [], None
        for job_id in sorted(self.pending):
            job = self.store.get_job(job_id)
            if job is None or job.accounting:
                self.pending.discard(job_id)
                continue
            try:
                record = account(job, self.store.job_events(job_id), self.energy_kwh(job_id), self.price,
                                 self.gpu_power_w)
                with self.store.transaction():  # accounted and moved on together
                    self.store.update_job(job_id, accounting=record)
                    self.after(job)
            except Exception as exc:  # noqa: BLE001 - re-raised below, once the other jobs are accounted
                failure = failure or exc
                continue
            self.pending.discard(job_id)
            self.on_accounted(job, record)
            accounted.append(job_id)
        if failure is not None:
            raise failure
        return accounted
