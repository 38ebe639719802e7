"""Energy per GPU and its attribution to jobs.

Energy of a GPU over one sampling interval comes from its hardware counter where it has one
(NVML's total energy, mJ), otherwise from power integrated over the interval (trapezoid rule).
The caller gives the interval length: real seconds for real devices, factory-clock seconds for
simulated ones (a replayed day of simulated work uses a day's energy).

Attribution: the energy of an interval goes to the consumers holding the GPU at the interval's
end, split equally between them; a GPU nobody holds charges `idle`.

Invariants:
  * Energy only grows; a counter that goes backwards (GPU reset) falls back to integration for
    that interval instead of producing negative energy.
  * Ledgers are totals since the telemetry actor started; they are in memory (the actor holds no
    durable state), so whoever needs a job's energy for good reads it when the job ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from factory.telemetry.attribution import Consumer
from factory.telemetry.models import IDLE, GpuReading

J_PER_KWH = 3.6e6


def factory_day(time_s: float) -> date:
    """The UTC calendar day of a factory-clock time."""
    return datetime.fromtimestamp(time_s, tz=UTC).date()


class GpuEnergyMeter:
    """One GPU's energy since the meter started."""

    def __init__(self) -> None:
        self.energy_j = 0.0
        self._last_counter_mj: int | None = None
        self._last_power_w: float | None = None
        self._unread_s = 0.0  # time since the last reading that had a power figure

    def update(self, reading: GpuReading, interval_s: float) -> float:
        """Account one interval ending with `reading`; return its energy in J (0 for the first).

        Intervals that ended in a failed read are carried over and integrated with the next good
        one, so a GPU that missed samples is not charged less.
        """
        delta_j = 0.0
        counter = reading.energy_counter_mj
        span_s = self._unread_s + interval_s
        if counter is not None and self._last_counter_mj is not None and counter >= self._last_counter_mj:
            delta_j = (counter - self._last_counter_mj) / 1000.0
        elif reading.power_w is not None and self._last_power_w is not None and span_s > 0:
            delta_j = (self._last_power_w + reading.power_w) / 2.0 * span_s
        if counter is not None:
            self._last_counter_mj = counter
        if reading.power_w is not None:
            self._last_power_w = reading.power_w
            self._unread_s = 0.0
        elif self._last_power_w is not None:
            self._unread_s = span_s
        self.energy_j += delta_j
        return delta_j


@dataclass
class LedgerEntry:
    """Energy and GPU time charged to one consumer."""

    energy_j: float = 0.0
    gpu_seconds: float = 0.0
    first_seen_s: float | None = None
    last_seen_s: float | None = None


@dataclass
class EnergyLedger:
    """Energy per consumer and per factory day."""

    by_consumer: dict[Consumer, LedgerEntry] = field(default_factory=dict)
    by_day_j: dict[date, float] = field(default_factory=dict)

    def charge(self, consumers: Sequence[Consumer], energy_j: float, interval_s: float,
               time_s: float) -> None:
        """Charge one GPU-interval's energy to its consumers (`idle` when none)."""
        day = factory_day(time_s)
        self.by_day_j[day] = self.by_day_j.get(day, 0.0) + energy_j
        holders = list(dict.fromkeys(consumers)) or [Consumer(factory_job=IDLE)]
        for consumer in holders:
            entry = self.by_consumer.setdefault(consumer, LedgerEntry(first_seen_s=time_s))
            entry.energy_j += energy_j / len(holders)
            if consumer.factory_job != IDLE:
                entry.gpu_seconds += interval_s / len(holders)
            entry.last_seen_s = time_s

    def add_day_energy(self, energy_j: float, time_s: float) -> None:
        """Count non-GPU energy (CPU packages) toward the day's total."""
        day = factory_day(time_s)
        self.by_day_j[day] = self.by_day_j.get(day, 0.0) + energy_j

    def job(self, job_id: str) -> LedgerEntry | None:
        """Everything charged to a factory job id, or to a Ray job id; None if never seen."""
        matches = [entry for consumer, entry in self.by_consumer.items()
                   if job_id in (consumer.factory_job, consumer.ray_job_id)]
        if not matches:
            return None
        return LedgerEntry(
            energy_j=sum(e.energy_j for e in matches),
            gpu_seconds=sum(e.gpu_seconds for e in matches),
            first_seen_s=min(e.first_seen_s for e in matches if e.first_seen_s is not None),
            last_seen_s=max(e.last_seen_s for e in matches if e.last_seen_s is not None),
        )
