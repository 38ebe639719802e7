"""Carbon as an objective: the series a policy plans on, the LP bound on it, and `factory simulate`.

The toy day: power is cheap at night (00:00-06:00) but dirty, clean only at midday (11:00-15:00, the
sun); jobs arrive at 20:00 and may finish within a day. Running at once (fifo) is dear and dirty,
minimising cost runs them at night (cheap, dirty), minimising carbon at midday (dear, clean).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from factory.config import load_config
from factory.errors import ConfigError
from factory.jobs.snapshot import outlook_from_forecast
from factory.prices.models import Forecast, ForecastPoint
from factory.prices.objective import ObjectiveError, signal_series, weigh
from factory.prices.series import IntervalSeries
from factory.simulation.optimum import offline_optimum
from tests.unit.test_cli_errors import assert_one_line_error
from tests.unit.test_cli_simulate import SHARED_DATA, simulate, write_jobs
from tests.unit.test_simulation_optimum import make_trace

HOUR_S = 3600.0
T0 = 1_709_251_200.0  # 2024-03-01 00:00 UTC


def price_of(hour: int) -> float:
    return 10.0 if hour % 24 < 6 else 80.0


def carbon_of(hour: int) -> float:
    return 100.0 if 11 <= hour % 24 < 15 else 600.0


def write_day_prices(path: Path, days: int = 3, carbon: bool = True) -> None:
    lines = ["timestamp,price_per_mwh" + (",carbon_g_per_kwh" if carbon else "")]
    for hour in range(24 * days):
        stamp = f"2024-03-{hour // 24 + 1:02d}T{hour % 24:02d}:00:00+00:00"
        lines.append(f"{stamp},{price_of(hour)}" + (f",{carbon_of(hour)}" if carbon else ""))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def day(tmp_path: Path) -> Path:
    write_day_prices(tmp_path / "prices.csv")
    # Four 2-hour one-GPU jobs from 20:00, due a day later.
    write_jobs(tmp_path / "jobs.csv", [f"j{i},{20 * 3600 + 300 * i},7200,1,86400" for i in range(4)])
    return tmp_path


def series(values: list[float]) -> IntervalSeries:
    return IntervalSeries(T0, HOUR_S, np.array(values, dtype=float))


def test_each_objective_plans_on_its_own_series() -> None:
    price, carbon = series([10.0, 80.0]), series([600.0, 100.0])

    assert signal_series("cost", price, carbon) is price
    np.testing.assert_allclose(signal_series("carbon", price, carbon).values, [600.0, 100.0])  # kg/MWh
    late = IntervalSeries(T0 + 2 * HOUR_S, HOUR_S, np.array([300.0]))  # carbon from 02:00 only
    np.testing.assert_allclose(signal_series("carbon", price, late).values, [300.0, 300.0])  # its edge
    combined = signal_series("cost+carbon", price, carbon, carbon_price_per_tonne=100.0)
    np.testing.assert_allclose(combined.values, [10.0 + 60.0, 80.0 + 10.0])  # 100/t x 0.6 t/MWh = 60
    assert weigh("cost+carbon", 80.0, 100.0, 100.0) == pytest.approx(90.0)  # per MWh
    assert weigh("carbon", 80.0, None) is None  # an interval without carbon is unknown
    assert weigh("cost+carbon", 5.0, 2000.0, 100.0) == pytest.approx(205.0)  # a run: cost and kg


def test_a_carbon_objective_without_carbon_or_a_carbon_price_names_what_to_set() -> None:
    with pytest.raises(ObjectiveError, match="needs a carbon series.*--carbon FILE"):
        signal_series("carbon", series([10.0]), None)
    with pytest.raises(ObjectiveError, match="needs carbon_price_per_tonne"):
        signal_series("cost+carbon", series([10.0]), series([100.0]))


def test_the_lp_bound_of_each_objective_schedules_where_that_objective_is_lowest() -> None:
    hours = list(range(24))
    price = series([price_of(h) for h in hours])
    carbon = series([carbon_of(h) for h in hours])
    trace = make_trace(submit_h=[0], duration_h=[2], deadline_h=[24])  # one GPU at 1 kW

    cheapest = offline_optimum(trace, price, time_zero_s=T0, gpus=1, carbon=carbon)
    cleanest = offline_optimum(trace, price, time_zero_s=T0, gpus=1, carbon=carbon, objective=carbon)

    # 2 kWh: at night 10/MWh and 600 g/kWh; at midday 80/MWh and 100 g/kWh.
    assert (cheapest.cost, cheapest.carbon_kg) == pytest.approx((0.02, 1.2))
    assert (cleanest.cost, cleanest.carbon_kg) == pytest.approx((0.16, 0.2))
    for per_tonne, expected in ((0.0, cheapest), (1000.0, cleanest)):
        combined = signal_series("cost+carbon", price, carbon, per_tonne)
        bound = offline_optimum(trace, price, time_zero_s=T0, gpus=1, carbon=carbon, objective=combined)
        assert bound.carbon_kg == pytest.approx(expected.carbon_kg)


def run(day: Path, *flags: str) -> dict:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--optimum", "--json",
                      *flags, cwd=day)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_simulate_minimises_carbon_against_fifo_and_its_lp_bound(day: Path) -> None:
    by_cost = run(day)
    by_carbon = run(day, "--objective", "carbon")

    assert by_cost["objective"] == "cost" and by_carbon["objective"] == "carbon"
    fifo = by_carbon["baseline"]
    assert by_carbon["carbon_kg"] < by_cost["carbon_kg"] < fifo["carbon_kg"] * 1.01
    assert by_carbon["carbon_savings_pct"] > 50  # midday, not the evening or the night
    assert by_carbon["deadline_misses"] <= fifo["deadline_misses"] == 0
    # The LP bound is on carbon, and the policy captured (nearly) all of its saving.
    assert by_carbon["optimum"]["carbon_kg"] <= by_carbon["carbon_kg"] + 1e-9
    assert by_carbon["captured_share"] >= 0.9
    assert by_cost["cost"] < by_carbon["cost"]  # clean power is dearer here: the trade is visible


def test_cost_plus_carbon_moves_from_the_cheapest_to_the_cleanest_as_carbon_gets_dear(day: Path) -> None:
    free = run(day, "--objective", "cost+carbon", "--carbon-price-per-tonne", "0")
    dear = run(day, "--objective", "cost+carbon", "--carbon-price-per-tonne", "10000")

    assert free["carbon_kg"] == pytest.approx(run(day)["carbon_kg"])
    assert dear["carbon_kg"] == pytest.approx(run(day, "--objective", "carbon")["carbon_kg"])
    assert dear["captured_share"] >= 0.9


def test_the_summary_says_what_was_minimised_and_the_carbon_saved(day: Path) -> None:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--optimum",
                      "--objective", "carbon", cwd=day)

    assert result.returncode == 0, result.stderr
    assert "minimising carbon" in result.stdout and "carbon saved against fifo: " in result.stdout
    assert "offline optimum (LP lower bound): " in result.stdout and " kg CO2 at " in result.stdout


@pytest.mark.parametrize(("flags", "expected"), [
    (["--objective", "cost+carbon"], "--objective cost+carbon needs --carbon-price-per-tonne"),
    (["--objective", "cost+carbon", "--carbon-price-per-tonne", "nan"], "--carbon-price-per-tonne"),
])
def test_a_combined_objective_without_a_finite_carbon_price_is_one_line(day: Path, flags: list[str],
                                                                        expected: str) -> None:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", *flags, cwd=day)
    assert expected in assert_one_line_error(result)


def test_a_carbon_objective_on_prices_without_carbon_is_one_line_naming_the_fix(day: Path) -> None:
    write_day_prices(day / "prices.csv", carbon=False)
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--objective", "carbon",
                      cwd=day)
    assert "objective 'carbon' needs a carbon series" in assert_one_line_error(result)
    assert "--carbon FILE" in result.stderr


def test_a_tariff_prices_the_span_of_a_carbon_trace_of_its_own(day: Path) -> None:
    (day / "carbon.csv").write_text("timestamp,co2\n" + "".join(
        f"2024-03-{h // 24 + 1:02d}T{h % 24:02d}:00:00+00:00,{carbon_of(h)}\n" for h in range(72)))
    (day / "factory.yaml").write_text(yaml.safe_dump({"prices": {"source": "tariff"}}))

    report = json.loads(simulate("--prices", "factory.yaml", "--carbon", "carbon.csv", "--carbon-column",
                                 "co2", "--jobs", "jobs.csv", "--gpus", "2", "--objective", "carbon",
                                 "--json", cwd=day).stdout)
    assert report["carbon_savings_pct"] > 50 and report["cost"] > 0

    missing = simulate("--prices", "factory.yaml", "--jobs", "jobs.csv", "--gpus", "2", cwd=day)
    assert "--prices: a tariff has prices for any time" in assert_one_line_error(missing)
    assert "--carbon FILE" in missing.stderr


@pytest.mark.skipif(not (SHARED_DATA / "carbon" / "eia930_2022").exists(), reason="../shared/data is absent")
def test_real_eia930_carbon_with_the_built_in_tariff(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({"prices": {"source": "tariff"}}))
    write_jobs(tmp_path / "jobs.csv", [f"j{i},{i * 5400},7200,1,86400" for i in range(40)])
    report = json.loads(simulate(
        "--prices", "factory.yaml", "--carbon", str(SHARED_DATA / "carbon/eia930_2022/CISO_2022_hourly.csv"),
        "--carbon-column", "avg_CI", "--jobs", "jobs.csv", "--gpus", "4", "--objective", "carbon",
        "--optimum", "--json", cwd=tmp_path).stdout)

    assert report["carbon_kg"] < report["baseline"]["carbon_kg"]
    assert report["deadline_misses"] <= report["baseline"]["deadline_misses"]
    assert report["optimum"]["carbon_kg"] <= report["carbon_kg"]


def forecast(carbon: bool = True) -> Forecast:
    """Six night hours from 00:00: all cheap; the carbon of 09:00-15:00 (dirty, then clean)."""
    points = [ForecastPoint(start_s=T0 + h * HOUR_S, price_per_mwh=price_of(h), low_per_mwh=None,
                            high_per_mwh=None, known=True,
                            carbon_g_per_kwh=carbon_of(h + 9) if carbon else None) for h in range(6)]
    return Forecast(time_s=T0, known_until_s=None, interval_s=HOUR_S, currency="USD", unit="USD/MWh",
                    method="test", points=points)


def test_the_live_scheduler_plans_on_the_objective_of_its_config() -> None:
    by_cost = outlook_from_forecast(forecast())
    by_carbon = outlook_from_forecast(forecast(), "carbon")
    combined = outlook_from_forecast(forecast(), "cost+carbon", 100.0)

    np.testing.assert_allclose(by_cost.price_per_mwh, [10, 10, 10, 10, 10, 10])
    np.testing.assert_allclose(by_carbon.price_per_mwh, [600, 600, 100, 100, 100, 100])
    np.testing.assert_allclose(combined.price_per_mwh, [70, 70, 20, 20, 20, 20])
    # A job's max_price_per_mwh is about money: it is checked against the market price, not the carbon.
    assert (by_carbon.price_now_per_mwh(), by_cost.price_now_per_mwh()) == (10.0, 10.0)
    # A job's max_carbon_g_per_kwh is checked against the feed's carbon, whatever the objective.
    assert by_cost.carbon_now_g_per_kwh() == by_carbon.carbon_now_g_per_kwh() == 600.0
    assert outlook_from_forecast(forecast(carbon=False)).carbon_now_g_per_kwh() is None
    with pytest.raises(ObjectiveError, match="objective is 'carbon' but the price feed has no carbon"):
        outlook_from_forecast(forecast(carbon=False), "carbon")


def test_a_combined_objective_in_the_config_needs_a_carbon_price(tmp_path: Path) -> None:
    (tmp_path / "factory.yaml").write_text(yaml.safe_dump({"scheduler": {"objective": "cost+carbon"}}))
    with pytest.raises(ConfigError, match="objective cost\\+carbon needs carbon_price_per_tonne"):
        load_config(tmp_path / "factory.yaml", env={})
    chosen = load_config(tmp_path / "factory.yaml",
                         env={"FACTORY_SCHEDULER__CARBON_PRICE_PER_TONNE": "80"}).scheduler
    assert (chosen.objective, chosen.carbon_price_per_tonne) == ("cost+carbon", 80.0)
