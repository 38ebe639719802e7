"""Reading price traces: the right intervals, or one line naming the file and row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factory.errors import PriceDataError
from factory.price_config import TraceConfig
from factory.prices.trace import load_trace


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def hourly(path: Path, rows: list[tuple[str, str]], header: str = "timestamp,price_per_mwh") -> str:
    return write(path, [header, *(f"{t},{p}" for t, p in rows)])


def test_default_columns_with_offsets_and_negative_prices(tmp_path: Path) -> None:
    path = hourly(tmp_path / "p.csv", [("2024-07-01T00:00:00+02:00", "10.5"),
                                       ("2024-07-01T01:00:00+02:00", "-3.25"),
                                       ("2024-07-01T02:00:00+02:00", "7")])
    trace = load_trace(TraceConfig(paths=[path]))
    assert trace.price is not None
    assert trace.price.start_s == ts("2024-06-30T22:00:00")  # the offset is honoured
    assert trace.price.interval_s == 3600
    assert trace.price.values.tolist() == [10.5, -3.25, 7.0]
    assert trace.carbon is None and trace.notes == []


def test_carbon_column_comes_along_when_present(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", ["timestamp,price_per_mwh,carbon_g_per_kwh",
                                      "2024-07-01T00:00:00Z,10,300", "2024-07-01T00:15:00Z,11,290"])
    trace = load_trace(TraceConfig(paths=[path]))
    assert trace.price.interval_s == 900
    assert trace.carbon.values.tolist() == [300.0, 290.0]


def test_naive_local_times_use_the_configured_timezone(tmp_path: Path) -> None:
    path = hourly(tmp_path / "p.csv", [("2024-07-01 00:00", "1"), ("2024-07-01 01:00", "2")])
    trace = load_trace(TraceConfig(paths=[path], timezone="America/Chicago"))
    assert trace.price.start_s == ts("2024-07-01T05:00:00")  # CDT is UTC-5


def test_a_repeated_local_hour_at_the_autumn_change_is_placed_in_order(tmp_path: Path) -> None:
    rows = [("2024-11-03 00:00", "1"), ("2024-11-03 01:00", "2"), ("2024-11-03 01:00", "3"),
            ("2024-11-03 02:00", "4")]
    trace = load_trace(TraceConfig(paths=[hourly(tmp_path / "p.csv", rows)], timezone="America/Chicago"))
    assert trace.price.start_s == ts("2024-11-03T05:00:00")
    assert trace.price.values.tolist() == [1, 2, 3, 4]  # 01:00 CDT, then 01:00 CST: 4 real hours


def test_a_nonexistent_local_time_names_the_line_and_the_fix(tmp_path: Path) -> None:
    rows = [("2024-03-10 01:00", "1"), ("2024-03-10 02:00", "2"), ("2024-03-10 03:00", "3")]
    path = hourly(tmp_path / "p.csv", rows)
    with pytest.raises(PriceDataError, match=r"p\.csv line 3: local time 2024-03-10 02:00 .*evened"):
        load_trace(TraceConfig(paths=[path], timezone="America/Chicago"))
    evened = load_trace(TraceConfig(paths=[path], timezone="America/Chicago", local_time_dst="evened"))
    assert evened.price.values.tolist() == [1.0, 3.0]  # 01:00 CST and 03:00 CDT are adjacent hours
    assert "dropped" in evened.notes[0]


def test_title_lines_and_interval_ending_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "ercot-like.csv", [
        "Some market report", "description line", "source line",
        "UTC Timestamp (Interval Ending),Hub LMP",
        "2024-01-01 06:15:00,12.5", "2024-01-01 06:30:00,13.0",
    ])
    trace = load_trace(TraceConfig(paths=[path], skip_rows=3,
                                   timestamp_column="UTC Timestamp (Interval Ending)",
                                   price_column="Hub LMP", timestamp_marks="end"))
    assert trace.price.start_s == ts("2024-01-01T06:00:00")  # the first interval ends at 06:15
    assert trace.price.values.tolist() == [12.5, 13.0]


def test_title_lines_without_skip_rows_say_so(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", ["A title", "timestamp,price_per_mwh", "2024-01-01T00:00Z,1"])
    with pytest.raises(PriceDataError, match=r"t\.csv: no column 'timestamp'.*set skip_rows"):
        load_trace(TraceConfig(paths=[path]))


def test_space_prefixed_headers_match(tmp_path: Path) -> None:
    path = write(tmp_path / "pjm-like.csv", ["Date, Zonal COMED price", "2013-01-01 00:00:00,25.4",
                                             "2013-01-01 01:00:00,23.5"])
    trace = load_trace(TraceConfig(paths=[path], timestamp_column="Date", price_column="Zonal COMED price"))
    assert trace.price.values.tolist() == [25.4, 23.5]


def test_a_misspelt_column_suggests_the_nearest(tmp_path: Path) -> None:
    path = hourly(tmp_path / "p.csv", [("2024-01-01T00:00Z", "1")], header="timestamp,price_per_mw")
    with pytest.raises(PriceDataError, match=r"no column 'price_per_mwh' \(prices.trace.price_column\), "
                                             r"did you mean 'price_per_mw'\?"):
        load_trace(TraceConfig(paths=[path]))


@pytest.mark.parametrize(("rows", "message"), [
    ([("2024-07-01T00:00Z", "1"), ("yesterday noon", "2")],
     r"p\.csv line 3: cannot parse timestamp 'yesterday noon'"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "abc")],
     r"p\.csv line 3: 'abc' in column 'price_per_mwh' is not a number"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "nan")],
     r"p\.csv line 3: 'nan' in column 'price_per_mwh' is not a number"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "-inf")],
     r"p\.csv line 3: '-inf' in column 'price_per_mwh' is not a number"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "-100001")],
     r"p\.csv line 3: -100001 in column 'price_per_mwh' is beyond \+-100,000 per MWh"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "2"), ("2024-07-01T01:00Z", "3")],
     r"p\.csv line 4: duplicate timestamp 2024-07-01 01:00 UTC \(also line 3\)"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T02:00Z", "2"), ("2024-07-01T01:00Z", "3")],
     r"p\.csv line 4: timestamp 2024-07-01 01:00 UTC is earlier than line 3"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "2"), ("2024-07-01T02:07Z", "3")],
     r"p\.csv line 4: timestamp 2024-07-01 02:07 UTC is off the 60-min grid"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01 01:00", "2")],
     r"p\.csv line 3: timestamp '2024-07-01 01:00' lacks a UTC offset, unlike line 2"),
    ([("2024-07-01T00:00Z", "1"), ("", "2")], r"p\.csv line 3: empty timestamp"),
    ([("2024-07-01T00:00Z", "1"), ("2024-07-01T00:07Z", "2")], r"mostly 7 min apart"),
])
def test_bad_rows_are_one_line_naming_file_and_line(tmp_path: Path, rows: list[tuple[str, str]],
                                                    message: str) -> None:
    with pytest.raises(PriceDataError, match=message) as caught:
        load_trace(TraceConfig(paths=[hourly(tmp_path / "p.csv", rows)]))
    assert "\n" not in str(caught.value)


def test_gaps_are_forward_filled_and_reported_or_refused(tmp_path: Path) -> None:
    rows = [("2024-07-01T00:00Z", "10"), ("2024-07-01T01:00Z", ""), ("2024-07-01T02:00Z", "12"),
            ("2024-07-01T05:00Z", "15")]
    path = hourly(tmp_path / "p.csv", rows)
    trace = load_trace(TraceConfig(paths=[path]))
    # 01:00 is blank, 03:00 and 04:00 have no row: each takes the price before it, nothing shifts.
    assert trace.price.values.tolist() == [10, 10, 12, 12, 12, 15]
    assert "3 price intervals forward-filled (2 without a row, 1 blank)" in trace.notes[0]
    assert "line 3 has a blank price" in trace.notes[0]
    with pytest.raises(PriceDataError, match=r"line 3 has a blank price; set prices.trace.gaps: fill"):
        load_trace(TraceConfig(paths=[path], gaps="error"))
    without_blank = hourly(tmp_path / "q.csv", [rows[0], rows[2], rows[3]])
    with pytest.raises(PriceDataError, match=r"no row for 2024-07-01 01:00 UTC"):
        load_trace(TraceConfig(paths=[without_blank], gaps="error", resolution_min=60))


def test_quarters_in_several_files_form_one_series_in_time_order(tmp_path: Path) -> None:
    q2 = hourly(tmp_path / "b.csv", [("2024-04-01T00:00Z", "2"), ("2024-04-01T01:00Z", "3")])
    q1 = hourly(tmp_path / "a.csv", [("2024-03-31T22:00Z", "0"), ("2024-03-31T23:00Z", "1")])
    trace = load_trace(TraceConfig(paths=[q2, q1]))
    assert trace.price.start_s == ts("2024-03-31T22:00:00")
    assert trace.price.values.tolist() == [0, 1, 2, 3]
    glob_trace = load_trace(TraceConfig(paths=[str(tmp_path / "*.csv")]))
    assert glob_trace.price.values.tolist() == [0, 1, 2, 3]


def test_overlapping_files_are_refused(tmp_path: Path) -> None:
    a = hourly(tmp_path / "a.csv", [("2024-04-01T00:00Z", "2"), ("2024-04-01T01:00Z", "3")])
    b = hourly(tmp_path / "b.csv", [("2024-04-01T01:00Z", "9"), ("2024-04-01T02:00Z", "4")])
    with pytest.raises(PriceDataError,
                       match=r"b\.csv line 2: starts at 2024-04-01 01:00 UTC, before .*a\.csv"):
        load_trace(TraceConfig(paths=[a, b]))


def test_parquet_reads_like_csv_with_rows_numbered(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": pd.to_datetime(["2024-07-01T00:00Z", "2024-07-01T00:05Z",
                                                       "2024-07-01T00:10Z"]),
                          "price_per_mwh": [1.0, -2.0, 3.0]})
    frame.to_parquet(tmp_path / "p.parquet")
    trace = load_trace(TraceConfig(paths=[str(tmp_path / "p.parquet")]))
    assert trace.price.interval_s == 300 and trace.price.values.tolist() == [1, -2, 3]
    frame.iloc[::-1].to_parquet(tmp_path / "r.parquet")
    with pytest.raises(PriceDataError, match=r"r\.parquet row 2: timestamp .* is earlier than row 1"):
        load_trace(TraceConfig(paths=[str(tmp_path / "r.parquet")]))


def test_missing_files_and_shift_days(tmp_path: Path) -> None:
    with pytest.raises(PriceDataError, match=r"prices.trace.paths: no file matches .*nothing-\*\.csv"):
        load_trace(TraceConfig(paths=[str(tmp_path / "nothing-*.csv")]))
    path = hourly(tmp_path / "p.csv", [("2022-01-03T00:00Z", "1"), ("2022-01-03T01:00Z", "2")])
    shifted = load_trace(TraceConfig(paths=[path], shift_days=728))
    start = datetime.fromtimestamp(shifted.price.start_s, tz=UTC)
    assert start == datetime(2024, 1, 1, tzinfo=UTC) and start.weekday() == 0  # Monday to Monday
    assert np.array_equal(shifted.price.values, [1.0, 2.0])


def test_timestamps_that_would_shift_or_blow_up_the_series_are_refused(tmp_path: Path) -> None:
    fractional = hourly(tmp_path / "f.csv", [("1719792000", "1"), ("1719795600.5", "2")])
    with pytest.raises(PriceDataError,
                       match=r"f\.csv line 3: timestamp 1719795600.5 is not whole Unix seconds"):
        load_trace(TraceConfig(paths=[fractional]))
    millis = hourly(tmp_path / "m.csv", [("1719792000000", "1"), ("1719795600000", "2")])
    with pytest.raises(PriceDataError, match=r"m\.csv line 2: .*milliseconds"):
        load_trace(TraceConfig(paths=[millis]))
    typo = hourly(tmp_path / "t.csv", [("2024-07-01T00:00Z", "1"), ("2024-07-01T01:00Z", "2"),
                                       ("2042-07-01T02:00Z", "3")])  # 2042 for 2024: not a gap to fill
    with pytest.raises(PriceDataError, match=r"t\.csv line 4: no rows for 6574 days .*mistyped"):
        load_trace(TraceConfig(paths=[typo]))
    unix = hourly(tmp_path / "u.csv", [("1719792000", "1"), ("1719795600", "2")])
    assert load_trace(TraceConfig(paths=[unix])).price.start_s == 1719792000


def test_files_of_one_series_must_carry_the_same_columns(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", ["timestamp,price_per_mwh,carbon_g_per_kwh", "2024-07-01T00:00Z,1,300"])
    b = hourly(tmp_path / "b.csv", [("2024-07-01T01:00Z", "2")])
    with pytest.raises(PriceDataError,
                       match=r"b\.csv: has columns for price, but .*a\.csv has price and carbon"):
        load_trace(TraceConfig(paths=[a, b], resolution_min=60))
