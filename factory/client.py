"""The Python SDK: `factory.connect()` returns a typed client over the factory's actors.

Usable from any driver connected to the cluster, including a script run with
`ray job submit --working-dir . -- python my_driver.py`. The client never starts a cluster or
actors; `factory up` does that.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import ray
from pydantic import BaseModel

from factory.clock import Clock, ClockSpec
from factory.config import FactoryConfig, load_config
from factory.control_plane import (
    DEFAULT_RESTART_WAIT_S,
    GRID_PRICE,
    SCHEDULER,
    ActorTimeoutError,
    NamedActor,
    NoAnswer,
    cluster_nodes,
    expected_actor_names,
    factory_actor_names,
    gather,
    get_actor,
    new_request_id,
    telemetry_name,
)
from factory.errors import ClusterError, FactoryError, summary_line
from factory.health import ActorHealth
from factory.jobs.spec import JobSpec, load_job_spec, parse_job_spec
from factory.jobs.states import JobState, settled
from factory.jobs.stored import stored_spec
from factory.prices.models import (
    ConsumptionInterval,
    EnergyCost,
    FeedStatus,
    Forecast,
    PriceHistory,
    PriceNow,
)
from factory.ray_cluster import RayConnection, connect_ray, current_connection
from factory.registry.sdk import RegistryClient
from factory.registry.views import ModelCard, ModelSummary
from factory.serving.sdk import ServingClient
from factory.store import AliasChange, AuditEvent, JobEvent, JobRow, ModelVersionRow
from factory.telemetry.facility import facility_view, sorted_gpus
from factory.telemetry.models import FacilityView, GpuStatus, JobEnergy, NodeStatus
from factory.telemetry.sdk import ask_telemetry, cluster_job_energy

HEALTH_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0  # a scheduler busy with a step on a loaded head answers late, not never
MUTATION_TIMEOUT_S = 60.0  # a submit or cancel waits its turn; its request id makes a resend harmless
REGISTRATION_WAIT_S = 600.0  # `wait` waits this long for a finished job's model to be registered


class ClockStatus(BaseModel):
    """The factory clock as a person reads it."""

    mode: str
    now: datetime
    now_s: float
    speed_factor: float


class StoreStatus(BaseModel):
    """Where the durable state lives."""

    path: str
    schema_version: int


class FactoryStatus(BaseModel):
    """Everything `factory status` shows."""

    version: str
    ray_address: str
    dashboard_url: str | None
    config_fingerprint: str
    clock: ClockStatus
    state_store: StoreStatus
    actors: list[ActorHealth]

    @property
    def healthy(self) -> bool:
        """All actors answered their health check."""
        return all(actor.status == "ok" for actor in self.actors)


class FactoryClient:
    """A typed view of one running factory. Cheap to create; holds only actor handles.

    Every call rides out a restart of its actor for up to `restart_wait_s` (`ray.actor_restart_wait_s`),
    and every mutating call carries a request id, so a call sent again after a restart never acts twice
    (see `factory.control_plane`).
    """

    def __init__(self, connection: RayConnection, restart_wait_s: float = DEFAULT_RESTART_WAIT_S) -> None:
        self.connection = connection
        self.restart_wait_s = restart_wait_s
        self._scheduler = NamedActor(SCHEDULER, restart_wait_s)
        self._grid_price = NamedActor(GRID_PRICE, restart_wait_s)
        self._clock_spec: ClockSpec = self._grid_price.call("clock_spec", timeout_s=HEALTH_TIMEOUT_S)
        self._registry: RegistryClient | None = None
        self._serving: ServingClient | None = None

    def clock(self) -> Clock:
        """The factory's clock, evaluated locally: it agrees with every actor's."""
        return self._clock_spec.build()

    def now(self) -> datetime:
        """Factory time now."""
        return self.clock().now()

    def info(self) -> dict[str, Any]:
        """Version, effective config, state store and clock spec of the running factory."""
        return self._ask("factory_info")

    def health(self, timeout_s: float = HEALTH_TIMEOUT_S) -> list[ActorHealth]:
        """Report each actor's health, and each one the factory should have but lacks.

        An actor that does not answer in time is 'unreachable'; a control-plane actor or an alive
        node's telemetry actor that is not on the cluster is 'missing'.
        """
        present = factory_actor_names()
        def call(name: str) -> Callable[[], ray.ObjectRef]:
            return lambda: get_actor(name).health.remote()

        answers = gather({name: call(name) for name in present}, timeout_s)
        reports = []
        for name in present:
            answer = answers[name]
            reports.append(_not_ok(name, "unreachable", answer.reason) if isinstance(answer, NoAnswer)
                           else answer)
        for name in expected_actor_names():
            if name not in present:
                reports.append(_not_ok(name, "missing", "not on the cluster; run `factory up`"))
        return reports

    def status(self) -> FactoryStatus:
        """The whole factory at a glance."""
        info = self.info()
        clock = self.clock()
        return FactoryStatus(
            version=info["version"],
            ray_address=self.connection.address,
            dashboard_url=self.connection.dashboard_url,
            config_fingerprint=info["config_fingerprint"],
            clock=ClockStatus(
                mode=clock.mode, now=clock.now(), now_s=clock.now_s(), speed_factor=clock.speed_factor
            ),
            state_store=StoreStatus(**info["state_store"]),
            actors=self.health(),
        )

    def audit_log(self, limit: int = 100, action_prefix: str | None = None) -> list[AuditEvent]:
        """The newest audit events, oldest first."""
        return self._ask("audit_log", limit, action_prefix)

    def nodes(self) -> list[NodeStatus]:
        """Every node the factory has seen: alive ones with their telemetry, and the ones now down.

        An alive node whose telemetry actor does not answer is `unreachable`, with the reason.
        """
        records: dict[str, dict[str, Any]] = self._ask("node_records")
        cluster = {node["node_id"]: node for node in _cluster_nodes()}
        alive = sorted(node_id for node_id, node in cluster.items() if node["alive"])
        answers = ask_telemetry(alive, "node_status")
        result = []
        for node_id in alive:
            answer = answers[node_id]
            if isinstance(answer, NoAnswer):
                result.append(NodeStatus(node_id=node_id, node_ip=cluster[node_id]["node_ip"],
                                         state="unreachable", error=answer.reason))
            else:
                result.append(answer)
        for node_id in sorted(set(records) | set(cluster)):
            if node_id in alive:
                continue
            record = records.get(node_id, {})
            result.append(NodeStatus(
                node_id=node_id, state="down", since_s=record.get("since_s") if
                record.get("state") == "down" else None,
                node_ip=record.get("node_ip") or cluster.get(node_id, {}).get("node_ip"),
            ))
        return result

    def gpus(self) -> list[GpuStatus]:
        """The latest reading of every GPU on every alive node (real or simulated)."""
        alive = _alive_node_ids()
        gpus = []
        for answer in ask_telemetry(alive, "gpus").values():
            if isinstance(answer, list):
                gpus.extend(answer)
        return sorted_gpus(gpus)

    def facility(self, nodes: list[NodeStatus] | None = None) -> FacilityView:
        """Facility power (IT power x PUE), GPU counts and today's energy (of `nodes`, if given)."""
        pue = float(self.info()["config"]["telemetry"]["pue"])
        return facility_view(self.nodes() if nodes is None else nodes, pue=pue,
                             time_s=self.clock().now_s())

    def job_energy(self, job_id: str) -> JobEnergy:
        """GPU energy attributed to a factory job id (or a Ray job id) over all alive nodes.

        Zero with `first_seen_s=None` if no GPU has run it (since the nodes' agents started).
        """
        return cluster_job_energy(job_id, _alive_node_ids())

    def gpu_history(self, node_id: str, index: int, since_s: float | None = None) -> dict[str, list[float]]:
        """One GPU's samples since `since_s` (factory time), columns oldest first, for plots."""
        name = telemetry_name(node_id)
        return NamedActor(name, self.restart_wait_s).call("history", index, since_s,
                                                          timeout_s=HEALTH_TIMEOUT_S)

    def gpu_averages(self, node_id: str, index: int, since_s: float | None = None) -> dict[str, float | None]:
        """One GPU's mean utilisation, memory, power and temperature since `since_s` (factory time)."""
        name = telemetry_name(node_id)
        return NamedActor(name, self.restart_wait_s).call("averages", index, since_s,
                                                          timeout_s=HEALTH_TIMEOUT_S)

    def price(self) -> PriceNow:
        """The electricity price and carbon intensity now, with currency, unit and freshness."""
        return self._grid_price.call("price", timeout_s=HEALTH_TIMEOUT_S)

    def forecast(self, hours: float = 24.0) -> Forecast:
        """The next `hours`: prices known up to the market's horizon, estimates with a band beyond."""
        return self._grid_price.call("forecast", hours, timeout_s=HEALTH_TIMEOUT_S)

    def price_history(self, start: datetime | float, end: datetime | float | None = None) -> PriceHistory:
        """Past price (and carbon) intervals from `start` to `end` (default: now); never the future."""
        end_s = self.clock().now_s() if end is None else _seconds(end)
        return self._grid_price.call("price_history", _seconds(start), end_s, timeout_s=HEALTH_TIMEOUT_S)

    def energy_cost(self, profile: list[ConsumptionInterval] | list[dict[str, float]]) -> EnergyCost:
        """The energy-weighted cost and carbon of a consumption profile (kWh per interval)."""
        items = [item.model_dump() if isinstance(item, ConsumptionInterval) else
                 ConsumptionInterval.model_validate(item).model_dump() for item in profile]
        return self._grid_price.call("energy_cost", items, timeout_s=HEALTH_TIMEOUT_S)

    def price_feed(self) -> FeedStatus:
        """The price feed's source, staleness, failures and data span."""
        return self._grid_price.call("feed_status", timeout_s=HEALTH_TIMEOUT_S)

    def _ask(self, method: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S, **kwargs: Any) -> Any:
        """The scheduler's answer (riding out its restart)."""
        return self._scheduler.call(method, *args, timeout_s=timeout_s, **kwargs)

    def pause_clock(self) -> float:
        """Record the factory time now, so that the next `up` resumes the replay from it."""
        return self._grid_price.call("pause_clock", timeout_s=HEALTH_TIMEOUT_S)

    def stop_control_loop(self) -> bool:
        """Stop the scheduler's control loop (before `down` removes actors)."""
        return self._ask("stop_control_loop")

    def take_down_endpoints(self) -> list[str]:
        """Delete the endpoints from Serve, keeping them for the next `up` (before `down` removes actors)."""
        return self.serving.take_down()

    # -- jobs ------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec | dict[str, Any] | str | Path, submitted_by: str | None = None,
               request_id: str | None = None) -> str:
        """Submit a job (a `JobSpec`, a dict, or a YAML file's path); return its id once it is stored.

        The spec is checked here first (a one-line `ConfigError` naming the field), then by the
        scheduler against the cluster (GPUs it can never offer, a deadline already past). A submit
        with the `request_id` of one that took effect returns that job's id and creates none.
        """
        source = None
        if isinstance(spec, str | Path):
            source = str(spec)
            spec = load_job_spec(spec)
        elif isinstance(spec, dict):
            spec = parse_job_spec(spec)
        job = self._ask("submit_job", spec.model_dump(mode="json"), submitted_by or who(), source,
                        request_id=request_id or new_request_id(), timeout_s=MUTATION_TIMEOUT_S)
        return str(job["job_id"])

    def jobs(self, states: list[str] | None = None) -> list[JobRow]:
        """Every job (in these states, if given), in submission order."""
        return [JobRow.model_validate(job) for job in self._ask("jobs", states)]

    def job(self, job_id: str) -> JobDetail:
        """One job with its timeline (every transition, its reason and time)."""
        answer = self._ask("job", job_id)
        return JobDetail(job=JobRow.model_validate(answer["job"]),
                         events=[JobEvent.model_validate(event) for event in answer["events"]])

    def cancel(self, job_id: str, cancelled_by: str | None = None, request_id: str | None = None) -> JobRow:
        """Cancel a job wherever it is; return it (CANCELLED). A retried `request_id` cancels once."""
        return JobRow.model_validate(self._ask("cancel_job", job_id, cancelled_by or who(),
                                               request_id=request_id or new_request_id(),
                                               timeout_s=MUTATION_TIMEOUT_S))

    def logs(self, job_id: str, tail_lines: int = 200) -> str:
        """The last lines of a job's log (kept after the job ended)."""
        return self._ask("job_logs", job_id, tail_lines)

    def retry_registration(self, job_id: str, retried_by: str = "", request_id: str | None = None) -> JobRow:
        """Register a job's model again after its registration failed; return the job (REGISTERING).

        `wait` then follows it to REGISTERED or REGISTRATION_FAILED. Never creates two versions of one job's
        model; a retried `request_id` acts once.
        """
        return JobRow.model_validate(self._ask("retry_registration", job_id, retried_by or who(),
                                               request_id=request_id or new_request_id(),
                                               timeout_s=MUTATION_TIMEOUT_S))

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5,
             on_change: Callable[[JobRow], None] | None = None,
             on_event: Callable[[JobEvent, JobRow], None] | None = None) -> JobRow:
        """Wait (real seconds) until the job is settled; return it.

        `on_change` sees the job whenever its state or reason differs from the last poll's; `on_event`
        sees every transition of its timeline once, oldest first, however quickly they followed each
        other (with the job as that poll read it), so none is missed between two polls.

        Settled: FAILED, CANCELLED, SUCCEEDED for a job without `register_as`, else REGISTERED or
        REGISTRATION_FAILED (`factory.jobs.states.settled`); a model still registering after
        `REGISTRATION_WAIT_S` is not waited for longer. Raises `FactoryError` if `timeout_s` passes first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seen: tuple[str, str] | None = None
        events_seen = 0
        registering_since: float | None = None
        unanswered_since: float | None = None
        while True:
            try:
                detail = self.job(job_id)  # rides out a restart of the scheduler (it reloads its jobs)
            except ActorTimeoutError:  # busy, not gone: ask again, for as long as a restart may take
                unanswered_since = unanswered_since or time.monotonic()
                if time.monotonic() - unanswered_since > self.restart_wait_s:
                    raise
                continue
            unanswered_since = None
            job = detail.job
            if on_event is not None:  # the timeline only grows: its new entries are those past the seen
                for event in detail.events[events_seen:]:
                    on_event(event, job)
                events_seen = len(detail.events)
            if on_change is not None and (job.state, job.reason) != seen:
                on_change(job)
                seen = (job.state, job.reason)
            state = JobState(job.state)
            if settled(state, stored_spec(job).register_as is not None):
                return job
            if state.is_finished:  # its model is registered just after its run: wait for that (not forever)
                registering_since = registering_since or time.monotonic()
                if time.monotonic() - registering_since > REGISTRATION_WAIT_S:
                    return job
            if deadline is not None and time.monotonic() > deadline:
                raise FactoryError(f"job {job_id} is still {job.state} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    # -- grid events -----------------------------------------------------------------------------

    def grid_events(self) -> list[dict[str, Any]]:
        """Every demand-response event: state, target, baseline, measured kW per interval, compliance."""
        return self._ask("grid_events")

    def grid_event_feed(self) -> dict[str, Any] | None:
        """The HTTP feed of grid events (`prices.grid_events_http`): its source, whether it is stale and
        why, the age of its last answer (real seconds); None where none is configured."""
        return self._ask("grid_event_feed")

    def add_grid_event(self, start: datetime | float, end: datetime | float, *,
                       target_kw: float | None = None, reduce_pct: float | None = None, source: str = "sdk",
                       created_by: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """Ask the factory to keep its measured power under `target_kw` (or `reduce_pct` % under the power
        measured just before `start`) from `start` to `end` (datetimes, or factory Unix seconds).
        Returns the event. A retried `request_id` adds it once."""
        return self._ask("add_grid_event", _seconds(start), _seconds(end), target_kw, reduce_pct, source,
                         created_by or who(), request_id=request_id or new_request_id(),
                         timeout_s=MUTATION_TIMEOUT_S)

    def cancel_grid_event(self, event_id: str, cancelled_by: str | None = None,
                          request_id: str | None = None) -> dict[str, Any]:
        """Cancel a grid event from now on; return it."""
        return self._ask("cancel_grid_event", event_id, cancelled_by or who(),
                         request_id=request_id or new_request_id(), timeout_s=MUTATION_TIMEOUT_S)

    # -- models ----------------------------------------------------------------------------------

    @property
    def registry(self) -> RegistryClient:
        """The model registry (the methods below are its everyday part)."""
        if self._registry is None:
            self._registry = RegistryClient(self.restart_wait_s)
        return self._registry

    def register(self, source: str | Path | dict[str, Any], name: str, *, kind: str | None = None,
                 tags: dict[str, str] | None = None, description: str = "",
                 registered_by: str | None = None, predictor: str | None = None,
                 request_id: str | None = None) -> ModelVersionRow:
        """Register a directory, a file or a state_dict as the next version of `name`; return the version.

        `kind`: `state_dict`, `checkpoint` or `directory` (default: a `.pt`/`.pth` file or a dict is a
        state_dict, anything else a directory). `predictor`: `module.path:Class` that serves it
        (`factory deploy`; see `factory.serving.predictor`).
        """
        return self.registry.register(source, name, kind=kind, tags=tags, description=description,
                                      registered_by=registered_by or who(), predictor=predictor,
                                      request_id=request_id)

    def models(self) -> list[ModelSummary]:
        """Every registered model, by name."""
        return self.registry.models()

    def model(self, name: str, version: int | None = None, alias: str | None = None) -> ModelCard:
        """A version's card: files and checksums, lineage, aliases (the newest without version or alias)."""
        return self.registry.model(name, version, alias)

    def load(self, name: str, version: int | None = None, alias: str | None = None) -> Any:
        """A version's contents through the Ray object store: a state_dict, a Checkpoint or a Path."""
        return self.registry.load(name, version, alias)

    def set_alias(self, name: str, alias: str, version: int, set_by: str | None = None,
                  request_id: str | None = None) -> AliasChange:
        """Move `alias` of `name` to `version`, atomically; the move is kept in the alias's history."""
        return self.registry.set_alias(name, alias, version, set_by or who(), request_id=request_id)

    @property
    def serving(self) -> ServingClient:
        """The endpoints on Ray Serve (deploy, canary, rollback, undeploy, list)."""
        if self._serving is None:
            self._serving = ServingClient(self.restart_wait_s)
        return self._serving

    def deploy(self, ref: str, route: str | None = None, replicas: int | None = None,
               deployed_by: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """Serve the model `ref` (NAME@ALIAS follows the alias; NAME:VERSION is pinned) over HTTP."""
        return self.serving.deploy(ref, route, replicas, deployed_by or who(), request_id=request_id)

    def endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint with its versions, split, replicas and request stats."""
        return self.serving.endpoints()

    def schedule_now(self) -> dict[str, Any]:
        """Make the scheduler decide now; return what it did (for scripts and tests)."""
        return self._ask("schedule_now")

    def record_audit(self, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None,
                     request_id: str | None = None) -> int:
        """Append an audit event on behalf of `actor`; return its id. A retried `request_id` appends once."""
        return self._ask("record_audit", actor, action, subject, detail,
                         request_id=request_id or new_request_id())


def connect(address: str | None = None, config: FactoryConfig | None = None) -> FactoryClient:
    """Connect to the running factory on the cluster at `address` (default: as `factory` does).

    Inside `ray job submit` the job's cluster is used. Raises `ClusterError` when no cluster or no
    factory is found.
    """
    config = config or load_config()
    if ray.is_initialized():  # a job driver, or a script that called ray.init itself
        connection = current_connection()
    else:
        connection = connect_ray(config, address=address, start_local=False)
    return FactoryClient(connection, config.ray.actor_restart_wait_s)


def _seconds(when: datetime | float) -> float:
    """Unix seconds of an aware datetime (naive means UTC) or of a number of seconds."""
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return float(when)


def _cluster_nodes() -> list[dict[str, Any]]:
    """Ray's node list; losing the cluster mid-command is one line, not a traceback."""
    try:
        return cluster_nodes()
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds when the GCS is gone
        raise ClusterError(f"lost the Ray cluster: {summary_line(exc)}; is it still running?") from None


def _alive_node_ids() -> list[str]:
    return [node["node_id"] for node in _cluster_nodes() if node["alive"]]


def _not_ok(name: str, status: Literal["unreachable", "missing"], why: object) -> ActorHealth:
    kind = name.split(":", 1)[0]
    return ActorHealth(name=name, kind=kind, status=status, last_error=summary_line(why))


@dataclass(frozen=True)
class JobDetail:
    """A job and its timeline, oldest transition first."""

    job: JobRow
    events: list[JobEvent]



def who(interface: str = "sdk") -> str:
    """Who submits or cancels, for the audit log: `<interface>:<OS user>`, e.g. `cli:alice`."""
    try:
        return f"{interface}:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return f"{interface}:unknown"
