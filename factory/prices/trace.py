"""Reading price and carbon series from CSV or Parquet files into `IntervalSeries`.

Nomenclature:
  line  -- a CSV row's line number in its file (1-based, counting title lines and the header), so
           an error can be found with any editor; Parquet rows are numbered from 1 as `row`.

Invariants:
  * Every row lands on the interval its timestamp names, or the load fails with the file and the
    row: unparseable timestamps, non-numeric values, duplicate or out-of-order timestamps, rows off
    the series' grid, overlapping files. Nothing is ever shifted silently.
  * The documented repairs are reported in `LoadedTrace.notes`: missing intervals and blank cells
    forward-filled (`gaps: fill`), rows at a nonexistent local time dropped (`local_time_dst: evened`).
  * Column names match exactly, else with surrounding spaces ignored (PJM's " Zonal COMED price").
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from factory.errors import PriceDataError
from factory.price_config import ALLOWED_RESOLUTIONS_MIN, TraceConfig
from factory.prices.provider import PriceProvider
from factory.prices.series import PRICE_LIMIT_PER_MWH, IntervalSeries, utc_label
from factory.suggest import did_you_mean

DEFAULT_CARBON_COLUMN = "carbon_g_per_kwh"
_OFFSET_SUFFIX = r"(?:Z|[+-]\d{2}:?\d{2})$"
_DAY_S = 86400
_DROPPED = np.iinfo(np.int64).min  # marks a row dropped at a nonexistent local time
MAX_FILLED_GAP_S = 7 * _DAY_S  # a longer hole is a typo in a timestamp far more often than data
_MAX_UNIX_S = 1e11  # larger numbers are milliseconds, not seconds


@dataclass(frozen=True)
class LoadedTrace:
    """The series read from a trace's files, and what was repaired on the way."""

    price: IntervalSeries | None
    carbon: IntervalSeries | None
    files: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class _FileRows:
    """One file's rows after parsing: times (Unix s, UTC), value columns, and their line numbers."""

    path: str
    row_word: str
    lines: np.ndarray
    times_s: np.ndarray
    values: dict[str, np.ndarray]

    def where(self, i: int) -> str:
        return f"{self.path} {self.row_word} {int(self.lines[i])}"


def load_trace(spec: TraceConfig, what: str = "prices.trace") -> LoadedTrace:
    """Read every file of `spec` into one price series (and carbon series, if it has one).

    `what` names the config section in errors ("prices.trace", "prices.carbon").
    """
    paths = _expand(spec.paths, what)
    notes: list[str] = []
    files = sorted((_read_file(path, spec, what, notes) for path in paths),
                   key=lambda rows: rows.times_s[0] if len(rows.times_s) else 0)
    kinds = list(files[0].values)
    for rows in files:
        if list(rows.values) != kinds:
            raise PriceDataError(f"{rows.path}: has columns for {' and '.join(rows.values)}, but "
                                 f"{files[0].path} has {' and '.join(kinds)}; one series needs the same")
    resolution_s = _resolution_s(files, spec, what)
    for rows in files:
        if spec.timestamp_marks == "end":
            rows.times_s = rows.times_s - resolution_s
        rows.times_s = rows.times_s + spec.shift_days * _DAY_S
    for previous, current in zip(files, files[1:], strict=False):
        if current.times_s[0] <= previous.times_s[-1]:
            raise PriceDataError(
                f"{current.where(0)}: starts at {utc_label(current.times_s[0])}, before {previous.path} "
                f"ends ({utc_label(previous.times_s[-1])}); the files of one series must not overlap"
            )
    _refuse_long_gaps(files)
    start_s = int(files[0].times_s[0])
    count = int((files[-1].times_s[-1] - start_s) // resolution_s) + 1
    grids = {kind: np.full(count, np.nan) for kind in kinds}
    origin = np.full(count, -1, dtype=np.int64)  # which file row filled each interval (for errors)
    row_base = 0
    for rows in files:
        offset = rows.times_s - start_s
        off_grid = np.flatnonzero(offset % resolution_s)
        if off_grid.size:
            i = int(off_grid[0])
            raise PriceDataError(
                f"{rows.where(i)}: timestamp {utc_label(rows.times_s[i])} is off the "
                f"{resolution_s // 60}-min grid that starts at {utc_label(start_s)}"
            )
        positions = offset // resolution_s
        for kind in kinds:
            grids[kind][positions] = rows.values[kind]
        origin[positions] = row_base + np.arange(len(positions))
        row_base += len(positions)
    series = {
        kind: IntervalSeries(float(start_s), float(resolution_s), _fill_gaps(
            grids[kind], origin, files, kind, spec, what, notes, start_s, resolution_s))
        for kind in kinds
    }
    return LoadedTrace(price=series.get("price"), carbon=series.get("carbon"),
                       files=[rows.path for rows in files], notes=notes)


def _refuse_long_gaps(files: list[_FileRows]) -> None:
    """A hole longer than `MAX_FILLED_GAP_S` is an error naming the row after it, never filled."""
    for number, rows in enumerate(files):
        steps = np.diff(rows.times_s, prepend=files[number - 1].times_s[-1] if number else rows.times_s[0])
        long = np.flatnonzero(steps > MAX_FILLED_GAP_S)
        if long.size:
            i = int(long[0])
            raise PriceDataError(
                f"{rows.where(i)}: no rows for {steps[i] / _DAY_S:.0f} days before its timestamp "
                f"{utc_label(rows.times_s[i])}; is it mistyped? (gaps up to {MAX_FILLED_GAP_S // _DAY_S} "
                "days are filled; split longer breaks into separate traces)"
            )


def _expand(patterns: list[str], what: str) -> list[str]:
    if not patterns:
        raise PriceDataError(f"{what}.paths is empty; list the CSV or Parquet files to replay")
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise PriceDataError(f"{what}.paths: no file matches {pattern}")
        for path in matches:
            if not Path(path).is_file():
                raise PriceDataError(f"{what}.paths: {path} is not a readable file")
        paths.extend(matches)
    return paths


def _read_file(path: str, spec: TraceConfig, what: str, notes: list[str]) -> _FileRows:
    """Read one file's timestamp and value columns, parsed and checked for order."""
    parquet = path.lower().endswith((".parquet", ".pq"))
    try:
        if parquet:
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            columns = list(pd.read_csv(path, skiprows=spec.skip_rows, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise PriceDataError(f"{path}: cannot read as {'Parquet' if parquet else 'CSV'}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    wanted = {"timestamp": _column(columns, spec.timestamp_column, path, f"{what}.timestamp_column", spec)}
    if spec.price_column is not None:
        wanted["price"] = _column(columns, spec.price_column, path, f"{what}.price_column", spec)
    if spec.carbon_column is not None:
        wanted["carbon"] = _column(columns, spec.carbon_column, path, f"{what}.carbon_column", spec)
    elif DEFAULT_CARBON_COLUMN in columns:
        wanted["carbon"] = DEFAULT_CARBON_COLUMN
    try:
        if parquet:
            frame = pd.read_parquet(path, columns=list(dict.fromkeys(wanted.values())))
        else:
            frame = pd.read_csv(path, skiprows=spec.skip_rows, usecols=list(set(wanted.values())),
                                dtype=str, keep_default_na=False, na_values=[""],
                                skip_blank_lines=False)
    except Exception as exc:  # noqa: BLE001
        raise PriceDataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise PriceDataError(f"{path}: no rows after the header")
    first_line = 1 if parquet else spec.skip_rows + 2
    rows = _FileRows(path, "row" if parquet else "line",
                     first_line + np.arange(len(frame)), np.empty(0, np.int64), {})
    rows.times_s = _parse_times(frame[wanted["timestamp"]], rows, spec, notes)
    kept = rows.times_s != _DROPPED
    for kind in ("price", "carbon"):
        if kind in wanted:
            limit = PRICE_LIMIT_PER_MWH if kind == "price" else math.inf
            rows.values[kind] = _parse_values(frame[wanted[kind]], rows, wanted[kind], limit)[kept]
    rows.lines, rows.times_s = rows.lines[kept], rows.times_s[kept]
    _check_order(rows)
    return rows


def _column(columns: list[str], name: str, path: str, field_name: str, spec: TraceConfig) -> str:
    if name in columns:
        return name
    stripped = {column.strip(): column for column in columns}
    if name.strip() in stripped:
        return stripped[name.strip()]
    hint = did_you_mean(name.strip(), stripped)
    titles = " (title lines above the header? set skip_rows)" if spec.skip_rows == 0 and not hint else ""
    shown = ", ".join(repr(column) for column in columns[:12])
    raise PriceDataError(f"{path}: no column '{name}' ({field_name}){hint}; the header has {shown}{titles}")


def _parse_times(raw: pd.Series, rows: _FileRows, spec: TraceConfig, notes: list[str]) -> np.ndarray:
    """Unix seconds (UTC) of every row; `_DROPPED` for rows dropped at a nonexistent local time."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        index = pd.DatetimeIndex(raw)
        if index.isna().any():
            raise PriceDataError(f"{rows.where(int(np.flatnonzero(index.isna())[0]))}: empty timestamp")
        aware = index if index.tz is not None else _localize(index, rows, spec, notes)
        return _unix_s(aware)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype=float)
        if np.isnan(numbers).any():
            raise PriceDataError(f"{rows.where(int(np.flatnonzero(np.isnan(numbers))[0]))}: empty timestamp")
        return _whole_seconds(numbers, rows)
    text = raw.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        raise PriceDataError(f"{rows.where(int(np.flatnonzero(blank.to_numpy())[0]))}: empty timestamp")
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():  # Unix seconds written as text
        return _whole_seconds(numbers.to_numpy(dtype=float), rows)
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")  # naive read as UTC
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PriceDataError(
            f"{rows.where(i)}: cannot parse timestamp '{text.iloc[i]}' (want ISO 8601, e.g. "
            "2024-07-01T13:00:00-05:00, or Unix seconds)"
        )
    has_offset = text.str.contains(_OFFSET_SUFFIX, regex=True).to_numpy(dtype=bool)
    if has_offset.any() and not has_offset.all():
        i = int(np.flatnonzero(has_offset != has_offset[0])[0])
        raise PriceDataError(
            f"{rows.where(i)}: timestamp '{text.iloc[i]}' {'has' if has_offset[i] else 'lacks'} a UTC "
            f"offset, unlike {rows.where(0).split(' ', 1)[1]}; write every row the same way"
        )
    index = pd.DatetimeIndex(parsed)
    if not has_offset[0]:
        index = index.tz_localize(None)  # naive wall-clock times, placed in spec.timezone below
    return _unix_s(index if has_offset[0] else _localize(index, rows, spec, notes))


def _localize(naive: pd.DatetimeIndex, rows: _FileRows, spec: TraceConfig,
              notes: list[str]) -> pd.DatetimeIndex:
    """Place naive local times in `spec.timezone`; see `TraceConfig.local_time_dst`."""
    if spec.timezone == "UTC":
        return naive.tz_localize("UTC")
    if spec.local_time_dst == "evened":
        aware = naive.tz_localize(spec.timezone, ambiguous=np.ones(len(naive), dtype=bool),
                                  nonexistent="NaT")
        dropped = np.flatnonzero(aware.isna())
        if dropped.size:
            notes.append(f"{rows.path}: {dropped.size} rows at local times that do not exist in "
                         f"{spec.timezone} (spring DST change) dropped, first {rows.where(int(dropped[0]))}")
        return aware
    try:
        return naive.tz_localize(spec.timezone, ambiguous="infer", nonexistent="raise")
    except Exception:  # noqa: BLE001 - pandas raises several kinds; name the row instead
        probe = naive.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT")
        i = int(np.flatnonzero(probe.isna())[0]) if probe.isna().any() else 0
        raise PriceDataError(
            f"{rows.where(i)}: local time {naive[i]:%Y-%m-%d %H:%M} does not exist or repeats at a "
            f"DST change in {spec.timezone}; if the file has 24 rows every day, set "
            "local_time_dst: evened"
        ) from None


def _unix_s(aware: pd.DatetimeIndex) -> np.ndarray:
    seconds = aware.tz_convert("UTC").as_unit("s").asi8.copy()
    seconds[aware.isna()] = _DROPPED
    return seconds


def _whole_seconds(numbers: np.ndarray, rows: _FileRows) -> np.ndarray:
    """Unix seconds as integers; fractions or millisecond-sized numbers are errors, not truncated."""
    bad = np.flatnonzero((numbers != np.floor(numbers)) | (np.abs(numbers) >= _MAX_UNIX_S))
    if bad.size:
        i = int(bad[0])
        raise PriceDataError(f"{rows.where(i)}: timestamp {float(numbers[i])!r} is not whole Unix seconds "
                             "(milliseconds? fractions?)")
    return numbers.astype(np.int64)


def _parse_values(raw: pd.Series, rows: _FileRows, column: str, limit: float = math.inf) -> np.ndarray:
    """Floats; NaN for blank cells (a gap); a non-numeric cell, or one beyond +-`limit`, is an error.

    The error names the cell's row.
    """
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = (np.isnan(numbers) & raw.notna().to_numpy()) | np.isinf(numbers)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PriceDataError(f"{rows.where(i)}: '{raw.iloc[i]}' in column '{column.strip()}' is not a number")
    beyond = np.abs(np.nan_to_num(numbers)) > limit
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise PriceDataError(f"{rows.where(i)}: {raw.iloc[i]} in column '{column.strip()}' is beyond "
                             f"+-{limit:,.0f} per MWh; check the units (a price per MWh)")
    return numbers


def _check_order(rows: _FileRows) -> None:
    steps = np.diff(rows.times_s)
    bad = np.flatnonzero(steps <= 0)
    if not bad.size:
        return
    i = int(bad[0]) + 1
    before = rows.where(i - 1).split(" ", 1)[1]
    if steps[i - 1] == 0:
        raise PriceDataError(
            f"{rows.where(i)}: duplicate timestamp {utc_label(rows.times_s[i])} (also {before})")
    raise PriceDataError(
        f"{rows.where(i)}: timestamp {utc_label(rows.times_s[i])} is earlier than {before} "
        f"({utc_label(rows.times_s[i - 1])}); rows must be in time order"
    )


def _resolution_s(files: list[_FileRows], spec: TraceConfig, what: str) -> int:
    if spec.resolution_min is not None:
        return spec.resolution_min * 60
    steps = np.concatenate([np.diff(rows.times_s) for rows in files])
    if not steps.size:
        raise PriceDataError(f"{what}: one row only; set {what}.resolution_min to say how long it lasts")
    values, counts = np.unique(steps, return_counts=True)
    step_s = int(values[np.argmax(counts)])
    if step_s % 60 or step_s // 60 not in ALLOWED_RESOLUTIONS_MIN:
        raise PriceDataError(
            f"{what}: rows are mostly {step_s / 60:g} min apart; the resolution must be "
            f"{', '.join(map(str, ALLOWED_RESOLUTIONS_MIN))} min (set {what}.resolution_min)"
        )
    return step_s


def _fill_gaps(grid: np.ndarray, origin: np.ndarray, files: list[_FileRows], kind: str,
               spec: TraceConfig, what: str, notes: list[str], start_s: int, resolution_s: int) -> np.ndarray:
    """Forward-fill missing intervals and blank cells (and report them), or fail on the first."""
    holes = np.flatnonzero(np.isnan(grid))
    if not holes.size:
        return grid
    first = int(holes[0])
    missing_rows = int(np.count_nonzero(origin[holes] < 0))
    when = utc_label(start_s + first * resolution_s)
    name = "price" if kind == "price" else "carbon intensity"
    if origin[first] >= 0:
        rows, i = _locate(files, int(origin[first]))
        place = f"{rows.where(i)} has a blank {name}"
    else:
        place = f"no row for {when}"
    if spec.gaps == "error" or first == 0:
        fix = ("the first interval cannot be forward-filled" if first == 0
               else f"set {what}.gaps: fill to forward-fill")
        raise PriceDataError(f"{what}: {place}; {fix}")
    last_good = np.where(np.isnan(grid), 0, np.arange(len(grid)))
    np.maximum.accumulate(last_good, out=last_good)
    notes.append(f"{what}: {holes.size} {name} intervals forward-filled ({missing_rows} without a row, "
                 f"{holes.size - missing_rows} blank); first: {place}")
    return grid[last_good]


def _locate(files: list[_FileRows], row_index: int) -> tuple[_FileRows, int]:
    for rows in files:
        if row_index < len(rows.times_s):
            return rows, row_index
        row_index -= len(rows.times_s)
    raise AssertionError("row index beyond the files")



class TraceProvider(PriceProvider):
    """A loaded trace, replayed against the factory clock: known `known_horizon_h` ahead of now.

    A day-ahead market publishes tomorrow's prices around midday, so 24 h is the default horizon;
    set 0 for a real-time market, whose price is known only once its interval has begun.
    """

    kind = "trace"

    def __init__(self, trace: LoadedTrace, known_horizon_h: float) -> None:
        self.trace = trace
        self.known_horizon_s = known_horizon_h * 3600.0

    @property
    def description(self) -> str:  # noqa: D102
        names = [Path(path).name for path in self.trace.files]
        shown = names[0] if len(names) == 1 else f"{len(names)} files ({names[0]} ...)"
        return f"trace {shown}"

    def price(self, start_s: float, end_s: float) -> IntervalSeries | None:  # noqa: D102
        return None if self.trace.price is None else self.trace.price.window(start_s, end_s)

    def carbon(self, start_s: float, end_s: float) -> IntervalSeries | None:  # noqa: D102
        return None if self.trace.carbon is None else self.trace.carbon.window(start_s, end_s)

    def known_until_s(self, now_s: float) -> float:  # noqa: D102
        return now_s + self.known_horizon_s

    def span(self) -> tuple[float, float] | None:  # noqa: D102
        series = self.trace.price if self.trace.price is not None else self.trace.carbon
        return None if series is None else (series.start_s, series.end_s)

    def notes(self) -> list[str]:  # noqa: D102
        return list(self.trace.notes)
