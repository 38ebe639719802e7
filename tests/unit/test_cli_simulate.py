"""`factory simulate` through the real console script: the JSON contract, the summary, the plot, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import FACTORY_BIN, clean_env
from tests.unit.test_cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
REPORT_KEYS = {"policy", "jobs", "completed", "deadline_misses", "energy_kwh", "cost", "carbon_kg",
               "mean_jct_s", "p95_jct_s", "mean_wait_s", "gpu_utilization", "preemptions", "wall_s"}


def simulate(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FACTORY_BIN, "simulate", *args], cwd=cwd, env=clean_env(**(env or {})),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def write_prices(path: Path, days: int = 3, carbon: bool = False) -> None:
    """Hourly prices: 80/MWh by day, 10/MWh from 00:00 to 06:00 UTC, one negative hour a night."""
    lines = ["timestamp,price_per_mwh" + (",carbon_g_per_kwh" if carbon else "")]
    for day in range(days):
        for hour in range(24):
            price = -5.0 if hour == 3 else 10.0 if hour < 6 else 80.0
            row = f"2024-03-{day + 1:02d}T{hour:02d}:00:00+00:00,{price}"
            lines.append(row + (f",{200 if hour < 6 else 400}" if carbon else ""))
    path.write_text("\n".join(lines) + "\n")


CONTRACT = "job_id,submit_s,duration_s,num_gpus"


def write_jobs(path: Path, rows: list[str], header: str = CONTRACT + ",deadline_s") -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    write_prices(tmp_path / "prices.csv", carbon=True)
    # Submitted at 08:00 (80/MWh), each may finish within a day: the night is cheaper.
    write_jobs(tmp_path / "jobs.csv", [f"j{i},{8 * 3600 + 600 * i},7200,1,86400" for i in range(4)])
    return tmp_path


def test_json_report_compares_with_fifo_and_saves_money(inputs: Path) -> None:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--json", cwd=inputs)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert REPORT_KEYS | {"baseline", "savings_pct"} <= set(report)
    assert REPORT_KEYS <= set(report["baseline"])
    assert report["policy"] == "price-aware" and report["baseline"]["policy"] == "fifo"
    assert report["jobs"] == report["completed"] == 4
    assert report["deadline_misses"] == 0
    # 4 jobs x 2 h x 0.7 kW: the same energy under both policies, at night for price-aware.
    assert report["energy_kwh"] == pytest.approx(5.6)
    assert report["baseline"]["energy_kwh"] == pytest.approx(5.6)
    assert report["baseline"]["cost"] == pytest.approx(5.6 * 80 / 1000)
    assert report["cost"] < 5.6 * 10 / 1000  # the negative hour is used too
    assert report["savings_pct"] == pytest.approx(
        (report["baseline"]["cost"] - report["cost"]) / report["baseline"]["cost"] * 100)
    assert report["carbon_kg"] < report["baseline"]["carbon_kg"]


def test_fifo_policy_is_its_own_baseline_and_carbon_is_null_without_data(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv", carbon=False)
    write_jobs(tmp_path / "jobs.csv", ["a,0,3600,1,7200"])

    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1", "--policy", "fifo",
                      "--json", cwd=tmp_path)

    report = json.loads(result.stdout)
    assert report["carbon_kg"] is None
    assert report["savings_pct"] == pytest.approx(0.0)
    assert report["mean_wait_s"] == pytest.approx(0.0)


def test_readable_summary_and_plot(inputs: Path) -> None:
    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--plot", "run.png",
                      cwd=inputs)

    assert result.returncode == 0, result.stderr
    assert "fifo (baseline)" in result.stdout
    assert "cost saved against fifo:" in result.stdout
    assert (inputs / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("rows", "header", "expected"), [
    (["a,0,3600"], "job_id,submit_s,duration_s", ["jobs.csv", "line 1", "num_gpus"]),
    (["a,0,-5,1"], CONTRACT, ["jobs.csv", "line 2", "duration_s"]),
    (["a,0,60,1", "b,0,60,9"], CONTRACT, ["jobs.csv", "line 3", "--gpus"]),
    (["a,0,60,1", "b,400000,60,1"], CONTRACT, ["jobs.csv", "line 3", "submit_s"]),
])
def test_bad_job_trace_is_one_line_naming_file_line_and_field(
        tmp_path: Path, rows: list[str], header: str, expected: list[str]) -> None:
    write_prices(tmp_path / "prices.csv")
    write_jobs(tmp_path / "jobs.csv", rows, header)

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "4",
                                          cwd=tmp_path))

    for part in expected:
        assert part in line


def test_bad_price_file_and_options_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("time,price_per_mwh\n2024-03-01T00:00:00+00:00,5\n")
    write_jobs(tmp_path / "jobs.csv", ["a,0,60,1"])

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1",
                                          cwd=tmp_path))
    assert "prices.csv" in line and "timestamp" in line

    write_prices(tmp_path / "prices.csv")
    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1",
                                          "--quota", "vision", cwd=tmp_path))
    assert "--quota vision" in line


@pytest.mark.skipif(not (SHARED_DATA / "jobs" / "pai_1k.csv").exists(), reason="../shared/data is absent")
def test_real_pai_jobs_on_real_ercot_prices_through_column_options() -> None:
    result = simulate("--prices", "configs/examples/ercot-2024.yaml",
                      "--jobs", str(SHARED_DATA / "jobs" / "pai_1k.csv"), "--submit-column", "arrival_time",
                      "--duration-column", "length", "--gpus-column", "cpus", "--gpus", "40", "--json",
                      cwd=REPO)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["jobs"] == report["completed"] == 1000
    assert report["deadline_misses"] == 0
    assert report["savings_pct"] > 20  # ERCOT's daily swing is large; measured 32.5 % on 2026-11-29
    assert report["carbon_kg"] is not None


@pytest.mark.parametrize(("rows", "flags", "expected"), [
    (["a,0,0.5,1,7200"], [], ["line 2", "duration_s", "at least 1"]),
    (["a,0,3600,1,400000"], [], ["line 2", "deadline_s", "after the price trace ends"]),
    (["a,0,3600,1,7200"], ["--quota", "x=3"], ["--quota", "add up to 3", "--gpus"]),
    (["a,0,3600,1,7200"], ["--quota", "x=1", "--quota", "x=2"], ["--quota x=2", "once"]),
])
def test_inputs_a_run_could_never_honour_are_refused_up_front(
        tmp_path: Path, rows: list[str], flags: list[str], expected: list[str]) -> None:
    write_prices(tmp_path / "prices.csv")
    write_jobs(tmp_path / "jobs.csv", rows)

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2",
                                          *flags, cwd=tmp_path))

    for part in expected:
        assert part in line


def test_a_non_preemptible_job_quotas_would_keep_waiting_is_refused(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv")
    write_jobs(tmp_path / "jobs.csv", ["a,0,3600,2,7200,false"], CONTRACT + ",deadline_s,preemptible")

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2",
                                          "--quota", "x=1", cwd=tmp_path))

    assert "line 2" in line and "non-preemptible" in line and "--quota" in line


def test_a_one_row_price_file_names_the_flag_that_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("timestamp,price_per_mwh\n2024-03-01T00:00:00+00:00,5\n")
    write_jobs(tmp_path / "jobs.csv", ["a,0,60,1,120"])

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1",
                                          cwd=tmp_path))

    assert "--resolution-min" in line


def test_a_late_non_preemptible_job_longer_than_a_day_still_runs(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv", days=3)
    # 40 h of unbroken work with a 30 h deadline: infeasible at admission, run as soon as possible.
    write_jobs(tmp_path / "jobs.csv", ["long,3600,144000,1,108000,false"],
               CONTRACT + ",deadline_s,preemptible")

    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["completed"] == 1 and report["infeasible_at_admission"] == 1
    assert report["preemptions"] == 0
    # It was told at submission, so its miss is not a broken promise (fifo told it too).
    assert report["deadline_misses"] == 1 and report["missed_promises"] == 0
    assert report["baseline"]["deadline_misses"] == 1 and report["baseline"]["missed_promises"] == 0


def test_a_job_admitted_as_feasible_that_misses_is_a_broken_promise(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv", days=3)
    # fifo admits the short job (it could finish alone) and then runs it after the 10 h one: late.
    write_jobs(tmp_path / "jobs.csv", ["long,0,36000,1,72000,false", "short,60,3600,1,7200,true"],
               CONTRACT + ",deadline_s,preemptible")

    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    fifo = json.loads(result.stdout)["baseline"]
    assert fifo["infeasible_at_admission"] == 0
    assert fifo["deadline_misses"] == fifo["missed_promises"] == 1



def test_optimum_adds_the_lp_bound_and_the_share_of_its_savings_captured(inputs: Path) -> None:
    plain = json.loads(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--json",
                                cwd=inputs).stdout)
    assert "optimum" not in plain and "captured_share" not in plain  # the default output is unchanged

    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--json", "--optimum",
                      cwd=inputs)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == set(plain) | {"optimum", "captured_share"}
    optimum = report["optimum"]
    assert set(optimum) == {"cost", "carbon_kg", "feasible"} and optimum["feasible"] is True
    # A lower bound: no cheaper than the policy, which saves against fifo here (the night is cheap).
    assert optimum["cost"] <= report["cost"] + 1e-9 < report["baseline"]["cost"]
    assert optimum["carbon_kg"] is not None
    fifo = report["baseline"]["cost"]
    assert report["captured_share"] == pytest.approx((fifo - report["cost"]) / (fifo - optimum["cost"]))
    assert 0 < report["captured_share"] <= 1 + 1e-9

    text = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--optimum",
                    cwd=inputs).stdout
    bound = next(line for line in text.splitlines() if line.startswith("offline optimum (LP lower bound)"))
    assert f"{optimum['cost']:,.2f} USD" in bound and f"{report['captured_share']:.3f}" in bound


def test_the_optimum_charges_the_resumes_it_makes(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv")
    # 7 h of work due in two days: six cheap hours a night, so the bound resumes it the next night, and with
    # a 1 h resume overhead that night's run is an hour longer.
    write_jobs(tmp_path / "jobs.csv", ["long,0,25200,1,172800"])

    def report(overhead_s: str) -> dict:
        result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1", "--json",
                          "--optimum", "--preempt-overhead-s", overhead_s, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    free, charged = report("0"), report("3600")
    assert free["optimum"]["cost"] < charged["optimum"]["cost"]
    assert charged["deadline_misses"] == 0
    assert charged["optimum"]["cost"] <= charged["cost"] + 1e-9  # still a lower bound


def test_an_infeasible_optimum_is_an_answer_with_null_cost_and_share(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv")
    # Two 10 h jobs due 10 h after submit on one GPU: no schedule meets both deadlines.
    write_jobs(tmp_path / "jobs.csv", ["a,0,36000,1,36000", "b,0,36000,1,36000"])

    result = simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1", "--json", "--optimum",
                      cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["optimum"] == {"cost": None, "carbon_kg": None, "feasible": False}
    assert report["captured_share"] is None


def test_optimum_without_scipy_is_one_line_naming_the_install(inputs: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "no_scipy"
    (shadow / "scipy").mkdir(parents=True)
    (shadow / "scipy" / "__init__.py").write_text("raise ImportError('No module named scipy')\n")

    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2",
                                          "--optimum", cwd=inputs, env={"PYTHONPATH": str(shadow)}))

    assert "--optimum" in line and "pip install -e '.[bench]'" in line


def test_optimum_refuses_a_job_the_lp_would_run_past_the_price_trace(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv", days=3)
    # Due at 70 h (inside the 72 h of prices) but 30 h long: the LP's window stretches to 80 h.
    write_jobs(tmp_path / "jobs.csv", ["s,180000,108000,1,72000"])
    args = ("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1")
    assert simulate(*args, cwd=tmp_path).returncode == 0  # the replay alone runs it

    line = assert_one_line_error(simulate(*args, "--optimum", cwd=tmp_path))

    assert "--optimum" in line and "'s'" in line and "80 h" in line and "longer price trace" in line


def test_pauses_per_job_are_reported_for_the_policy_and_the_baseline(tmp_path: Path) -> None:
    write_prices(tmp_path / "prices.csv")
    # One 10 h job submitted at 04:00 with two days of slack: the cheap nights are 6 h long, so it runs
    # through at least two of them and is paused in the 80/MWh day between.
    write_jobs(tmp_path / "jobs.csv", ["long,14400,36000,1,172800"])
    args = ("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "1")

    report = json.loads(simulate(*args, "--json", cwd=tmp_path).stdout)

    assert report["preemptions"] >= 1
    for side in (report, report["baseline"]):
        pauses = side["pauses_per_job"]
        assert set(pauses) == {"mean", "p50", "p90", "p99", "max"} and isinstance(pauses["max"], int)
        # One job: every statistic is its own pause count, the run's total.
        assert pauses == {"mean": side["preemptions"], "p50": side["preemptions"],
                          "p90": side["preemptions"], "p99": side["preemptions"], "max": side["preemptions"]}
    assert report["baseline"]["pauses_per_job"]["max"] == 0  # fifo never pauses

    text = simulate(*args, cwd=tmp_path).stdout
    row = next(line for line in text.splitlines() if line.startswith("pauses per job (p50/p90/max)"))
    count = report["preemptions"]
    assert row.split()[-2:] == [f"{count}/{count}/{count}", "0/0/0"]


def test_pauses_per_job_percentiles_over_several_jobs(inputs: Path) -> None:
    report = json.loads(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2", "--json",
                                 cwd=inputs).stdout)

    pauses = report["pauses_per_job"]
    assert pauses["mean"] * report["jobs"] == pytest.approx(report["preemptions"])
    assert pauses["p50"] <= pauses["p90"] <= pauses["p99"] <= pauses["max"] <= report["preemptions"]
    assert (pauses["max"] > 0) == (report["preemptions"] > 0)


@pytest.mark.parametrize(("flag", "value"), [
    ("--preempt-overhead-s", "inf"), ("--preempt-overhead-s", "nan"), ("--power-w", "inf"),
    ("--forecast-hours", "nan"), ("--default-slack", "inf"), ("--power-budget-kw", "nan"),
])
def test_non_finite_numbers_are_refused_in_one_line(inputs: Path, flag: str, value: str) -> None:
    line = assert_one_line_error(simulate("--prices", "prices.csv", "--jobs", "jobs.csv", "--gpus", "2",
                                          flag, value, cwd=inputs))

    assert line.startswith(f"error: {flag} {value}:") and "finite" in line and f"pass e.g. {flag} " in line
