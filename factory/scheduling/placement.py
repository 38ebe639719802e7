"""Gang placement: all of a job's workers on nodes with room, or none of them.

Best fit: each worker goes to the node with the fewest free GPUs that still holds it, so large holes
stay open for large workers. Nodes are kept in buckets by their free count, so a placement costs
O(GPUs per node) whatever the number of nodes (a decision on a 10,000-GPU cluster places thousands).
Ties go to the node that entered its bucket first: deterministic for a given input order.
"""

from __future__ import annotations

from collections.abc import Mapping

Placement = tuple[tuple[str, int], ...]


class FreeGpus:
    """Free GPUs per node, with O(1) totals and best-fit lookups."""

    def __init__(self, capacity: Mapping[str, int], free: Mapping[str, int] | None = None) -> None:
        """`capacity`: GPUs per node; `free`: those not in use (default: all of them)."""
        self._capacity = dict(capacity)
        free = capacity if free is None else free
        self._free = {node: min(cap, max(0, free.get(node, 0))) for node, cap in sorted(capacity.items())}
        self.total = sum(self._free.values())
        self._largest = max(self._capacity.values(), default=0)
        # bucket[k]: nodes with exactly k free GPUs (a dict used as an insertion-ordered set)
        self._buckets: list[dict[str, None]] = [{} for _ in range(self._largest + 1)]
        for node, gpus in self._free.items():
            self._buckets[gpus][node] = None

    def __getitem__(self, node: str) -> int:
        return self._free.get(node, 0)

    def place(self, num_gpus: int, worker_gpus: int) -> Placement | None:
        """Where every worker of a job would go, or None if the whole gang does not fit. No change."""
        if num_gpus > self.total or worker_gpus <= 0 or num_gpus % worker_gpus or worker_gpus > self._largest:
            return None
        if num_gpus == worker_gpus:  # one worker: the common case, without a trial placement
            node = self._best_fit(worker_gpus)
            return None if node is None else ((node, worker_gpus),)
        taken: list[tuple[str, int]] = []
        for _ in range(num_gpus // worker_gpus):
            node = self._best_fit(worker_gpus)
            if node is None:
                self.give_back(tuple(taken))
                return None
            self._move(node, -worker_gpus)
            taken.append((node, worker_gpus))
        self.give_back(tuple(taken))
        merged: dict[str, int] = {}
        for node, gpus in taken:
            merged[node] = merged.get(node, 0) + gpus
        return tuple(sorted(merged.items()))

    def take(self, placement: Placement) -> None:
        """Mark `placement`'s GPUs used."""
        for node, gpus in placement:
            self._move(node, -gpus)

    def give_back(self, placement: Placement) -> None:
        """Return `placement`'s GPUs."""
        for node, gpus in placement:
            self._move(node, gpus)

    def nodes_short_of(self, gpus: int, limit: int) -> list[str]:
        """Nodes large enough for a worker of `gpus` that lack free GPUs for it, the fewest missing first,
        among the first `limit` nodes looked at (smaller ones count too: the cost stays bounded)."""
        nodes: list[str] = []
        looked = 0
        for count in range(min(gpus, self._largest + 1) - 1, -1, -1):
            for node in self._buckets[count]:
                if looked >= limit:
                    return nodes
                looked += 1
                if self._capacity[node] >= gpus:
                    nodes.append(node)
        return nodes

    def _best_fit(self, gpus: int) -> str | None:
        for count in range(gpus, self._largest + 1):
            bucket = self._buckets[count]
            if bucket:
                return next(iter(bucket))
        return None

    def _move(self, node: str, delta: int) -> None:
        if node not in self._free:  # a node that left the cluster: its GPUs are gone
            return
        before = self._free[node]
        # Clamped: a node can be over-committed when its capacity shrank under running jobs.
        after = min(self._capacity[node], max(0, before + delta))
        del self._buckets[before][node]
        self._free[node] = after
        self._buckets[after][node] = None
        self.total += after - before
