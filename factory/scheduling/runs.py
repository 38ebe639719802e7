"""Runs in a plan: of True in a mask of intervals, or of consecutive intervals (each run after the first
is a pause and a resume)."""

from __future__ import annotations

import numpy as np


def run_bounds(chosen: np.ndarray) -> tuple[list[int], list[int]]:
    """First and last positions of each run of True in `chosen`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], chosen.astype(np.int8), [0]])))
    return edges[0::2].tolist(), (edges[1::2] - 1).tolist()


def count_runs(intervals: np.ndarray) -> int:
    """Unbroken runs of consecutive intervals in `intervals`, which must ascend and be distinct."""
    count = len(intervals)
    if not count:
        return 0
    if int(intervals[-1]) - int(intervals[0]) + 1 == count:  # ascending and distinct: one unbroken run
        return 1
    return 1 + int(((intervals[1:] - intervals[:-1]) > 1).sum())
