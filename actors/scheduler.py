"""SchedulerActor: the control plane's entry point. Scheduling arrives with issues 5 and 6.

Today it answers what a client needs to know about the factory (`factory_info`), owns the audit
log's read and write API (so every component writes audit events through one place), and runs the
control loop: every `scheduler.interval_s` wall seconds it reconciles the cluster with the factory
(a node that joined, e.g. by autoscaling, gets its telemetry actor; a node that left is recorded as
down, audited, and its telemetry actor removed). A failed step is recorded as `last_error` and the
loop goes on.

Node records (`node_records()`) live in the scheduler's durable state, so a node that went down is
still reported after a restart of the scheduler or of the factory. They belong to one Ray cluster
(known by its head node): on a new cluster, e.g. after `factory down` stopped the local head and
`up` started another, the records start afresh; the old nodes were taken down on purpose, not lost.
"""

from __future__ import annotations

from typing import Any

from actors.control_plane import ControlPlaneActor
from factory.store import AuditEvent
from factory.version import __version__


class SchedulerActor(ControlPlaneActor):
    """Control-plane entry point; later the live scheduler."""

    kind = "scheduler"

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        try:  # at once, so that `factory nodes` right after `up` reflects this cluster
            self._track_nodes()
        except Exception as exc:  # noqa: BLE001 - the control loop tries again
            self._record_error(exc)
        self._stopping = self._run_every(self.config.scheduler.interval_s, self.reconcile, "control-loop")

    def reconcile(self) -> list[str]:
        """Run one control step: track nodes, give new ones an agent; return the agents created."""
        # Imported here: factory.control_plane imports this module to create the actor.
        from factory.control_plane import (
            ensure_telemetry_actors,
            factory_actor_names,
            remove_telemetry_actors,
        )

        assert self.clock is not None
        down = self._track_nodes()
        present = set(factory_actor_names())
        if down is not None:  # only nodes recorded as down lose their agent: written ahead
            remove_telemetry_actors(down, present)
        handles = ensure_telemetry_actors(
            self.config.model_dump(mode="json"), self.clock.spec().model_dump(), existing=present
        )
        created = sorted(handles)
        for name in created:
            self.audit("actor.created", name, reason="node joined")
        return created

    def node_records(self) -> dict[str, dict[str, Any]]:
        """Every node this factory has seen: {node_id: {node_ip, state alive|down, since_s}}."""
        return dict(self._state.get("nodes", {}))

    def _track_nodes(self) -> list[str] | None:
        """Record nodes that appeared or went down; return every node recorded down (None: no view).

        The records are written before any agent is removed (write ahead, then act).
        """
        from factory.control_plane import cluster_nodes

        assert self.clock is not None
        now_s = self.clock.now_s()
        seen = {node["node_id"]: node for node in cluster_nodes()}
        head = next((node_id for node_id, node in seen.items() if node["alive"] and node["is_head"]), None)
        if head is None:  # the head is not in Ray's view for a moment: decide nothing now
            return None
        same_cluster = head == self._state.get("nodes_head")
        records: dict[str, dict[str, Any]] = dict(self._state.get("nodes", {})) if same_cluster else {}
        went_down = []
        for node_id, node in seen.items():
            record = records.get(node_id)
            if node["alive"] and record is None:
                records[node_id] = {"node_ip": node["node_ip"], "state": "alive", "since_s": now_s}
            elif not node["alive"] and (record is None or record["state"] == "alive"):
                records[node_id] = {"node_ip": node["node_ip"], "state": "down", "since_s": now_s}
                went_down.append(node_id)
        for node_id, record in records.items():  # Ray forgets dead nodes after a while
            if node_id not in seen and record["state"] == "alive":
                records[node_id] = {**record, "state": "down", "since_s": now_s}
                went_down.append(node_id)
        down = sorted(node_id for node_id, record in records.items() if record["state"] == "down")
        if same_cluster and records == self._state.get("nodes"):
            return down
        state = {**self._state, "nodes": records, "nodes_head": head}
        with self.store.transaction():
            self.store.put_actor_state(self.name, state)
            for node_id in went_down:
                self.audit("node.down", node_id, node_ip=records[node_id]["node_ip"])
        self._state = state
        return down

    def stop_control_loop(self, timeout_s: float = 30.0) -> bool:
        """Stop the control loop and wait for a step in progress; return whether it stopped.

        `factory down` calls this first, so that no step re-creates an actor being removed.
        """
        self._stopping.set()
        self._loop_thread.join(timeout_s)
        return not self._loop_thread.is_alive()

    def factory_info(self) -> dict[str, Any]:
        """Version, effective config, state store and clock of this factory."""
        assert self.clock is not None
        return {
            "version": __version__,
            "config": self.config.model_dump(mode="json"),
            "config_fingerprint": self.config.fingerprint(),
            "state_store": {
                "path": self.store.location,
                "schema_version": self.store.schema_version(),
            },
            "clock": self.clock.spec().model_dump(),
        }

    def record_audit(
        self, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None
    ) -> int:
        """Append an audit event on behalf of `actor` (a user or component); return its id."""
        return self.audit(action, subject, actor=actor, **(detail or {}))

    def audit_log(self, limit: int = 100, action_prefix: str | None = None) -> list[AuditEvent]:
        """The newest `limit` audit events, oldest first."""
        return self.store.list_audit(limit=limit, action_prefix=action_prefix)
