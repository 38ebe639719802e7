"""The live half of GPU power caps: the caps the policy wants, set on the nodes and restored after.

Each control step's `Decisions.power_caps_w` (W per GPU, for running jobs) is sent to the agent of every
node that holds a capped job's GPUs or still has a GPU this factory capped; each agent caps its GPUs held by
those jobs and restores the others (`factory.telemetry.power_caps`). Which nodes may have capped GPUs is
recorded in the store (actor state `power-caps`) before any agent is asked (write ahead: a node about to be
capped is recorded with no GPUs yet), and what each node answered it was left with after, so that a
scheduler restarted after a crash, or after an answer that never came, still knows which nodes to put right:
a GPU capped for a job that ended, or for an event that ended, is restored by the next step.

Invariants:
  * No caps wanted and none recorded: no agent is asked anything.
  * A node that does not answer keeps its record, so it is asked again next step; a node not alive any more
    loses it (its GPUs leave the factory's hands with it; one that comes back under a new Ray node id is
    not known to have been capped).
  * A node leaves the record only on an answer that it has no GPU capped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from factory.store import StateStore
from factory.telemetry.models import NodeStatus, PowerCaps

STATE_NAME = "power-caps"
# (node ids, caps by job) -> {node id: PowerCaps, or anything else for a node that did not answer}
AskNodes = Callable[[list[str], dict[str, float]], Mapping[str, Any]]


class PowerCapKeeper:
    """Sets the policy's caps on the nodes and remembers, durably, which GPUs are left capped."""

    def __init__(self, store: StateStore, ask: AskNodes) -> None:
        self.store = store
        self._ask = ask
        recorded = (store.get_actor_state(STATE_NAME) or {}).get("nodes", {})
        self.capped_w: dict[str, dict[int, float]] = {
            node: {int(index): float(limit_w) for index, limit_w in gpus.items()}
            for node, gpus in recorded.items()}
        self.last_error: str | None = None
        self.caps_w: dict[str, float] = {}  # the caps last asked for: job -> W per GPU

    @staticmethod
    def min_cap_share(nodes: Sequence[NodeStatus], nominal_w: float) -> float | None:
        """The lowest cap every GPU of the facility accepts, as a share of `nominal_w`; None: no caps."""
        floors = [node.power_cap_floor_w for node in nodes if node.gpus]
        if not floors or nominal_w <= 0 or any(floor is None for floor in floors):
            return None
        return min(1.0, max(floor for floor in floors if floor is not None) / nominal_w)

    def keep(self, caps_w: Mapping[str, float], placements: Mapping[str, Collection[str]],
             alive: Collection[str]) -> dict[str, dict[int, float]]:
        """Cap the GPUs of the jobs in `caps_w` (placed on `placements[job]` nodes), restore every other GPU
        this factory capped; return what each node was left capped with."""
        self.caps_w = dict(caps_w)
        wanted = {node for job in caps_w for node in placements.get(job, ())}
        nodes = sorted((wanted | set(self.capped_w)) & set(alive))
        capped = {node: gpus for node, gpus in self.capped_w.items() if node in alive}
        errors = []
        if nodes:
            for node in nodes:
                capped.setdefault(node, {})
            self._save(capped)  # written ahead: each node asked stays recorded until it answers
            for node, answer in self._ask(nodes, dict(caps_w)).items():
                if not isinstance(answer, PowerCaps):
                    errors.append(f"node {node}: no answer ({answer})")
                    continue
                if answer.error:
                    errors.append(f"node {node}: {answer.error}")
                capped.pop(node, None)
                if answer.capped_w:
                    capped[node] = dict(answer.capped_w)
        self.last_error = "; ".join(errors) or None
        self._save(capped)
        return capped

    def _save(self, capped: dict[str, dict[int, float]]) -> None:
        """Record what each node may have capped, if it changed."""
        if capped == self.capped_w:
            return
        self.store.put_actor_state(STATE_NAME, {"nodes": {
            node: {str(index): limit_w for index, limit_w in gpus.items()} for node, gpus in capped.items()}})
        self.capped_w = {node: dict(gpus) for node, gpus in capped.items()}
