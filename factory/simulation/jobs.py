"""Reading a job trace (the JOBS CSV of `factory simulate`) into a `JobTrace`.

Nomenclature:
  line      -- a row's line number in the CSV (1-based, counting the header), so line 2 is the first
               job; every error names one, so it can be found with any editor.
  field     -- a `JobTrace` column (`submit_s`); `column` -- the CSV header name it is read from,
               the field's own name unless `JobColumns` renames it (the PAI trace's `arrival_time`).

The CSV contract: required columns `job_id`, `submit_s`, `duration_s`, `num_gpus`; optional
`deadline_s` (blank: `default_slack * duration_s`), `preemptible` (true/false/1/0/yes/no, blank: true),
`power_w` per GPU (blank: `default_power_w`), `team` (blank: ""), `priority` (whole number, blank: 0).
Other columns are ignored.

Invariants:
  * A trace either loads whole, in file order, meeting `JobTrace`'s invariants, or the load fails
    with one line naming the file, the line, the column and the fix. Nothing is clipped or dropped,
    except blank lines at the end of the file.
  * Job `i` of a loaded trace is on line `i + 2` (blank lines inside the file are refused), so
    `check_fits` can name lines from the trace alone.
  * Without a `job_id` column (and no `JobColumns.job_id` renaming), job ids are `row-<n>`, n the
    1-based data row.
  * Column names match exactly, else with surrounding spaces ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from factory.errors import SimulationInputError
from factory.simulation.trace import JobTrace
from factory.suggest import closest

_DAY_S = 86400.0
_FIRST_LINE = 2  # the header is line 1
_MAX_WHOLE = 2.0**53  # larger floats are not exact integers
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
REQUIRED = ("job_id", "submit_s", "duration_s", "num_gpus")

# The `factory simulate` option that renames each field's column; named in "no column" errors.
COLUMN_OPTIONS = {
    "job_id": "--job-id-column",
    "submit_s": "--submit-column",
    "duration_s": "--duration-column",
    "num_gpus": "--gpus-column",
    "deadline_s": "--deadline-column",
    "preemptible": "--preemptible-column",
    "power_w": "--power-column",
    "team": "--team-column",
    "priority": "--priority-column",
}


@dataclass(frozen=True)
class JobColumns:
    """The CSV column each `JobTrace` field is read from; by default the field's own name."""

    job_id: str = "job_id"
    submit_s: str = "submit_s"
    duration_s: str = "duration_s"
    num_gpus: str = "num_gpus"
    deadline_s: str = "deadline_s"
    preemptible: str = "preemptible"
    power_w: str = "power_w"
    team: str = "team"
    priority: str = "priority"

    def label(self, field_name: str) -> str:
        """The field as the user knows it: its column, and the field too when renamed."""
        column = getattr(self, field_name).strip()
        return column if column == field_name else f"{column} ({field_name})"

    def renamed(self, field_name: str) -> bool:
        """Whether the user named a column for `field_name` (so it must exist)."""
        return getattr(self, field_name).strip() != field_name


@dataclass
class _Rows:
    """One file's cells as stripped strings, and which CSV column each present field reads."""

    path: str
    frame: pd.DataFrame
    found: dict[str, str]
    columns: JobColumns

    def where(self, i: int) -> str:
        return f"{self.path} line {i + _FIRST_LINE}"

    def text(self, field_name: str) -> pd.Series:
        return self.frame[self.found[field_name]]

    def fail(self, i: int, field_name: str, problem: str) -> SimulationInputError:
        return SimulationInputError(f"{self.where(i)}: {self.columns.label(field_name)} {problem}")


def load_jobs(path: str | Path, *, default_slack: float = 2.0, default_power_w: float = 700.0,
              columns: JobColumns = JobColumns()) -> JobTrace:
    """Read the job trace at `path`; see the module docstring for the contract and the errors.

    Args:
        path: the CSV file.
        default_slack: a job without a `deadline_s` must finish within this many times its duration
            after its submission; at least 1.
        default_power_w: draw per GPU (unit: W) of a job without a `power_w`.
        columns: the CSV column of each field, for files with another layout.

    Raises:
        SimulationInputError: one line naming the file, line and column, and the fix.
    """
    if not default_slack >= 1:  # also refuses NaN
        raise SimulationInputError(f"--default-slack must be >= 1, got {default_slack:g}: a job without "
                                   "deadline_s gets default_slack x its duration to finish")
    if not (default_power_w >= 0 and np.isfinite(default_power_w)):
        raise SimulationInputError(f"--power-w must be a number >= 0, got {default_power_w:g}")
    rows = _read(str(path), columns)
    count = len(rows.frame)
    job_id = _job_ids(rows)
    submit_s = _numbers(rows, "submit_s")
    _refuse(rows, "submit_s", submit_s < 0, "must be >= 0 (seconds after the start of the price trace)",
            submit_s)
    duration_s = _numbers(rows, "duration_s")
    _refuse(rows, "duration_s", duration_s <= 0, "must be > 0 (seconds of run time)", duration_s)
    _refuse(rows, "duration_s", duration_s < 1, "must be at least 1 (seconds of run time)", duration_s)
    num_gpus = _whole(rows, "num_gpus", minimum=1, what="a positive whole number")
    if "deadline_s" in rows.found:
        deadline_s = _numbers(rows, "deadline_s", required=False)
        _refuse(rows, "deadline_s", deadline_s <= 0, "must be > 0 (seconds after submit_s; leave it blank "
                f"for {default_slack:g} x duration_s)", deadline_s)
        deadline_s = np.where(np.isnan(deadline_s), default_slack * duration_s, deadline_s)
    else:
        deadline_s = default_slack * duration_s
    preemptible = _flags(rows, "preemptible") if "preemptible" in rows.found else np.ones(count, dtype=bool)
    if "power_w" in rows.found:
        power_w = _numbers(rows, "power_w", required=False)
        _refuse(rows, "power_w", power_w < 0, "must be >= 0 (watts per GPU)", power_w)
        power_w = np.where(np.isnan(power_w), float(default_power_w), power_w)
    else:
        power_w = np.full(count, float(default_power_w))
    team = (rows.text("team").to_numpy(dtype=object) if "team" in rows.found
            else np.full(count, "", dtype=object))
    priority = (_whole(rows, "priority", minimum=-_MAX_WHOLE, what="a whole number", required=False)
                if "priority" in rows.found else np.zeros(count, dtype=np.int64))
    return JobTrace(job_id=job_id, submit_s=submit_s, duration_s=duration_s, num_gpus=num_gpus,
                    deadline_s=deadline_s, preemptible=preemptible, power_w=power_w, team=team,
                    priority=priority)


def check_fits(trace: JobTrace, path: str | Path, *, gpus: int, trace_end_s: float,
               columns: JobColumns = JobColumns()) -> None:
    """Refuse a trace the simulation cannot run: a job wider than the cluster, or one submitted late.

    Args:
        trace: the jobs, as `load_jobs` read them from `path` (job `i` on line `i + 2`).
        path: the CSV file, for the messages.
        gpus: the simulated cluster's GPUs.
        trace_end_s: end of the price trace, in seconds after time zero (its start).
        columns: the columns the trace was read with, to name fields as the user knows them.

    Raises:
        SimulationInputError: naming the file, the first offending line, the column and the fix.
    """
    if gpus < 1:
        raise SimulationInputError(f"--gpus must be >= 1, got {gpus}")

    def wider(i: int) -> str:
        need, most = int(trace.num_gpus[i]), int(trace.num_gpus.max())
        widest_line = int(np.argmax(trace.num_gpus)) + _FIRST_LINE
        widest = "" if most == need else f" (line {widest_line} needs {most})"
        return (f"{columns.label('num_gpus')}: job '{trace.job_id[i]}' needs {need} GPUs but the cluster "
                f"has {gpus}; pass --gpus {most} or more{widest}")

    refuse_first(path, trace.num_gpus > gpus, wider)
    refuse_first(path, trace.submit_s >= trace_end_s, lambda i: (
        f"{columns.label('submit_s')} {trace.submit_s[i]:g} is at or after the end of the price trace "
        f"({trace_end_s / _DAY_S:.2f} days = {trace_end_s:g} s): the job trace is longer than the price "
        "trace; replay a longer price trace or drop the later jobs"))


def refuse_first(path: str | Path, bad: np.ndarray, message: Callable[[int], str]) -> None:
    """Raise for the first job where `bad` holds: `<path> line <n>: <message(i)>` (job i on line i + 2)."""
    rows = np.flatnonzero(bad)
    if rows.size:
        i = int(rows[0])
        raise SimulationInputError(f"{path} line {i + _FIRST_LINE}: {message(i)}")


def _read(path: str, columns: JobColumns) -> _Rows:
    """The file's cells as stripped strings (trailing blank lines dropped), and its field columns."""
    file = Path(path)
    if not file.exists():
        raise SimulationInputError(f"{path}: no such file; pass the job trace CSV with --jobs")
    if not file.is_file():
        raise SimulationInputError(f"{path}: is not a file; pass the job trace CSV with --jobs")
    try:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False, skip_blank_lines=False,
                            index_col=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise SimulationInputError(f"{path}: the file is empty; a job trace needs a header line "
                                   f"({','.join(REQUIRED)}) and one line per job") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            want, line, saw = found.groups()
            raise SimulationInputError(f"{path} line {line}: {saw} fields but the header has {want}; "
                                       "quote values that contain commas") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SimulationInputError(f"{path}: cannot read as CSV: {first}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SimulationInputError(f"{path}: cannot read: {exc}") from None
    frame = frame.fillna("")
    spans = np.zeros(len(frame), dtype=bool)
    for name in frame.columns:
        spans |= frame[name].str.contains("\n", regex=False).to_numpy()
        frame[name] = frame[name].str.strip()
    if spans.any():  # rows before the first such row are one line each, so its line is exact
        line = int(np.flatnonzero(spans)[0]) + _FIRST_LINE
        raise SimulationInputError(f"{path} line {line}: a quoted value spans several lines; write each "
                                   "job on one line")
    blank = (frame == "").all(axis=1).to_numpy()
    end = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
    frame = frame.iloc[:end]
    if frame.empty:
        raise SimulationInputError(f"{path}: no jobs after the header line; add one line per job")
    inner = np.flatnonzero(blank[:end])
    if inner.size:
        raise SimulationInputError(f"{path} line {int(inner[0]) + _FIRST_LINE}: blank line between jobs; "
                                   "delete it")
    header = [str(name) for name in frame.columns]
    found: dict[str, str] = {}
    for spec in fields(JobColumns):
        column = _column(header, getattr(columns, spec.name))
        if column is not None:
            found[spec.name] = column
        elif spec.name in REQUIRED[1:] or columns.renamed(spec.name):
            raise _missing(path, header, spec.name, getattr(columns, spec.name))
    return _Rows(path, frame, found, columns)


def _column(header: list[str], name: str) -> str | None:
    if name in header:
        return name
    return next((column for column in header if column.strip() == name.strip()), None)


def _missing(path: str, header: list[str], field_name: str, name: str) -> SimulationInputError:
    """'no column' naming the header's columns and the option that renames it, with a likely fix."""
    names = [column.strip() for column in header]
    lower = {column.lower(): column for column in names}
    close = closest(name.strip().lower(), lower)
    option = COLUMN_OPTIONS[field_name]
    renamed = name.strip() != field_name
    shown = ", ".join(repr(column) for column in names[:12]) + (" ..." if len(names) > 12 else "")
    what = f"'{name.strip()}' ({field_name}, from {option})" if renamed else f"'{name.strip()}'"
    fix = (f"did you mean '{lower[close]}'? (pass {option} {lower[close]})" if close is not None
           else f"pass {option} NAME to read {field_name} from another column")
    return SimulationInputError(f"{path} line 1: no column {what}; the header has {shown}; {fix}")


def _job_ids(rows: _Rows) -> np.ndarray:
    if "job_id" not in rows.found:
        return np.array([f"row-{n}" for n in range(1, len(rows.frame) + 1)], dtype=object)
    text = rows.text("job_id")
    blank = (text == "").to_numpy()
    if blank.any():
        raise rows.fail(int(np.flatnonzero(blank)[0]), "job_id", "is blank; every job needs an id")
    repeated = text.duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero((text == text.iloc[i]).to_numpy())[0])
        raise rows.fail(i, "job_id", f"'{text.iloc[i]}' is a duplicate (also on line {first + _FIRST_LINE}); "
                                     "job ids must be unique")
    return text.to_numpy(dtype=object)


def _numbers(rows: _Rows, field_name: str, required: bool = True) -> np.ndarray:
    """Finite floats; NaN for a blank cell of an optional field; anything else names its line."""
    text = rows.text(field_name)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    blank = (text == "").to_numpy()
    bad = ~np.isfinite(values) if required else ~np.isfinite(values) & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if blank[i]:
            raise rows.fail(i, field_name, "is blank; every job needs one")
        fix = "" if required else " (leave it blank for the default)"
        raise rows.fail(i, field_name, f"'{text.iloc[i]}' is not a number{fix}")
    return values


def _refuse(rows: _Rows, field_name: str, bad: np.ndarray, rule: str, values: np.ndarray) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.fail(i, field_name, f"{rule}, got {values[i]:g}")


def _whole(rows: _Rows, field_name: str, *, minimum: float, what: str, required: bool = True) -> np.ndarray:
    """int64 from whole numbers (3.0 is 3, 2.5 is an error); 0 for a blank optional cell."""
    values = _numbers(rows, field_name, required)
    blank = np.isnan(values)
    bad = ~blank & ((values != np.floor(values)) | (values < minimum) | (np.abs(values) > _MAX_WHOLE))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.fail(i, field_name, f"must be {what}, got '{rows.text(field_name).iloc[i]}'")
    return np.where(blank, 0, values).astype(np.int64)


def _flags(rows: _Rows, field_name: str) -> np.ndarray:
    """Booleans from true/false/1/0/yes/no (any case); a blank cell is true."""
    text = rows.text(field_name).str.lower()
    false = text.isin(_FALSE).to_numpy()
    bad = ~(false | text.isin(_TRUE).to_numpy() | (text == "").to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.fail(i, field_name, f"'{rows.text(field_name).iloc[i]}' is not true/false/1/0/yes/no "
                                       "(leave it blank for true)")
    return ~false
