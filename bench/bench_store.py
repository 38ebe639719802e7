"""Benchmark the state store's write path: what a durable commit costs and how to avoid paying it.

Every committed transaction of the store is durable (WAL + synchronous=FULL), which costs at least
one fsync per commit. Two comparisons, measured side by side in one run on temp files:

  (a) commits   -- N audit appends each in its own transaction vs the same N batched in one
                   `store.transaction()`. Batching pays the fsync once, so it is the way to write
                   many events at once.
  (b) journal   -- the factory's settings (WAL, synchronous=FULL, via `SQLiteStore`) vs SQLite's
                   default rollback journal (journal_mode=DELETE, synchronous=FULL) on a raw
                   `sqlite3` connection with the same schema, each insert in its own transaction.
                   Rollback mode writes and fsyncs a journal file and the database per commit;
                   WAL appends to one log.

Absolute rates depend on the disk and the machine's noise, so the results are ratios of runs
interleaved in rounds (A, B, C, A, B, C, ...), each reported as the median over the rounds.

    python bench/bench_store.py [--events N] [--rounds R] [--dir PATH]

`--dir` chooses where the temp files go (default: the system temp dir); put it on the disk the
factory's state_dir will live on.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from factory.store import AuditEvent, SQLiteStore
from factory.store.migrations import MIGRATIONS

INSERT_SQL = (
    "INSERT INTO audit_log (time_s, actor, action, subject, detail_json) VALUES (?, ?, ?, ?, ?)"
)


def make_events(count: int) -> list[AuditEvent]:
    """Audit events shaped like the scheduler's: small, with a short detail dict."""
    return [
        AuditEvent(time_s=1_720_000_000.0 + i, actor="scheduler", action="job.placed",
                   subject=f"job-{i}", detail={"node": "node-1", "gpus": 1, "price_eur_mwh": 61.5})
        for i in range(count)
    ]


def store_single(path: Path, events: list[AuditEvent]) -> float:
    """Seconds to append each event in its own transaction (WAL, synchronous=FULL)."""
    store = SQLiteStore(path)
    try:
        started = time.perf_counter()
        for event in events:
            store.append_audit(event)
        return time.perf_counter() - started
    finally:
        store.close()


def store_batched(path: Path, events: list[AuditEvent]) -> float:
    """Seconds to append all events in one transaction (WAL, synchronous=FULL)."""
    store = SQLiteStore(path)
    try:
        started = time.perf_counter()
        with store.transaction():
            for event in events:
                store.append_audit(event)
        return time.perf_counter() - started
    finally:
        store.close()


def rollback_single(path: Path, events: list[AuditEvent]) -> float:
    """Seconds to insert each event in its own transaction, rollback journal, synchronous=FULL."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        mode = connection.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode.lower() != "delete":
            raise RuntimeError(f"rollback journal unavailable on {path} (got {mode!r})")
        connection.execute("PRAGMA synchronous=FULL")
        for migration in MIGRATIONS:
            connection.execute("BEGIN IMMEDIATE")
            for statement in migration.statements:
                connection.execute(statement)
            connection.execute("COMMIT")
        started = time.perf_counter()
        for event in events:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(INSERT_SQL, (event.time_s, event.actor, event.action,
                                            event.subject, json.dumps(event.detail)))
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


Trial = Callable[[Path, list[AuditEvent]], float]


def run(events: int, rounds: int, directory: Path | None) -> dict[str, float]:
    """Events/s per variant, the median of `rounds` interleaved repetitions on fresh files."""
    trials: dict[str, Trial] = {
        "single": store_single, "batched": store_batched, "rollback": rollback_single,
    }
    batch = make_events(events)
    seconds: dict[str, list[float]] = {name: [] for name in trials}
    with tempfile.TemporaryDirectory(prefix="bench_store_", dir=directory) as tmp:
        for round_no in range(rounds):
            for name, trial in trials.items():
                seconds[name].append(trial(Path(tmp) / f"{name}-{round_no}.db", batch))
    return {name: events / statistics.median(times) for name, times in seconds.items()}


def main() -> None:
    """Parse flags, run the interleaved rounds, print rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000,
                        help="audit events per trial (default: 1000, < 20 s on 2 cores)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temp files")
    args = parser.parse_args()
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")

    rates = run(args.events, args.rounds, args.dir)
    print(f"{args.events} audit events per trial, median of {args.rounds} interleaved rounds")
    print(f"  WAL, one transaction per event:       {rates['single']:>12,.0f} events/s")
    print(f"  WAL, all events in one transaction:   {rates['batched']:>12,.0f} events/s")
    print(f"  rollback journal, one per event:      {rates['rollback']:>12,.0f} events/s")
    print(f"batched/single commits: {rates['batched'] / rates['single']:.1f}x")
    print(f"WAL/rollback journal (one commit per event): {rates['single'] / rates['rollback']:.1f}x")


if __name__ == "__main__":
    main()
