"""Benchmark loading a job trace: `factory simulate`'s `load_jobs` on 10,000 rows.

Beside the raw I/O floor measured in the same process, interleaved (A, B, A, B, ...) so both see the
same noise: `pandas.read_csv` of the same file as strings, without the checks and conversions. Target:
`load_jobs` under 0.1 s (a year of jobs loads in no time next to simulating it).

    python bench/job_trace.py [--rows 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from factory.simulation.jobs import load_jobs

TARGET_S = 0.1
HEADER = "job_id,submit_s,duration_s,num_gpus,deadline_s,preemptible,power_w,team,priority"


def write_trace(path: Path, rows: int) -> None:
    """`rows` jobs with every optional column (the same rows the unit test loads)."""
    lines = [HEADER] + [f"j{i},{i * 3},{100 + i % 50},{1 + i % 8},{1000 + i},{'true' if i % 3 else 'no'},"
                        f"{300 + i % 7},t{i % 4},{i % 5}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.csv"
        write_trace(path, args.rows)
        load_jobs(path), pd.read_csv(path, dtype=str)  # warm imports and the page cache
        ours, floor = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            trace = load_jobs(path)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            pd.read_csv(path, dtype=str, keep_default_na=False)
            floor.append(time.perf_counter() - start)
    assert len(trace) == args.rows
    best, base = min(ours), min(floor)
    verdict = "PASS" if best < TARGET_S else "FAIL"
    print(f"load_jobs, {args.rows:,} rows: best {best * 1000:.1f} ms, "
          f"median {statistics.median(ours) * 1000:.1f} ms (pandas.read_csv as strings {base * 1000:.1f} ms: "
          f"x{best / base:.2f})  {verdict} (< {TARGET_S:g} s)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
