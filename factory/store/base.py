"""The durable state store's interface: what the control plane needs, not how it is stored.

Invariants every implementation keeps:
  * A write returns only after it is durable; a crash loses nothing already committed.
  * Writes inside one `transaction()` commit together or not at all. Transactions nest: an inner
    `transaction()` joins the outer one.
  * Opening a store migrates its schema to `schema_version()` of this code, one versioned step at
    a time, each step atomic; a store written by a newer schema is refused, never downgraded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

from factory.errors import StoreError


class AuditEvent(BaseModel):
    """One entry of the audit log: who did what to which subject, at what factory time."""

    id: int | None = None
    time_s: float = Field(description="Factory time of the event, seconds since the Unix epoch.")
    actor: str = Field(description="Who acted: a user ('cli:alice') or a component ('scheduler').")
    action: str = Field(description="Dotted verb, e.g. 'factory.up', 'actor.restarted'.")
    subject: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class JobRow(BaseModel):
    """A job as stored: its spec, where it is in its life, and what it has consumed so far.

    `state` is a `factory.jobs.states.JobState` value; the store keeps it as text and leaves the rules
    of the state machine to the caller (it only checks that a transition starts where expected).
    `latest_safe_start(_s)` and `pauses` are read from `schedule` (not stored); they are in the JSON the
    CLI and the SDK see.
    """

    job_id: str
    name: str
    team: str
    kind: str
    spec: dict[str, Any]
    spec_hash: str
    state: str
    reason: str = ""
    submitted_s: float = Field(description="Factory time of submission, seconds since the Unix epoch.")
    deadline_s: float | None = Field(default=None, description="Absolute factory time; None: no deadline.")
    updated_s: float
    attempt: int = 0
    progress: dict[str, Any] = Field(default_factory=dict,
                                     description="What the job reported: step, metrics.")
    schedule: dict[str, Any] = Field(default_factory=dict,
                                     description="The scheduler's own facts about the job: admitted, at "
                                     "risk, placement, run time so far.")
    accounting: dict[str, Any] = Field(default_factory=dict)
    error: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def latest_safe_start_s(self) -> float | None:
        """While it waits: the latest factory time (Unix s) it can start and still meet its deadline, given
        every job admitted before it (the price-aware policy's reservation plan); else None."""
        value = self.schedule.get("latest_safe_start_s")
        return None if value is None or self.state != "WAITING" else float(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def latest_safe_start(self) -> datetime | None:
        """`latest_safe_start_s` as a UTC datetime (ISO 8601 in JSON), as `ClockStatus.now` is."""
        time_s = self.latest_safe_start_s
        return None if time_s is None else datetime.fromtimestamp(time_s, tz=UTC)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pauses(self) -> int:
        """How many times the scheduler's policy has paused it (a lost runner is not counted)."""
        return len(self.schedule.get("pauses_s", ()))


class JobEvent(BaseModel):
    """One transition of a job, written before the scheduler acts on it: its timeline's entry."""

    id: int | None = None
    job_id: str
    time_s: float
    from_state: str = ""
    state: str
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class ModelVersionRow(BaseModel):
    """One registered version of a model: where its files are, their checksums, and its lineage.

    A row exists only once every file is written and checksummed (`files`: relative path ->
    {"sha256", "size_bytes"}; `digest`: the whole version's sha256): inserting the row is the commit.
    """

    name: str
    version: int = Field(0, description="Assigned by the store on insert: 1 + the highest so far.")
    kind: str = Field(description="'state_dict', 'checkpoint' or 'directory'.")
    storage_uri: str
    artifact_key: str = Field(description="The artifact's directory under `storage_uri`.")
    files: dict[str, dict[str, Any]]
    digest: str
    size_bytes: int
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    registered_s: float = Field(description="Factory time of registration, seconds since the Unix epoch.")
    registered_by: str = ""
    serving: dict[str, Any] = Field(
        default_factory=dict, description="How the version is served: {'predictor': 'module:Class'}.")


class AliasChange(BaseModel):
    """One move of a model's alias (from_version None: the alias was new)."""

    id: int | None = None
    name: str
    alias: str
    from_version: int | None
    version: int
    time_s: float
    set_by: str = ""


class RequestRecord(BaseModel):
    """A client's mutating request, kept with what it returned, so that its retry returns the same."""

    request_id: str
    action: str = Field(description="Dotted verb of the mutation, e.g. 'job.submit'.")
    result: Any = None
    time_s: float = Field(description="Factory time the mutation took effect, seconds since the Unix epoch.")


class RequestReusedError(StoreError):
    """A request id came back with another action: a client bug, never a retry."""


class StateConflictError(StoreError):
    """A job was not in the state a transition expected (it moved meanwhile, or never existed)."""

    def __init__(self, job_id: str, current: str | None, message: str) -> None:
        super().__init__(message)
        self.job_id, self.current = job_id, current


class StateStore(ABC):
    """Durable control-plane state: metadata, per-actor state, the audit log, jobs."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives (a file path or a server URI), for status output."""

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store is at (always this code's latest once opened)."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes atomically; re-entrant."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A factory-wide metadata value, or None."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Set a factory-wide metadata value."""

    @abstractmethod
    def delete_meta(self, key: str) -> None:
        """Remove a factory-wide metadata value (no error if absent)."""

    @abstractmethod
    def get_actor_state(self, name: str) -> dict[str, Any] | None:
        """The state an actor last persisted under its name, or None."""

    @abstractmethod
    def put_actor_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace an actor's persisted state (JSON-serialisable)."""

    @abstractmethod
    def list_endpoints(self) -> dict[str, dict[str, Any]]:
        """Every serving endpoint's record (the ServingActor's `Endpoint`, as JSON), by name."""

    @abstractmethod
    def replace_endpoints(self, endpoints: dict[str, dict[str, Any]]) -> None:
        """Store exactly these endpoints (by name): the others are deleted, in one transaction."""

    @abstractmethod
    def put_grid_event(self, event_id: str, start_s: float, end_s: float, event: dict[str, Any]) -> None:
        """Store a grid event's record (`factory.grid.events.GridEvent` as JSON), new or changed."""

    @abstractmethod
    def list_grid_events(self, ending_after_s: float | None = None) -> list[dict[str, Any]]:
        """Every grid event's record (those ending after `ending_after_s`, if given), by start."""

    @abstractmethod
    def append_audit(self, event: AuditEvent) -> int:
        """Append to the audit log; return the event's id (ids increase)."""

    @abstractmethod
    def list_audit(
        self, limit: int = 100, action_prefix: str | None = None
    ) -> list[AuditEvent]:
        """The newest `limit` audit events (optionally only actions under a prefix), oldest first."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    # -- requests ------------------------------------------------------------------------------------

    @abstractmethod
    def find_request(self, request_id: str) -> RequestRecord | None:
        """The request with this id, if its mutation took effect; else None."""

    @abstractmethod
    def record_request(self, record: RequestRecord) -> None:
        """Keep a request's id and result; call it inside the transaction of the mutation's effect."""

    @abstractmethod
    def forget_request(self, request_id: str) -> None:
        """Drop a request's record (no error if absent): its effect, written ahead, was undone.

        Call it inside the transaction that undoes the effect, so a retry acts again exactly when
        nothing of the first attempt is left.
        """

    def request_done(self, request_id: str | None, action: str) -> RequestRecord | None:
        """The record of `request_id` if its `action` took effect; None without an id or before it did.

        An id that comes back with another action raises `RequestReusedError`. A mutation that cannot
        run inside `once` whole (it must not hold the store's write lock while it stops a runner or waits
        for Serve) checks here before it acts, then records its request with its effect's write.
        """
        done = None if request_id is None else self.find_request(request_id)
        if done is not None and done.action != action:
            raise RequestReusedError(f"request id {request_id} was used for {done.action}, not {action}; "
                                     "use a new id for each call")
        return done

    def once(self, request_id: str | None, action: str, time_s: float, act: Callable[[], Any]) -> Any:
        """Run the mutation `act` at most once per `request_id`; return its result, or the stored one.

        `act` runs inside one transaction with the record of its request, so either both are kept or
        neither: a client that retries after losing the answer (the actor restarted) gets the first
        result back and nothing acts twice. Without a request id `act` just runs. An id that comes back
        with another action raises `RequestReusedError`.
        """
        if request_id is None:
            return act()
        with self.transaction():
            done = self.request_done(request_id, action)
            if done is not None:
                return done.result
            result = act()
            self.record_request(RequestRecord(request_id=request_id, action=action, result=result,
                                              time_s=time_s))
            return result

    # -- jobs ----------------------------------------------------------------------------------------

    @abstractmethod
    def insert_job(self, job: JobRow, reason: str = "submitted") -> JobEvent:
        """Store a new job and its first event (its state, with `reason`) together; refuse a known id."""

    @abstractmethod
    def get_job(self, job_id: str) -> JobRow | None:
        """The job with this id, or None."""

    @abstractmethod
    def list_jobs(self, states: Collection[str] | None = None) -> list[JobRow]:
        """Jobs (in these states, if given), in submission order."""

    @abstractmethod
    def count_jobs(self, states: Collection[str]) -> dict[str, int]:
        """How many jobs are in each of `states` (states without jobs are left out)."""

    @abstractmethod
    def transition_job(self, job_id: str, state: str, reason: str, time_s: float, *,
                       expected_from: Collection[str], detail: dict[str, Any] | None = None,
                       **fields: Any) -> JobEvent:
        """Move a job to `state` and append the event, in one transaction.

        Raises `StateConflictError` (and writes nothing) unless the job is in one of `expected_from`.
        `fields` updates other columns at the same time (`attempt`, `progress`, `schedule`, `accounting`,
        `error`).
        """

    @abstractmethod
    def update_job(self, job_id: str, **fields: Any) -> None:
        """Update a job's `attempt`, `progress`, `schedule`, `accounting` or `error` without a transition."""

    @abstractmethod
    def job_events(self, job_id: str) -> list[JobEvent]:
        """A job's transitions, oldest first."""

    # -- model registry ------------------------------------------------------------------------------

    @abstractmethod
    def add_model_version(self, row: ModelVersionRow) -> ModelVersionRow:
        """Insert a version numbered 1 + the highest of its name, in one transaction; return it."""

    @abstractmethod
    def get_model_version(self, name: str, version: int) -> ModelVersionRow | None:
        """One version, or None."""

    @abstractmethod
    def latest_model_version(self, name: str) -> int | None:
        """The highest version number of `name`, or None if it has none."""

    @abstractmethod
    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRow]:
        """Versions (of one name, if given), by name then version."""

    @abstractmethod
    def set_model_alias(self, name: str, alias: str, version: int, time_s: float,
                        set_by: str = "", if_last_change: int | None = None) -> AliasChange:
        """Point `alias` of `name` at `version` and record the move, in one transaction.

        With `if_last_change` (an id from `last_alias_change`), a compare-and-set: the move is made only
        if the alias's latest recorded move is still that one, else `AliasMovedError` and nothing changes.
        """

    @abstractmethod
    def last_alias_change(self, name: str, alias: str) -> int:
        """The id of the latest recorded move of `alias` of `name`; 0 if it was never moved."""

    @abstractmethod
    def model_aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:
        """{name: {alias: version}} (of one name, if given)."""

    @abstractmethod
    def model_alias_history(self, name: str) -> list[AliasChange]:
        """Every move of `name`'s aliases, oldest first."""
