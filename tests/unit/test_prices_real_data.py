"""The real market and carbon files in ../shared/data load with the documented example configs.

Skipped with a reason where the data is absent: the project reads public data, it does not ship it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from factory.config import load_config
from factory.errors import PriceDataError
from factory.price_config import CarbonTraceConfig, TraceConfig
from factory.prices.sources import build_feed
from factory.prices.trace import load_trace
from tests.support import REPO_ROOT

DATA = REPO_ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "prices").is_dir(),
                                reason=f"real price data not found at {DATA} (see docs/prices.md)")
EXAMPLES = REPO_ROOT / "configs" / "examples"


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def feed_of(example: str):  # noqa: ANN201
    return build_feed(load_config(EXAMPLES / example, env={}, cwd=REPO_ROOT).prices)


def test_ercot_quarters_form_one_gapless_year_of_15_minute_prices() -> None:
    feed = feed_of("ercot-2024.yaml")
    price = feed.provider.trace.price
    assert len(price) == 35136 and price.interval_s == 900 and feed.provider.notes() == []
    assert price.start_s == utc(2024, 1, 1, 6) and price.end_s == utc(2025, 1, 1, 6)  # Central midnight
    assert price.values.min() < 0  # negative prices survive
    # Interval-ending stamps: the row stamped 06:15 UTC is the interval from 06:00.
    assert feed.price(utc(2024, 1, 1, 6, 5)).price_per_mwh == 12.58
    # The spring DST night has no hole and no doubled interval in UTC.
    assert price.window(utc(2024, 3, 10, 6), utc(2024, 3, 10, 10)).values.size == 16
    carbon = feed.price(utc(2024, 7, 1, 12)).carbon_g_per_kwh
    assert carbon is not None and 100 < carbon < 900  # ERCOT 2022 laid on 2024


def test_caiso_keeps_23_and_25_hour_days_at_the_dst_changes() -> None:
    feed = feed_of("caiso-2024.yaml")
    price = feed.provider.trace.price
    assert len(price) == 8784 and feed.provider.notes() == []
    pacific_day = {  # local midnight to midnight, in UTC
        "spring": (utc(2024, 3, 10, 8), utc(2024, 3, 11, 7)),
        "autumn": (utc(2024, 11, 3, 7), utc(2024, 11, 4, 8)),
    }
    assert len(price.window(*pacific_day["spring"])) == 23
    assert len(price.window(*pacific_day["autumn"])) == 25
    # The two 01:00 hours of 3 November are two intervals with their own (interpolated) prices.
    assert feed.price(utc(2024, 11, 3, 8, 30)).price_per_mwh == pytest.approx(32.60971833333333)
    assert feed.price(utc(2024, 11, 3, 9, 30)).price_per_mwh == pytest.approx(30.751465)


def test_pjm_needs_evened_dst_and_says_so_otherwise() -> None:
    feed = feed_of("pjm-comed-2013-2018.yaml")
    price = feed.provider.trace.price
    assert len(price) == 52416 and price.start_s == utc(2013, 1, 1, 6)
    notes = " ".join(feed.provider.notes())
    assert "6 rows at local times that do not exist" in notes and "6 price intervals forward-filled" in notes
    assert feed.price(utc(2013, 1, 1, 6, 30)).price_per_mwh == pytest.approx(25.464211)
    strict = TraceConfig(paths=[str(DATA / "prices/pjm_comed_dayahead_2013_2018.csv")],
                         timestamp_column="Date",
                         price_column="Zonal COMED price", timezone="America/Chicago")
    with pytest.raises(PriceDataError, match=r"pjm_comed_dayahead_2013_2018\.csv line 1636: local time "
                                             r"2013-03-10 02:00 .*local_time_dst: evened"):
        load_trace(strict)


@pytest.mark.parametrize(("region", "blanks"), [("CISO", 3), ("ERCO", 0), ("PJM", 23)])
def test_eia930_carbon_files_load_with_blanks_filled_and_reported(region: str, blanks: int) -> None:
    trace = load_trace(CarbonTraceConfig(paths=[str(DATA / f"carbon/eia930_2022/{region}_2022_hourly.csv")],
                                         carbon_column="avg_CI"), "prices.carbon")
    assert len(trace.carbon) == 8760 and trace.carbon.start_s == utc(2022, 1, 1)
    assert not np.isnan(trace.carbon.values).any()
    if blanks:
        filled = f"{blanks} carbon intensity intervals forward-filled (0 without a row, {blanks} blank)"
        assert filled in trace.notes[0]
    else:
        assert trace.notes == []


def test_the_horizon_holds_on_real_data() -> None:
    feed = feed_of("ercot-2024.yaml")
    now_s = utc(2024, 8, 20, 12, 7)
    forecast = feed.forecast(now_s, hours=48)
    truth = feed.provider.trace.price
    for point in forecast.points:
        actual = truth.value_at(point.start_s)
        if point.known:
            assert point.price_per_mwh == actual and point.start_s <= now_s + 24 * 3600
        else:
            assert point.start_s > now_s + 24 * 3600


def test_examples_reference_files_that_exist() -> None:
    for example in sorted(EXAMPLES.glob("*.yaml")):
        config = load_config(example, env={}, cwd=REPO_ROOT)
        for trace in (config.prices.trace, config.prices.carbon):
            for pattern in (trace.paths if trace else []):
                assert list(Path(pattern).parent.glob(Path(pattern).name)), f"{example.name}: {pattern}"
