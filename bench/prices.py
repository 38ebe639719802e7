"""Benchmark the price feed: loading a year of ERCOT 15-minute prices, and answering forecasts.

Three measurements, in one run, each beside a baseline measured in the same process:

  (a) load   -- the four ERCOT 2024 quarter files into one series (`load_trace`, with the options of
                configs/examples/ercot-2024.yaml), beside `pandas.read_csv` of the same files with
                the same skiprows and no parsing or checks (the raw I/O floor). Target: under 1 s.
  (b) query  -- forecasts at random "now" instants over the year (seeded): `forecast_arrays` (the
                core, numpy arrays) and `forecast` (plus the pydantic `Forecast` the actor returns),
                beside a naive lookup of the same values by slicing the array. Target: under 1 ms.
  (c) tariff -- `forecast` of the built-in time-of-use tariff (no data files needed).

Loads and queries are interleaved with their baselines (A, B, A, B, ...) so both see the same noise;
each query is timed alone (`perf_counter_ns`), reported as median and p99.

    python bench/prices.py [--queries 10000] [--hours 24] [--loads 5] [--seed 0]

The ERCOT files (US EIA, public domain) are read from ../shared/data beside the checkout; without
them (a) and (b) are skipped.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from factory.config import load_config
from factory.price_config import PricesConfig
from factory.prices.feed import PriceFeed
from factory.prices.tariff import TariffProvider, load_tariff
from factory.prices.trace import LoadedTrace, TraceProvider, load_trace

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = REPO_ROOT / "configs" / "examples" / "ercot-2024.yaml"
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "prices" / "ercot_rt_lmp_hubs_2024"
TARGET_LOAD_S, TARGET_QUERY_US = 1.0, 1000.0


def timed_us(fn: Callable[[], Any]) -> float:
    started = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - started) / 1000


def stats(samples: list[float]) -> tuple[float, float]:
    """Median and p99."""
    return statistics.median(samples), float(np.percentile(samples, 99))


def line(name: str, samples: list[float], target_us: float | None = None) -> float:
    median, p99 = stats(samples)
    goal = f"  ({median / target_us * 100:.1f}% of the 1 ms target)" if target_us else ""
    print(f"  {name:<38} median {median:8.1f} µs   p99 {p99:8.1f} µs{goal}")
    return median


def bench_load(prices: PricesConfig, loads: int) -> LoadedTrace:
    paths = sorted(DATA_DIR.glob("ercot_lmp_rt_15min_hubs_2024Q*.csv"))
    full, raw = [], []
    for _ in range(loads):
        started = time.perf_counter()
        trace = load_trace(prices.trace)
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        rows = sum(len(pd.read_csv(path, skiprows=prices.trace.skip_rows)) for path in paths)
        raw.append(time.perf_counter() - started)
    series = trace.price
    assert series is not None
    load_s, raw_s = statistics.median(full), statistics.median(raw)
    print(f"(a) load {len(paths)} files, {rows:,} rows -> {len(series):,} intervals of "
          f"{series.interval_s / 60:g} min (median of {loads} interleaved rounds)")
    print(f"  load_trace (parse, checks, grid):  {load_s * 1000:8.1f} ms  "
          f"({load_s / TARGET_LOAD_S * 100:.0f}% of the 1 s target)")
    print(f"  pandas.read_csv only (baseline):   {raw_s * 1000:8.1f} ms")
    print(f"  load/raw read: {load_s / raw_s:.2f}x" + (f"; notes: {trace.notes}" if trace.notes else ""))
    return trace


def bench_queries(prices: PricesConfig, trace: LoadedTrace, queries: int, hours: float, seed: int) -> None:
    provider = TraceProvider(trace, prices.known_horizon_h)
    feed = PriceFeed(provider, prices)  # prices only: the example's carbon series is another file
    series = provider.trace.price
    assert series is not None
    values, start_s, step_s = series.values, series.start_s, series.interval_s
    count = math.ceil(hours * 3600 / step_s) + 1  # the interval holding now, then `hours` more
    nows = np.random.default_rng(seed).uniform(start_s, series.end_s - hours * 3600, queries).tolist()
    feed.forecast(nows[0], hours)  # warm up imports and caches
    base, arrays, full = [], [], []
    for now_s in nows:
        base.append(timed_us(lambda i=int((now_s - start_s) // step_s): values[i:i + count]))
        arrays.append(timed_us(lambda n=now_s: feed.forecast_arrays(n, hours)))
        full.append(timed_us(lambda n=now_s: feed.forecast(n, hours)))
    points = len(feed.forecast(nows[0], hours).points)
    print(f"(b) {queries:,} forecast queries, {hours:g} h ahead ({points} intervals), random now "
          f"over the year, seed {seed}")
    base_us = line("naive slice values[i:i+n] (baseline)", base)
    core_us = line("forecast_arrays (core)", arrays, TARGET_QUERY_US)
    full_us = line("forecast (+ pydantic Forecast)", full, TARGET_QUERY_US)
    print(f"  forecast_arrays/slice: {core_us / base_us:.0f}x   forecast/forecast_arrays: "
          f"{full_us / core_us:.1f}x")


def bench_tariff(queries: int, hours: float, seed: int) -> None:
    feed = PriceFeed(TariffProvider(load_tariff(None)), PricesConfig())
    year = pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    nows = np.random.default_rng(seed).uniform(year, year + 366 * 86400, queries).tolist()
    feed.forecast(nows[0], hours)
    arrays = [timed_us(lambda n=n: feed.forecast_arrays(n, hours)) for n in nows]
    full = [timed_us(lambda n=n: feed.forecast(n, hours)) for n in nows]
    points = len(feed.forecast(nows[0], hours).points)
    print(f"(c) built-in tariff, {queries:,} forecast queries, {hours:g} h ahead ({points} intervals)")
    line("forecast_arrays (core)", arrays, TARGET_QUERY_US)
    line("forecast (+ pydantic Forecast)", full, TARGET_QUERY_US)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10000, help="ERCOT forecast queries")
    parser.add_argument("--hours", type=float, default=24.0, help="forecast length (hours)")
    parser.add_argument("--loads", type=int, default=5, help="interleaved load rounds (median)")
    parser.add_argument("--tariff-queries", type=int, default=1000, help="tariff forecast queries")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random query instants")
    args = parser.parse_args()
    if min(args.queries, args.loads, args.tariff_queries) < 1 or args.hours <= 0:
        parser.error("--queries, --loads and --tariff-queries must be at least 1, --hours > 0")
    overhead_us = statistics.median(timed_us(lambda: None) for _ in range(1000))
    print(f"timer overhead (empty call, in every figure below): {overhead_us:.2f} µs")
    if len(list(DATA_DIR.glob("ercot_lmp_rt_15min_hubs_2024Q*.csv"))) == 4:
        prices = load_config(CONFIG, env={}, cwd=REPO_ROOT).prices
        trace = bench_load(prices, args.loads)
        bench_queries(prices, trace, args.queries, args.hours, args.seed)
    else:
        print(f"(a), (b) skipped: the four ERCOT 2024 files are not in {DATA_DIR} "
              "(US EIA ERCOT 15-min RT LMP, public domain; not shipped with the project)")
    bench_tariff(args.tariff_queries, args.hours, args.seed)


if __name__ == "__main__":
    main()
