"""Reading job traces: the right columns, or one line naming the file, the line and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factory.errors import SimulationInputError
from factory.simulation.jobs import JobColumns, check_fits, load_jobs

PAI_1K = Path(__file__).resolve().parents[2].parent / "shared/data/jobs/pai_1k.csv"
PAI = JobColumns(submit_s="arrival_time", duration_s="length", num_gpus="cpus")
HEADER = "job_id,submit_s,duration_s,num_gpus"


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def jobs_file(tmp_path: Path, rows: list[str], header: str = HEADER) -> str:
    return write(tmp_path / "jobs.csv", [header, *rows])


def error_of(path: str, **kwargs: object) -> str:
    with pytest.raises(SimulationInputError) as caught:
        load_jobs(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    return message


def test_every_column_round_trips_into_typed_arrays(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,3600,8,7200,false,650.5,vision,2",
                                "b,60.5,90,1,100,YES,0,,-1",
                                "c,120,10,3.0,5,0,300,nlp,4.0"],
                     header=f"{HEADER},deadline_s,preemptible,power_w,team,priority")
    trace = load_jobs(path)
    assert len(trace) == 3
    assert trace.job_id.dtype == object and trace.job_id.tolist() == ["a", "b", "c"]
    assert trace.submit_s.dtype == np.float64 and trace.submit_s.tolist() == [0.0, 60.5, 120.0]
    assert trace.duration_s.dtype == np.float64 and trace.duration_s.tolist() == [3600.0, 90.0, 10.0]
    assert trace.num_gpus.dtype == np.int64 and trace.num_gpus.tolist() == [8, 1, 3]
    # a deadline shorter than the duration loads: the simulator reports it infeasible at admission
    assert trace.deadline_s.dtype == np.float64 and trace.deadline_s.tolist() == [7200.0, 100.0, 5.0]
    assert trace.preemptible.dtype == np.bool_ and trace.preemptible.tolist() == [False, True, False]
    assert trace.power_w.dtype == np.float64 and trace.power_w.tolist() == [650.5, 0.0, 300.0]
    assert trace.team.dtype == object and trace.team.tolist() == ["vision", "", "nlp"]
    assert trace.priority.dtype == np.int64 and trace.priority.tolist() == [2, -1, 4]
    assert trace.energy_kwh[0] == pytest.approx(8 * 650.5 * 3600 / 3.6e6)


def test_rows_stay_in_file_order(tmp_path: Path) -> None:
    trace = load_jobs(jobs_file(tmp_path, ["late,500,1,1", "early,5,1,1"]))
    assert trace.job_id.tolist() == ["late", "early"]
    assert trace.submit_s.tolist() == [500.0, 5.0]


def test_defaults_when_optional_columns_are_absent(tmp_path: Path) -> None:
    trace = load_jobs(jobs_file(tmp_path, ["a,0,100,2", "b,10,30,1"]), default_slack=1.5, default_power_w=400)
    assert trace.deadline_s.tolist() == [150.0, 45.0]
    assert trace.power_w.tolist() == [400.0, 400.0]
    assert trace.preemptible.dtype == np.bool_ and trace.preemptible.tolist() == [True, True]
    assert trace.team.dtype == object and trace.team.tolist() == ["", ""]
    assert trace.priority.dtype == np.int64 and trace.priority.tolist() == [0, 0]


def test_blank_optional_cells_take_the_defaults(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,100,2,,,,,", "b,0,100,2,50,no,100,ml,3"],
                     header=f"{HEADER},deadline_s,preemptible,power_w,team,priority")
    trace = load_jobs(path)
    assert trace.deadline_s.tolist() == [200.0, 50.0]  # default slack 2
    assert trace.preemptible.tolist() == [True, False]
    assert trace.power_w.tolist() == [700.0, 100.0]
    assert trace.team.tolist() == ["", "ml"]
    assert trace.priority.tolist() == [0, 3]


def test_spaces_around_names_and_values_and_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.csv", [" job_id , submit_s,duration_s ,num_gpus", " a , 1 ,2, 3 ", "", ""])
    trace = load_jobs(path)
    assert trace.job_id.tolist() == ["a"] and trace.num_gpus.tolist() == [3]


def test_without_a_job_id_column_ids_are_row_numbers(tmp_path: Path) -> None:
    trace = load_jobs(jobs_file(tmp_path, ["0,10,1", "5,10,2"], header="submit_s,duration_s,num_gpus"))
    assert trace.job_id.tolist() == ["row-1", "row-2"]


def test_pai_layout_loads_through_column_options(tmp_path: Path) -> None:
    path = write(tmp_path / "pai.csv", ["arrival_time,length,cpus", "0.0,6302.0,1", "68.0,1000.0,3"])
    trace = load_jobs(path, columns=PAI)
    assert trace.job_id.tolist() == ["row-1", "row-2"]
    assert trace.submit_s.tolist() == [0.0, 68.0]
    assert trace.duration_s.tolist() == [6302.0, 1000.0]
    assert trace.num_gpus.tolist() == [1, 3]
    assert trace.deadline_s.tolist() == [12604.0, 2000.0]


def test_pai_errors_name_the_column_the_user_knows(tmp_path: Path) -> None:
    path = write(tmp_path / "pai.csv", ["arrival_time,length,cpus", "0.0,6302.0,1", "68.0,-5,3"])
    message = error_of(path, columns=PAI)
    assert f"{path} line 3:" in message and "length (duration_s) must be > 0" in message


@pytest.mark.skipif(not PAI_1K.is_file(), reason=f"real PAI trace not present at {PAI_1K}")
def test_real_pai_trace_loads() -> None:
    trace = load_jobs(PAI_1K, columns=PAI)
    assert len(trace) == 1000
    assert len(set(trace.job_id.tolist())) == 1000
    assert trace.num_gpus.min() == 1 and trace.num_gpus.max() <= 4
    assert (trace.duration_s > 0).all() and (trace.submit_s >= 0).all()


def test_ten_thousand_rows_load_with_every_column(tmp_path: Path) -> None:
    # How fast is bench/job_trace.py's (a timed assertion here failed on a busy machine).
    rows = [f"j{i},{i * 3},{100 + i % 50},{1 + i % 8},{1000 + i},{'true' if i % 3 else 'no'},{300 + i % 7},"
            f"t{i % 4},{i % 5}" for i in range(10_000)]
    path = jobs_file(tmp_path, rows, header=f"{HEADER},deadline_s,preemptible,power_w,team,priority")
    trace = load_jobs(path)
    assert len(trace) == 10_000
    assert trace.num_gpus[9_999] == 1 + 9_999 % 8 and trace.deadline_s[9_999] == 1000 + 9_999
    assert trace.preemptible[:3].tolist() == [False, True, True] and trace.team[5] == "t1"


# --- errors: each names the file, the line and the column ---------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    message = error_of(path)
    assert path in message and "no such file" in message and "--jobs" in message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    message = error_of(str(tmp_path))
    assert str(tmp_path) in message and "not a file" in message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text("")
    message = error_of(str(path))
    assert str(path) in message and "empty" in message and "job_id,submit_s,duration_s,num_gpus" in message


def test_header_without_rows(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, [])
    message = error_of(path)
    assert path in message and "no jobs" in message


def test_a_row_with_too_many_fields_names_its_line(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,1,1", "b,0,1,1,9"])
    message = error_of(path)
    assert f"{path} line 3:" in message and "5 fields" in message


def test_a_blank_line_between_jobs_is_refused(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,1,1", "", "b,0,1,1"])
    message = error_of(path)
    assert f"{path} line 3:" in message and "blank line" in message


def test_a_quoted_value_over_several_lines_is_refused(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,1,1", 'b,0,1,1,"two', 'lines"', "c,0,1,1"], header=f"{HEADER},team")
    message = error_of(path)
    assert f"{path} line 3:" in message and "spans several lines" in message


def test_missing_required_column_suggests_the_nearest_and_the_option(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,1,1"], header="job_id,submit,duration_s,num_gpus")
    message = error_of(path)
    assert f"{path} line 1:" in message and "no column 'submit_s'" in message
    assert "did you mean 'submit'?" in message and "--submit-column submit" in message
    assert "'job_id', 'submit', 'duration_s', 'num_gpus'" in message  # the columns the file has


def test_missing_required_column_without_a_near_name_lists_the_header(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["0,1,1"], header="job_id,submit_s,num_gpus")
    message = error_of(path)
    assert f"{path} line 1:" in message and "no column 'duration_s'" in message
    assert "'job_id', 'submit_s', 'num_gpus'" in message and "--duration-column" in message


def test_a_renamed_column_the_file_lacks_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "pai.csv", ["arrival_time,length,gpus", "0,1,1"])
    message = error_of(path, columns=PAI)
    assert f"{path} line 1:" in message and "no column 'cpus' (num_gpus, from --gpus-column)" in message


def test_a_renamed_job_id_column_the_file_lacks_is_an_error(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["0,1,1"], header="submit_s,duration_s,num_gpus")
    message = error_of(path, columns=JobColumns(job_id="name"))
    assert f"{path} line 1:" in message and "'name' (job_id, from --job-id-column)" in message


@pytest.mark.parametrize(("row", "field", "problem"), [
    ("b,soon,10,1", "submit_s", "'soon' is not a number"),
    ("b,0,ten,1", "duration_s", "'ten' is not a number"),
    ("b,0,10,one", "num_gpus", "'one' is not a number"),
    ("b,0,inf,1", "duration_s", "'inf' is not a number"),
    ("b,,10,1", "submit_s", "is blank"),
    ("b,0,NaN,1", "duration_s", "'NaN' is not a number"),
    ("b,0,10,", "num_gpus", "is blank"),
    (",0,10,1", "job_id", "is blank"),
    ("b,0,0,1", "duration_s", "duration_s must be > 0"),
    ("b,0,-5,1", "duration_s", "duration_s must be > 0"),
    ("b,-1,10,1", "submit_s", "submit_s must be >= 0"),
    ("b,0,10,2.5", "num_gpus", "num_gpus must be a positive whole number, got '2.5'"),
    ("b,0,10,0", "num_gpus", "num_gpus must be a positive whole number"),
    ("b,0,10,-2", "num_gpus", "num_gpus must be a positive whole number"),
    ("b,0,10,1,0,,,,", "deadline_s", "deadline_s must be > 0"),
    ("b,0,10,1,-3,,,,", "deadline_s", "deadline_s must be > 0"),
    ("b,0,10,1,soon,,,,", "deadline_s", "'soon' is not a number"),
    ("b,0,10,1,,maybe,,,", "preemptible", "'maybe' is not true/false/1/0/yes/no"),
    ("b,0,10,1,,,-1,,", "power_w", "power_w must be >= 0"),
    ("b,0,10,1,,,lots,,", "power_w", "'lots' is not a number"),
    ("b,0,10,1,,,,,1.5", "priority", "priority must be a whole number, got '1.5'"),
    ("b,0,10,1,,,,,high", "priority", "'high' is not a number"),
])
def test_a_bad_value_names_file_line_and_column(tmp_path: Path, row: str, field: str, problem: str) -> None:
    header = f"{HEADER},deadline_s,preemptible,power_w,team,priority"
    path = jobs_file(tmp_path, ["a,0,10,1,,,,,", row, "c,0,10,1,,,,,"], header=header)
    message = error_of(path)
    assert message.startswith(f"{path} line 3: {field}")
    assert problem in message


def test_duplicate_job_id_names_both_lines(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,1,1", "b,0,1,1", "c,0,1,1", "b,5,1,1"])
    message = error_of(path)
    assert f"{path} line 5: job_id" in message and "'b'" in message and "line 3" in message


def test_the_first_bad_row_is_reported(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, [f"j{i},0,{-1 if i in (40, 70) else 5},1" for i in range(100)])
    assert f"{path} line 42:" in error_of(path)


@pytest.mark.parametrize("slack", [0.5, 0.0, float("nan")])
def test_default_slack_below_one_is_refused(tmp_path: Path, slack: float) -> None:
    message = error_of(jobs_file(tmp_path, ["a,0,1,1"]), default_slack=slack)
    assert "--default-slack must be >= 1" in message


def test_default_power_must_not_be_negative(tmp_path: Path) -> None:
    assert "--power-w" in error_of(jobs_file(tmp_path, ["a,0,1,1"]), default_power_w=-1)


# --- check_fits ---------------------------------------------------------------------------------


def test_check_fits_passes_a_trace_that_fits(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,10,8", "b,86399,10,2"])
    check_fits(load_jobs(path), path, gpus=8, trace_end_s=86400.0)


def test_a_job_wider_than_the_cluster(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,10,4", "b,0,10,12", "c,0,10,1"])
    with pytest.raises(SimulationInputError) as caught:
        check_fits(load_jobs(path), path, gpus=8, trace_end_s=86400.0)
    message = str(caught.value)
    assert f"{path} line 3: num_gpus" in message
    assert "needs 12 GPUs but the cluster has 8; pass --gpus 12 or more" in message


def test_the_wider_fix_covers_the_widest_job(tmp_path: Path) -> None:
    path = write(tmp_path / "pai.csv", ["arrival_time,length,cpus", "0,10,3", "0,10,4"])
    with pytest.raises(SimulationInputError) as caught:
        check_fits(load_jobs(path, columns=PAI), path, gpus=2, trace_end_s=86400.0, columns=PAI)
    message = str(caught.value)
    assert f"{path} line 2: cpus (num_gpus)" in message
    assert "pass --gpus 4 or more (line 3 needs 4)" in message


def test_a_job_submitted_after_the_price_trace_ends(tmp_path: Path) -> None:
    path = jobs_file(tmp_path, ["a,0,10,1", "b,100,10,1", "c,172800,10,1", "d,999999,10,1"])
    with pytest.raises(SimulationInputError) as caught:
        check_fits(load_jobs(path), path, gpus=8, trace_end_s=172800.0)
    message = str(caught.value)
    assert f"{path} line 4: submit_s" in message
    assert "2.00 days" in message and "job trace is longer than the price trace" in message
