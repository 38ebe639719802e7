"""The policy the live scheduler runs: `scheduler.policy` with the settings of the `scheduler` section.

`factory.scheduling.make_policy` builds a policy with its defaults (what `factory simulate` measures
unless told otherwise); the live factory passes what its config says on top, so that the simulator
and the SchedulerActor still run the same code.
"""

from __future__ import annotations

from factory.config import SchedulerConfig
from factory.scheduling import FifoPolicy, PriceAwarePolicy, PriorityPolicy, make_policy


def live_policy(settings: SchedulerConfig) -> FifoPolicy | PriorityPolicy | PriceAwarePolicy:
    """The policy named by `settings.policy`; price-aware with `settings.max_pauses_per_day`."""
    if settings.policy == "price-aware":
        return PriceAwarePolicy(max_pauses_per_day=settings.max_pauses_per_day)
    return make_policy(settings.policy)
