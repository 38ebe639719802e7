"""A finished job's accounting: its energy priced exactly, what it would have cost at once, its waits."""

from __future__ import annotations

import numpy as np
import pytest

from factory.jobs.accounting import account, by_team, waiting_s
from factory.prices.series import IntervalSeries
from factory.prices.trace import LoadedTrace
from factory.simulation.run import LoadedPrices
from factory.store import JobEvent, JobRow

HOUR = 3600.0
T0 = 1_700_002_800.0  # on the hour
# 100/MWh in the first hour, 10/MWh after it.
FEED = LoadedPrices(LoadedTrace(price=IntervalSeries(T0, HOUR, np.array([100.0] + [10.0] * 47)), carbon=None,
                                files=["mem.csv"]),
                    IntervalSeries(T0, HOUR, np.array([100.0] + [10.0] * 47)), None, "USD").feed(24.0)


def price(profile):  # type: ignore[no-untyped-def]
    return FEED.cost(profile, T0 + 10 * HOUR)


def job(runs: list[list[float]], team: str = "vision") -> JobRow:
    return JobRow(job_id="j", name="j", team=team, kind="train", spec={}, spec_hash="h", state="SUCCEEDED",
                  submitted_s=T0, updated_s=T0 + 2 * HOUR, schedule={"runs": runs})


def event(state: str, at_s: float, reason: str = "") -> JobEvent:
    return JobEvent(job_id="j", time_s=T0 + at_s, state=state, reason=reason)


TIMELINE = [event("QUEUED", 0), event("WAITING", 60, "price: planned to run from 01:00"),
            event("RUNNING", HOUR), event("SUCCEEDED", 2 * HOUR)]


def test_a_job_that_waited_for_the_cheap_hour_costs_a_tenth_of_running_at_once() -> None:
    record = account(job([[T0 + HOUR, T0 + 2 * HOUR, 2]]), TIMELINE, attributed_kwh=1.4, price=price,
                     gpu_power_w=700.0)
    assert record["energy_kwh"] == 1.4 and record["energy_source"] == "telemetry"
    assert record["gpu_hours"] == pytest.approx(2.0)
    assert record["cost"] == pytest.approx(1.4 * 10 / 1000)
    assert record["cost_if_run_at_once"] == pytest.approx(1.4 * 100 / 1000)
    assert record["savings"] == pytest.approx(1.4 * 90 / 1000)
    assert record["wait_s"] == {"queued": 60.0, "price": HOUR - 60}


def test_without_telemetry_the_energy_is_the_planning_estimate_and_pauses_are_laid_end_to_end() -> None:
    # Two half-hour runs (first hour's end at 100, then the cheap hour) with a pause between.
    runs = [[T0 + 0.5 * HOUR, T0 + HOUR, 1], [T0 + 1.5 * HOUR, T0 + 2 * HOUR, 1]]
    record = account(job(runs), [], attributed_kwh=None, price=price, gpu_power_w=1000.0)
    assert record["energy_source"] == "estimate" and record["energy_kwh"] == pytest.approx(1.0)
    assert record["cost"] == pytest.approx(0.5 * 100 / 1000 + 0.5 * 10 / 1000)
    # At once: from submission, one unbroken hour in the dear hour.
    assert record["cost_if_run_at_once"] == pytest.approx(1.0 * 100 / 1000)


def test_a_job_that_never_ran_costs_nothing_and_teams_add_up() -> None:
    never = account(job([]), TIMELINE[:2], attributed_kwh=None, price=price, gpu_power_w=700.0)
    assert never["cost"] == 0.0 and never["energy_kwh"] == 0.0 and never["wait_s"] == {"queued": 60.0}
    ran = job([[T0 + HOUR, T0 + 2 * HOUR, 2]])
    ran.accounting.update(account(ran, TIMELINE, 1.4, price, 700.0))
    other = job([[T0 + HOUR, T0 + 2 * HOUR, 2]], team="nlp")
    other.accounting.update(account(other, TIMELINE, 2.8, price, 700.0))
    teams = by_team([ran, other, job([])])
    assert teams["vision"]["jobs"] == 1 and teams["nlp"]["energy_kwh"] == pytest.approx(2.8)
    assert teams["nlp"]["savings"] == pytest.approx(2 * teams["vision"]["savings"])


def test_waits_by_reason_include_paused_time() -> None:
    timeline = [event("QUEUED", 0), event("RUNNING", 10), event("PAUSING", 100, "price: spike"),
                event("PAUSED", 110), event("WAITING", 120, "price: later"),
                event("WAITING", 200, "capacity: full"), event("RUNNING", 500)]
    assert waiting_s(timeline) == {"queued": 10.0, "paused": 10.0, "price": 80.0, "capacity": 300.0}
