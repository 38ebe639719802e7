"""Request statistics of an endpoint: counted by each replica, summed and windowed by the ServingActor.

Nomenclature:
  counts  -- cumulative counters of one version on one replica since it started:
             {"requests", "errors" (5xx), "rejected" (4xx), "latency_ms_sum", "buckets"}, where
             `buckets[i]` counts answers that took at most `LATENCY_BOUNDS_MS[i]` (the last: more).
  totals  -- counts summed over every replica that ever reported, for one endpoint.

Invariants:
  * Totals only grow: a replica's report adds what changed since its previous one; a replica that
    restarted (its counters went down) adds its counts whole.
  * Windowed figures are differences of two totals snapshots, so they are exact over replicas;
    latency quantiles are interpolated within a histogram bucket (Prometheus' way).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LATENCY_BOUNDS_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000,
                     2000, 5000, 10000, 30000)
COUNTERS = ("requests", "errors", "rejected")


def empty_counts() -> dict[str, Any]:
    """Counts of a version that answered nothing yet."""
    return {"requests": 0, "errors": 0, "rejected": 0, "latency_ms_sum": 0.0,
            "buckets": [0] * (len(LATENCY_BOUNDS_MS) + 1)}


def record(counts: dict[str, Any], latency_ms: float, status: int) -> None:
    """Count one answered request in `counts` (in place)."""
    counts["requests"] += 1
    if status >= 500:
        counts["errors"] += 1
    elif status >= 400:
        counts["rejected"] += 1
    counts["latency_ms_sum"] += latency_ms
    counts["buckets"][bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1


def subtract(newer: dict[str, Any], older: dict[str, Any] | None) -> dict[str, Any]:
    """`newer - older`, counter by counter (older None: newer itself)."""
    if older is None:
        return {**newer, "buckets": list(newer["buckets"])}
    return {**{key: newer[key] - older[key] for key in COUNTERS},
            "latency_ms_sum": newer["latency_ms_sum"] - older["latency_ms_sum"],
            "buckets": [a - b for a, b in zip(newer["buckets"], older["buckets"], strict=True)]}


def add_into(total: dict[str, Any], delta: dict[str, Any]) -> None:
    """`total += delta` (in place)."""
    for key in COUNTERS:
        total[key] += delta[key]
    total["latency_ms_sum"] += delta["latency_ms_sum"]
    total["buckets"] = [a + b for a, b in zip(total["buckets"], delta["buckets"], strict=True)]


def quantile_ms(buckets: list[int], q: float) -> float | None:
    """The q-quantile of latency from histogram buckets, linear within its bucket; None if empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = LATENCY_BOUNDS_MS[index - 1] if index > 0 else 0.0
            if index == len(LATENCY_BOUNDS_MS):  # beyond the last bound: all we know is "more"
                return float(LATENCY_BOUNDS_MS[-1])
            high = LATENCY_BOUNDS_MS[index]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


def summary(counts: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
    """What a person reads about a version: requests, error rate, p50/p99, rate over `seconds`."""
    requests = counts["requests"]
    return {
        "requests": requests,
        "errors": counts["errors"],
        "rejected": counts["rejected"],
        "error_rate": counts["errors"] / requests if requests else 0.0,
        "p50_ms": quantile_ms(counts["buckets"], 0.50),
        "p99_ms": quantile_ms(counts["buckets"], 0.99),
        "rate_per_s": requests / seconds if seconds else None,
    }


@dataclass
class EndpointTotals:
    """One endpoint's totals per version, fed by replica reports, with snapshots for windows."""

    window_s: float
    totals: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last_report: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _last_seen_s: dict[str, float] = field(default_factory=dict)
    _snapshots: deque[tuple[float, dict[str, dict[str, Any]]]] = field(default_factory=deque)

    def add_report(self, replica_id: str, by_version: dict[str, dict[str, Any]], now_s: float = 0.0) -> None:
        """Fold a replica's cumulative counts (sent at `now_s`) into the totals."""
        previous = self._last_report.get(replica_id, {})
        for version, counts in by_version.items():
            older = previous.get(version)
            if older is not None and counts["requests"] < older["requests"]:
                older = None  # the replica restarted: its counters began again
            add_into(self.totals.setdefault(version, empty_counts()), subtract(counts, older))
        self._last_report[replica_id] = {version: subtract(counts, None)  # a copy: the caller may go on
                                         for version, counts in by_version.items()}
        self._last_seen_s[replica_id] = now_s

    def forget_silent(self, now_s: float, silence_s: float) -> None:
        """Drop the last reports of replicas silent for `silence_s` (gone: their counts stay counted)."""
        for replica_id, seen_s in list(self._last_seen_s.items()):
            if now_s - seen_s > silence_s:
                del self._last_seen_s[replica_id]
                self._last_report.pop(replica_id, None)

    def mark(self) -> dict[str, dict[str, Any]]:
        """A copy of the totals now, to measure from later (`since`)."""
        return {version: subtract(counts, None) for version, counts in self.totals.items()}

    def since(self, mark: dict[str, dict[str, Any]], version: str) -> dict[str, Any]:
        """What `version` answered after `mark` was taken."""
        now = self.totals.get(version, empty_counts())
        return subtract(now, mark.get(version))

    def snapshot(self, now_s: float) -> None:
        """Keep the totals at `now_s`; snapshots older than the window go."""
        self._snapshots.append((now_s, self.mark()))
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now_s - self.window_s:
            self._snapshots.popleft()

    def window(self, now_s: float) -> tuple[float, dict[str, dict[str, Any]]]:
        """(seconds covered, counts per version) over the last `window_s` (or since the first snapshot)."""
        if not self._snapshots:
            return 0.0, {}
        start_s, oldest = self._snapshots[0]
        return max(now_s - start_s, 1e-9), {version: subtract(counts, oldest.get(version))
                                            for version, counts in self.totals.items()}


def combined(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several versions' counts."""
    total = empty_counts()
    for item in counts:
        add_into(total, item)
    return total
