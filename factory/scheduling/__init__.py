"""Scheduling policies: pure functions of a `Snapshot` that return `Decisions`.

The live SchedulerActor and `factory simulate` call the same policy objects (design property 1).
"""

from __future__ import annotations

from factory.scheduling.fifo import FifoPolicy
from factory.scheduling.model import Decisions, JobView, Phase, Policy, PriceOutlook, Snapshot
from factory.scheduling.price_aware import PriceAwarePolicy
from factory.scheduling.priority import PriorityPolicy

POLICY_NAMES = ("price-aware", "fifo", "priority")
DEFAULT_POLICY = "price-aware"


def make_policy(name: str) -> FifoPolicy | PriorityPolicy | PriceAwarePolicy:
    """The policy called `name` (one of POLICY_NAMES) with its default settings."""
    if name == "fifo":
        return FifoPolicy()
    if name == "priority":
        return PriorityPolicy()
    if name == "price-aware":
        return PriceAwarePolicy()
    raise ValueError(f"unknown policy '{name}'; choose one of {', '.join(POLICY_NAMES)}")


__all__ = ["DEFAULT_POLICY", "POLICY_NAMES", "Decisions", "FifoPolicy", "JobView", "Phase", "Policy",
           "PriceAwarePolicy", "PriceOutlook", "PriorityPolicy", "Snapshot", "make_policy"]
