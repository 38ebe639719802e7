"""SchedulerActor: the control plane's entry point and the live scheduler.

It takes job submissions (persisted before they are acknowledged) and runs the scheduling loop: a
`JobController.step` (the policy of `scheduler.policy` over the store's jobs, the cluster's GPUs and
the GridPriceActor's forecast; decisions written ahead, then carried out by JobRunner actors) every
`scheduler.tick_s` real seconds, at every price interval boundary, and at once on a submit, a cancel
or a runner that finished (runners call `wake`). It also answers what a client needs to know about
the factory (`factory_info`), owns the audit log's read and write API (so every component writes
audit events through one place), and runs the control loop: every `scheduler.interval_s` wall
seconds it reconciles the cluster with the factory (a node that joined, e.g. by autoscaling, gets
its telemetry actor; a node that left is recorded as down, audited, and its telemetry actor
removed). A failed step is recorded as `last_error` and the loop goes on.

Node records (`node_records()`) live in the scheduler's durable state, so a node that went down is
still reported after a restart of the scheduler or of the factory. They belong to one Ray cluster
(known by its head node): on a new cluster, e.g. after `factory down` stopped the local head and
`up` started another, the records start afresh; the old nodes were taken down on purpose, not lost.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import ray

from actors.control_plane import ControlPlaneActor
from actors.ray_runners import RayRunners
from actors.spawn import ensure_telemetry_actors, remove_telemetry_actors
from factory.control_plane import (
    GRID_PRICE,
    REGISTRY,
    alive_node_ids,
    call_actor,
    cluster_nodes,
    factory_actor_names,
    get_actor,
)
from factory.errors import FactoryError
from factory.jobs.accountant import Accountant
from factory.jobs.controller import JobController, StepResult
from factory.jobs.facility_power import FacilityPower
from factory.jobs.measured_power import fixed_load_w
from factory.jobs.metrics import JobMetrics
from factory.jobs.policy import live_policy
from factory.jobs.registration import Registrations
from factory.jobs.snapshot import ClusterView, outlook_from_forecast
from factory.jobs.spec import parse_job_spec, spec_hash
from factory.jobs.states import FINISHED, JobState
from factory.jobs.submission import ClusterCapacity, validate_for_submission
from factory.prices.grid_events import GridEventBook, GridEventError
from factory.prices.grid_feed import GridEventFeed
from factory.prices.models import ConsumptionInterval, EnergyCost
from factory.prices.objective import ObjectiveError
from factory.registry.lineage import code_version
from factory.registry.refs import parse_ref, version_ref
from factory.scheduling.model import PriceOutlook
from factory.store import AuditEvent, JobRow
from factory.telemetry.facility import facility_view
from factory.telemetry.models import NodeStatus
from factory.telemetry.sdk import ask_telemetry, cluster_job_energy
from factory.version import __version__

OUTLOOK_MIN_H, OUTLOOK_MAX_H = 24.0, 7 * 24.0
GRID_WATCH_AHEAD_S = 3600.0  # measure the facility this long before an event: its baseline


class SchedulerActor(ControlPlaneActor):
    """The control plane's entry point and the live scheduler (see the module docstring)."""

    kind = "scheduler"

    def __init__(self, name: str, config: dict[str, Any], clock_spec: dict[str, Any] | None) -> None:
        super().__init__(name, config, clock_spec)
        assert self.clock is not None
        settings = self.config.scheduler
        # Everything the two loops use exists before either starts.
        self._wake_event = threading.Event()
        self._known_down: set[str] = set()  # nodes recorded down when the scheduler last decided
        self._price_interval_s: float | None = None  # learnt from the first forecast
        self._decide_again_s: float | None = None  # the policy asked to decide again by then (factory time)
        self._jobs_lock = threading.Lock()
        self._runners = RayRunners(self.config.state_dir / "runs", self.config.state_dir / "logs")
        self._controller = JobController(self.store, self._runners, live_policy(settings),
                                         gpu_power_w=settings.gpu_power_w,
                                         preempt_overhead_s=settings.preempt_overhead_s,
                                         pause_timeout_s=self.clock.spec().speed_factor  # factory s
                                         * settings.pause_timeout_s)
        self._metrics = JobMetrics()
        # Succeeded jobs' models, registered one at a time by their own thread (a big checkpoint must not
        # hold up scheduling); found again after a restart.
        self._registrations = Registrations(self.store, self.clock.now_s, _register_with_the_registry,
                                            on_error=self._record_error)
        self._registrations.resume()
        # Jobs that ended and still need their accounting: found again after a restart (idempotent).
        self._accountant = Accountant(self.store, lambda job_id: cluster_job_energy(job_id).energy_kwh,
                                      self._price_profile, settings.gpu_power_w,
                                      after=self._registrations.after_accounting,
                                      on_accounted=self._metrics.accounted_job)
        self._registration_thread = threading.Thread(target=self._registrations.run, name="registration",
                                                     daemon=True)
        self._registration_thread.start()
        self._grid = GridEventBook(self.store, self.clock.now_s, self.audit, self.clock.spec().speed_factor)
        self._grid_file_stamp: int | None = None  # the event file as last read (its mtime)
        feed = self.config.prices.grid_events_http
        self._grid_feed = GridEventFeed(feed) if feed is not None else None
        # Measured drift and GPU power caps (set on the nodes, recorded in the store, restored after a crash).
        self._power = FacilityPower(settings, self.config.telemetry.pue, self.store, self._read_nodes,
                                    lambda nodes, caps: ask_telemetry(nodes, "apply_power_caps", caps))
        try:  # at once, so that `factory nodes` right after `up` reflects this cluster
            self._track_nodes()
        except Exception as exc:  # noqa: BLE001 - the control loop tries again
            self._record_error(exc)
        self._stopping = self._run_every(settings.interval_s, self.reconcile, "control-loop")
        if self._grid_feed is not None:  # its own thread: a slow feed never holds up the control rounds
            threading.Thread(target=self._grid_feed_loop, name="grid-event-feed", daemon=True).start()
        self._scheduling_thread = threading.Thread(target=self._scheduling_loop, name="scheduling-loop",
                                                   daemon=True)
        self._scheduling_thread.start()

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(self, spec: dict[str, Any], submitted_by: str = "", source: str | None = None,
                   request_id: str | None = None) -> dict[str, Any]:
        """Validate and persist a job (QUEUED); return its row. Nothing is stored if it is refused.

        A `request_id` already taken effect (the client's retry after a restart lost the answer) returns
        the job that request created, as stored then, and creates none.
        """
        assert self.clock is not None
        done = self.store.request_done(request_id, "job.submit")  # before checks that may now refuse it
        if done is not None:
            return done.result
        parsed = parse_job_spec(spec, source or "job spec")
        now_s = self.clock.now_s()
        deadline_s = validate_for_submission(parsed, now_s, ClusterCapacity.from_ray_nodes(ray.nodes()),
                                             source=source)
        stored = parsed.model_dump(mode="json")
        lineage = self._lineage_at_submission(parsed.parent_model, getattr(parsed, "train_loop", None)) \
            if parsed.register_as else None

        def insert() -> dict[str, Any]:
            job = self._controller.submit(stored, kind=parsed.kind, name=parsed.name, team=parsed.team,
                                          spec_hash=spec_hash(parsed), deadline_s=deadline_s, now_s=now_s,
                                          submitted_by=submitted_by,
                                          schedule={"lineage": lineage} if lineage else None)
            self.audit("job.submitted", job.job_id, actor=submitted_by or None, name=job.name, team=job.team,
                       kind=job.kind, spec_hash=job.spec_hash)
            return job.model_dump(mode="json")

        # Not under `_jobs_lock`: an insert of a QUEUED job cannot clash with a control step (which sees it
        # next step), and a step may hold the lock for a while, starting a runner process per job; a submit
        # waiting for that timed out on a slow machine. The store serialises the transactions itself.
        row = self.store.once(request_id, "job.submit", now_s, insert)
        self._runners.keep_warm = True  # warm a runner while the job waits
        self.wake()
        return row

    @staticmethod
    def _lineage_at_submission(parent_model: str | None, train_loop: str | None) -> dict[str, Any]:
        """What a model's lineage must say as of submission: the parent resolved now, the code's commit.

        A parent the registry does not have refuses the submission (one line), before hours of training.
        """
        lineage: dict[str, Any] = {"code": code_version(train_loop)}
        if parent_model:
            ref = parse_ref(parent_model)
            card = call_actor(get_actor(REGISTRY).model.remote(ref.name, ref.version, ref.alias), REGISTRY,
                              timeout_s=30.0)
            lineage["parent"] = version_ref(card["name"], card["version"])
        return lineage

    def cancel_job(self, job_id: str, cancelled_by: str = "",
                   request_id: str | None = None) -> dict[str, Any]:
        """Cancel a job wherever it is (written first, then its runner is stopped).

        A `request_id` already taken effect returns the job as that cancel left it, and acts no more: it
        is recorded in the cancel's own transaction (the runner is stopped after, outside it, so the
        cancel cannot run inside `once` whole). One used for another action is refused.
        """
        assert self.clock is not None
        now_s = self.clock.now_s()

        def written(job: JobRow) -> None:
            def audited() -> dict[str, Any]:
                self.audit("job.cancelled", job_id, actor=cancelled_by or None)
                return job.model_dump(mode="json")

            self.store.once(request_id, "job.cancel", now_s, audited)

        with self._jobs_lock:
            done = self.store.request_done(request_id, "job.cancel")
            if done is not None:
                return done.result
            job = self._controller.cancel(job_id, now_s, by=cancelled_by, with_write=written)
            self._accountant.finished([job_id])
        self.wake()
        return job.model_dump(mode="json")

    def jobs(self, states: list[str] | None = None) -> list[dict[str, Any]]:
        """Every job (in these states, if given), in submission order."""
        return [job.model_dump(mode="json") for job in self.store.list_jobs(states)]

    def job(self, job_id: str) -> dict[str, Any]:
        """{"job": the job's row, "events": its timeline}; `FactoryError` if there is no such job."""
        job = self._stored_job(job_id)
        return {"job": job.model_dump(mode="json"),
                "events": [event.model_dump(mode="json") for event in self.store.job_events(job_id)]}

    def _stored_job(self, job_id: str) -> JobRow:
        job = self.store.get_job(job_id)
        if job is None:
            raise FactoryError(f"no job {job_id}; `factory jobs` lists the jobs")
        return job

    def job_logs(self, job_id: str, tail_lines: int = 200) -> str:
        """The last lines of the job's log (kept after it ended)."""
        self.job(job_id)  # a one-line error for an unknown id
        return self._runners.logs(job_id, tail_lines)

    def wake(self) -> None:
        """Decide now (a submit, a cancel, a runner that finished)."""
        self._wake_event.set()

    def schedule_now(self) -> dict[str, Any]:
        """Run one scheduling step now and return what it did."""
        assert self.clock is not None
        with self._jobs_lock:
            now_s = self.clock.now_s()
            self._decide_again_s = None  # a step that fails asks for nothing (no retry every 10 ms)
            outlook = self._outlook(now_s) if self._controller.policy.needs_prices else None
            result = self._controller.step(now_s, self._cluster_view(), outlook)
            self._decide_again_s = result.decide_again_s
            self._keep_power_caps(result.power_caps_w)
            paused = {job_id: job.reason for job_id in result.paused if (job := self.store.get_job(job_id))}
            capped = {job_id: f"power budget: its GPUs capped at {cap_w:.0f} W each"
                      for job_id, cap_w in result.power_caps_w.items()}
            self._grid.record_actions(now_s, paused, result.waiting, capped)  # what was done for an event
            self._accountant.finished(job_id for job_id, state in result.finished.items()
                                      if JobState(state).is_finished)
        self._accountant.account_pending()  # energy, cost, carbon, waits, savings (factory.jobs.accounting)
        self._export_metrics()
        return {"time_s": now_s, **_step_json(result)}

    def retry_registration(self, job_id: str, retried_by: str = "",
                           request_id: str | None = None) -> dict[str, Any]:
        """Register a job's model again after its registration failed; return the job (REGISTERING).

        Never creates two versions: the registry registers a job's checkpoint once (a job already
        REGISTERING or REGISTERED is returned as it is). A retried `request_id` acts once.
        """
        assert self.clock is not None
        with self._jobs_lock:
            job = self._stored_job(job_id)

            def retry() -> dict[str, Any] | None:
                retried = self._registrations.retry(job, retried_by or "a user")
                if retried is None:
                    return None
                self.audit("job.registration_retried", job_id, actor=retried_by or None)
                return retried.model_dump(mode="json")

            row = self.store.once(request_id, "job.register", self.clock.now_s(), retry)
            return row if row is not None else job.model_dump(mode="json")

    def _price_profile(self, profile: list[ConsumptionInterval]) -> EnergyCost:
        return call_actor(get_actor(GRID_PRICE).energy_cost.remote([p.model_dump() for p in profile]),
                          GRID_PRICE, timeout_s=30.0)

    def _export_metrics(self) -> None:
        active = self.store.list_jobs([state.value for state in JobState if not state.is_finished])
        self._runners.keep_warm = bool(active)  # a warm runner waits for the next job to start
        self._metrics.export_queue(active, self.store.count_jobs([state.value for state in FINISHED]))
        self._metrics.export_grid_target(self._grid.target_now_kw())
        self._metrics.export_power_drift(self._power.fresh_drift(self.clock.now_s(),
                                                                 self.clock.spec().speed_factor).it_w)

    def _scheduling_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.schedule_now()
            except Exception as exc:  # noqa: BLE001 - one bad step never stops scheduling
                self._record_error(exc)
            self._wake_event.wait(self._seconds_to_next_decision())
            self._wake_event.clear()

    def _seconds_to_next_decision(self) -> float:
        """Real seconds until the next tick, price interval boundary or time the policy asked to decide again.

        The last is a waiting job's latest safe start inside this interval (`Decisions.decide_again_s`).
        """
        assert self.clock is not None
        tick_s = self.config.scheduler.tick_s
        interval_s = self._price_interval_s
        if not interval_s:
            return tick_s
        now_s = self.clock.now_s()
        next_s = (math.floor(now_s / interval_s) + 1) * interval_s
        if self._decide_again_s is not None and self._decide_again_s > now_s:
            next_s = min(next_s, self._decide_again_s)
        return max(0.01, min(tick_s, self.clock.wall_seconds_for(next_s - now_s) + 0.01))

    def _outlook(self, now_s: float) -> PriceOutlook:
        waiting = self.store.list_jobs(["QUEUED", "WAITING", "RUNNING", "PAUSED"])
        deadlines = [job.deadline_s for job in waiting if job.deadline_s is not None]
        hours = max([OUTLOOK_MIN_H, *((deadline_s - now_s) / 3600.0 + 1.0 for deadline_s in deadlines)])
        forecast = call_actor(get_actor(GRID_PRICE).forecast.remote(min(hours, OUTLOOK_MAX_H)), GRID_PRICE,
                              timeout_s=30.0)
        self._price_interval_s = float(forecast.interval_s)
        settings = self.config.scheduler
        try:
            return outlook_from_forecast(forecast, settings.objective, settings.carbon_price_per_tonne)
        except ObjectiveError as error:  # jobs keep moving on price; `factory status` says why
            self._record_error(f"{error}; planning on price meanwhile")
            return outlook_from_forecast(forecast)

    def _cluster_view(self) -> ClusterView:
        assert self.clock is not None
        node_gpus = {node["NodeID"]: int(node.get("Resources", {}).get("GPU", 0))
                     for node in ray.nodes() if node["Alive"]}
        return self._power.cluster_view(node_gpus, self._grid.caps(), self.clock.now_s(),
                                        self.clock.spec().speed_factor)

    def _keep_power_caps(self, caps_w: dict[str, float]) -> None:
        """Set the step's GPU caps on the nodes and restore the GPUs no job needs capped any more."""
        running = self.store.list_jobs(["RUNNING"]) if caps_w else []
        error = self._power.keep_caps(caps_w, running, alive_node_ids())
        if error:
            self._record_error(f"power caps: {error}")

    def _read_nodes(self) -> list[NodeStatus]:
        """Every alive node's latest telemetry (those whose agent answered)."""
        return [answer for answer in ask_telemetry(alive_node_ids(), "node_status").values()
                if isinstance(answer, NodeStatus)]

    def reconcile(self) -> list[str]:
        """Run one control step: track nodes, give new ones an agent; return the agents created."""
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
        self._read_grid_event_file()
        self._measure_power()
        if created or (down is not None and set(down) != self._known_down):
            self._known_down = set(down or ())
            self.wake()  # the cluster changed: decide now
        return created

    # -- grid events (factory.prices.grid_events) ---------------------------------------------------

    def add_grid_event(self, start_s: float, end_s: float, target_kw: float | None = None,
                       reduce_pct: float | None = None, source: str = "", created_by: str = "",
                       request_id: str | None = None) -> dict[str, Any]:
        """Keep the facility's measured power under a target from `start_s` to `end_s`; return the event.

        Stored before it is answered; the policy plans around it at once. A retried `request_id` adds
        it once.
        """
        assert self.clock is not None
        now_s = self.clock.now_s()

        def add() -> dict[str, Any]:
            event = self._grid.add(start_s, end_s, target_kw=target_kw, reduce_pct=reduce_pct,
                                   source=source or "cli", created_by=created_by)
            return event.view(now_s, self._grid.latest_kw)

        with self._jobs_lock:
            view = self.store.once(request_id, "grid.event_add", now_s, add)
        self.wake()
        return view

    def cancel_grid_event(self, event_id: str, cancelled_by: str = "",
                          request_id: str | None = None) -> dict[str, Any]:
        """Cancel a grid event from now on; return it. A retried `request_id` cancels once."""
        assert self.clock is not None
        now_s = self.clock.now_s()
        with self._jobs_lock:
            view = self.store.once(request_id, "grid.event_cancel", now_s, lambda: self._grid.cancel(
                event_id, cancelled_by).view(now_s, self._grid.latest_kw))
        self.wake()
        return view

    def grid_events(self) -> list[dict[str, Any]]:
        """Every grid event with its state, target, baseline, measured power and compliance."""
        assert self.clock is not None
        now_s = self.clock.now_s()
        return [event.view(now_s, self._grid.latest_kw) for event in self._grid.listed()]

    def _read_grid_event_file(self) -> None:
        """Add the events of `prices.grid_events_path` when the file changed (an error is `last_error`)."""
        path = self.config.prices.grid_events_path
        if path is None:
            return
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as error:
            self._record_error(f"prices.grid_events_path {path}: {error.strerror or error}")
            return
        if stamp == self._grid_file_stamp:
            return
        try:
            with self._jobs_lock:
                added = self._grid.add_from_file(path)
        except FactoryError as error:  # a bad row: said once per change of the file
            self._record_error(f"prices.grid_events_path: {error}")
            added = []
        self._grid_file_stamp = stamp
        if added:
            self.wake()

    def _grid_feed_loop(self) -> None:
        while not self._stopping.wait(1.0):  # the feed's own poll interval decides when to poll
            try:
                self._poll_grid_event_feed()
            except Exception as exc:  # noqa: BLE001 - one bad poll never stops the feed
                self._record_error(exc)

    def _poll_grid_event_feed(self) -> None:
        """Add the new events of `prices.grid_events_http` when a poll is due (a failure is `last_error`)."""
        if self._grid_feed is None:
            return
        failures = self._grid_feed.consecutive_failures
        rows = self._grid_feed.poll_if_due()
        if rows is None:
            if self._grid_feed.consecutive_failures > failures and self._grid_feed.last_error:
                self._record_error(self._grid_feed.last_error)
            return
        try:
            with self._jobs_lock:
                added = self._grid.add_rows(rows, "http", self._grid_feed.description, "grid-events-http")
        except GridEventError as error:
            self._record_error(f"{self._grid_feed.description}: {error}")
            return
        if added:
            self.wake()

    def grid_event_feed(self) -> dict[str, Any] | None:
        """The HTTP feed of grid events (`prices.grid_events_http`): source, staleness; None: none."""
        return None if self._grid_feed is None else self._grid_feed.status()

    def _measure_power(self) -> None:
        """Measure the facility where a power budget or a grid event needs it (each control round).

        The sample corrects the budget's and the events' caps for what the jobs' nominal watts miss,
        and is what the events under way or just over are judged on (from an hour before each: its
        baseline).
        """
        assert self.clock is not None
        now_s = self.clock.now_s()
        pending = [event for event in self._grid.listed() if not event.ended and event.cancelled_s is None]
        if not pending and self.config.scheduler.power_budget_w is None:
            return
        nodes = self._read_nodes()
        if not nodes:
            return
        holding = self.store.list_jobs(["RUNNING", "PAUSING"])  # the jobs whose GPUs the plan counts
        self._power.measure(nodes, holding, now_s)
        watched = [event for event in pending if event.start_s - GRID_WATCH_AHEAD_S <= now_s]
        if not watched:
            return
        pue = self.config.telemetry.pue
        facility_kw = facility_view(nodes, pue, now_s).facility_power_w / 1000.0
        interval_s = self._price_interval_s or 3600.0
        fixed_w, fixed = fixed_load_w(holding, now_s, self.config.scheduler.gpu_power_w, interval_s,
                                      self._power.drift)
        before = [(event.baseline_kw, event.ended) for event in watched]
        with self._jobs_lock:  # a cancel or an add in between must not be overwritten by a stale copy
            self._grid.observe(now_s, facility_kw)
            self._grid.note_fixed_load(now_s, fixed_w * pue / 1000.0, fixed)  # why a target cannot be met
        after = [(self._grid.get(event.event_id).baseline_kw, self._grid.get(event.event_id).ended)
                 for event in watched]
        if after != before:
            self.wake()  # an event began (its baseline is known) or ended: decide now

    def node_records(self) -> dict[str, dict[str, Any]]:
        """Every node this factory has seen: {node_id: {node_ip, state alive|down, since_s}}."""
        return dict(self._state.get("nodes", {}))

    def _track_nodes(self) -> list[str] | None:
        """Record nodes that appeared or went down; return every node recorded down (None: no view).

        The records are written before any agent is removed (write ahead, then act).
        """
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
        self._registrations.stopping.set()
        self._wake_event.set()
        self._loop_thread.join(timeout_s)
        self._scheduling_thread.join(timeout_s)
        self._registration_thread.join(timeout_s)
        with self._jobs_lock:  # the agents stop with the factory: no GPU is left capped
            self._power.keep_caps({}, [], alive_node_ids())
        return not any(thread.is_alive() for thread in (self._loop_thread, self._scheduling_thread,
                                                         self._registration_thread))

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

    def record_audit(self, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None,
                     request_id: str | None = None) -> int:
        """Append an audit event on behalf of `actor` (a user or component); return its id.

        A `request_id` already taken effect returns that event's id and appends none.
        """
        assert self.clock is not None
        return self.store.once(request_id, "audit.record", self.clock.now_s(),
                               lambda: self.audit(action, subject, actor=actor, **(detail or {})))

    def audit_log(self, limit: int = 100, action_prefix: str | None = None) -> list[AuditEvent]:
        """The newest `limit` audit events, oldest first."""
        return self.store.list_audit(limit=limit, action_prefix=action_prefix)


def _register_with_the_registry(job_id: str) -> dict[str, Any] | None:
    """The RegistryActor registers the job's checkpoint (once per job: a retry returns the same row)."""
    return call_actor(get_actor(REGISTRY).register_job.remote(job_id), REGISTRY, timeout_s=3600.0)


def _step_json(result: StepResult) -> dict[str, Any]:
    return {"started": result.started, "paused": result.paused, "finished": result.finished,
            "waiting": result.waiting}

