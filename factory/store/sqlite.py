"""The embedded SQLite implementation of `StateStore` (WAL mode, synchronous=FULL).

WAL lets several actor processes on the head node read while one writes; synchronous=FULL makes a
commit durable before it returns, so a crash of the process or the machine loses nothing committed.
Writers take the write lock up front (`BEGIN IMMEDIATE`), so two writers wait for each other
instead of failing half-way with SQLITE_BUSY on lock upgrade.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from factory.errors import AliasMovedError, SchemaTooNewError, StoreError
from factory.store.base import (
    AliasChange,
    AuditEvent,
    JobEvent,
    JobRow,
    ModelVersionRow,
    RequestRecord,
    StateConflictError,
    StateStore,
)
from factory.store.migrations import MIGRATIONS, Migration

BUSY_TIMEOUT_S = 30.0
_JOB_COLUMNS = ("job_id", "name", "team", "kind", "spec_json", "spec_hash", "state", "reason", "submitted_s",
                "deadline_s", "updated_s", "attempt", "progress_json", "schedule_json", "accounting_json",
                "error")
_JSON_FIELDS = {"spec": "spec_json", "progress": "progress_json", "schedule": "schedule_json",
                "accounting": "accounting_json"}
_VERSION_COLUMNS = ("name", "version", "kind", "storage_uri", "artifact_key", "files_json", "digest",
                    "size_bytes", "description", "tags_json", "lineage_json", "registered_s", "registered_by",
                    "serving_json")
_UPDATABLE = {"state", "reason", "updated_s", "attempt", "progress", "schedule", "accounting", "error"}


def _job_values(job: JobRow) -> tuple[Any, ...]:
    return (job.job_id, job.name, job.team, job.kind, json.dumps(job.spec, sort_keys=True), job.spec_hash,
            job.state, job.reason, job.submitted_s, job.deadline_s, job.updated_s, job.attempt,
            json.dumps(job.progress, sort_keys=True), json.dumps(job.schedule, sort_keys=True),
            json.dumps(job.accounting, sort_keys=True), job.error)


def _job_row(row: tuple[Any, ...]) -> JobRow:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    for name, column in _JSON_FIELDS.items():
        values[name] = json.loads(values.pop(column))
    return JobRow(**values)


def _version_row(row: tuple[Any, ...]) -> ModelVersionRow:
    values = dict(zip(_VERSION_COLUMNS, row, strict=True))
    for name in ("files", "tags", "lineage", "serving"):
        values[name] = json.loads(values.pop(f"{name}_json"))
    return ModelVersionRow(**values)


class SQLiteStore(StateStore):
    """`StateStore` in one SQLite file. Safe to share between threads of one process."""

    def __init__(self, path: str | Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            mode = self._enable_wal()
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open state store {self._path}: {exc}; check state_dir in the config"
            ) from None
        if mode.lower() != "wal":
            raise StoreError(f"state store {self._path}: WAL mode unavailable (got {mode!r})")
        try:
            self._migrate(migrations)
        except BaseException:
            self._conn.close()
            raise

    def _enable_wal(self) -> str:
        """Switch to WAL; retry while another process holds the lock for the same switch.

        Changing the journal mode of a new file can fail with SQLITE_BUSY at once, without waiting
        in the busy handler, when several actors open a fresh store together.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def location(self) -> str:  # noqa: D102
        return str(self._path)

    def schema_version(self) -> int:  # noqa: D102
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:  # noqa: D102
        with self._lock:
            if self._depth > 0:  # joining the outer transaction
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._conn.rollback()
                raise
            self._depth = 0
            try:
                self._execute("COMMIT")
            except BaseException:  # e.g. disk full: leave the connection usable, nothing half-kept
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise

    def get_meta(self, key: str) -> str | None:  # noqa: D102
        row = self._query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:  # noqa: D102
        with self.transaction():
            self._execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete_meta(self, key: str) -> None:  # noqa: D102
        with self.transaction():
            self._execute("DELETE FROM meta WHERE key = ?", (key,))

    def get_actor_state(self, name: str) -> dict[str, Any] | None:  # noqa: D102
        row = self._query_one("SELECT state_json FROM actor_state WHERE name = ?", (name,))
        return None if row is None else json.loads(row[0])

    def put_actor_state(self, name: str, state: dict[str, Any]) -> None:  # noqa: D102
        with self.transaction():
            self._execute(
                "INSERT INTO actor_state (name, state_json, updated_wall_s) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET state_json = excluded.state_json, "
                "updated_wall_s = excluded.updated_wall_s",
                (name, json.dumps(state, sort_keys=True), time.time()),
            )

    def list_endpoints(self) -> dict[str, dict[str, Any]]:  # noqa: D102
        with self._lock:
            rows = self._conn.execute("SELECT name, endpoint_json FROM endpoints ORDER BY name").fetchall()
        return {name: json.loads(text) for name, text in rows}

    def put_grid_event(self, event_id: str, start_s: float, end_s: float,  # noqa: D102
                       event: dict[str, Any]) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO grid_events (event_id, start_s, end_s, event_json, updated_wall_s) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET start_s = excluded.start_s, "
                "end_s = excluded.end_s, event_json = excluded.event_json, "
                "updated_wall_s = excluded.updated_wall_s",
                (event_id, start_s, end_s, json.dumps(event, sort_keys=True), time.time()))

    def list_grid_events(self, ending_after_s: float | None = None) -> list[dict[str, Any]]:  # noqa: D102
        sql, params = "SELECT event_json FROM grid_events", ()
        if ending_after_s is not None:
            sql, params = sql + " WHERE end_s > ?", (ending_after_s,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY start_s, event_id", params).fetchall()
        return [json.loads(text) for (text,) in rows]

    def replace_endpoints(self, endpoints: dict[str, dict[str, Any]]) -> None:  # noqa: D102
        now_s = time.time()
        with self.transaction():
            kept = sorted(endpoints)
            self._execute(f"DELETE FROM endpoints WHERE name NOT IN ({', '.join('?' * len(kept))})", kept)
            for name in kept:
                self._execute(
                    "INSERT INTO endpoints (name, endpoint_json, updated_wall_s) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET endpoint_json = excluded.endpoint_json, "
                    "updated_wall_s = excluded.updated_wall_s "
                    "WHERE endpoint_json IS NOT excluded.endpoint_json",
                    (name, json.dumps(endpoints[name], sort_keys=True), now_s))

    def append_audit(self, event: AuditEvent) -> int:  # noqa: D102
        with self.transaction():
            cursor = self._execute(
                "INSERT INTO audit_log (time_s, actor, action, subject, detail_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (event.time_s, event.actor, event.action, event.subject, json.dumps(event.detail)),
            )
            return int(cursor.lastrowid)

    def list_audit(  # noqa: D102
        self, limit: int = 100, action_prefix: str | None = None
    ) -> list[AuditEvent]:
        sql = "SELECT id, time_s, actor, action, subject, detail_json FROM audit_log"
        params: tuple[Any, ...] = ()
        if action_prefix:
            # Exact and case-sensitive, unlike LIKE: 'factory' matches 'factory' and 'factory.up'.
            sql += " WHERE action = ? OR substr(action, 1, ?) = ?"
            params = (action_prefix, len(action_prefix) + 1, action_prefix + ".")
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, limit)).fetchall()
        return [
            AuditEvent(id=r[0], time_s=r[1], actor=r[2], action=r[3], subject=r[4],
                       detail=json.loads(r[5]))
            for r in reversed(rows)
        ]

    def find_request(self, request_id: str) -> RequestRecord | None:  # noqa: D102
        row = self._query_one("SELECT action, result_json, time_s FROM requests WHERE request_id = ?",
                              (request_id,))
        return None if row is None else RequestRecord(request_id=request_id, action=row[0],
                                                       result=json.loads(row[1]), time_s=row[2])

    def record_request(self, record: RequestRecord) -> None:  # noqa: D102
        with self.transaction():
            self._execute("INSERT INTO requests (request_id, action, result_json, time_s) "
                          "VALUES (?, ?, ?, ?)",
                          (record.request_id, record.action, json.dumps(record.result, sort_keys=True),
                           record.time_s))

    def forget_request(self, request_id: str) -> None:  # noqa: D102
        with self.transaction():
            self._execute("DELETE FROM requests WHERE request_id = ?", (request_id,))

    # -- jobs ----------------------------------------------------------------------------------------

    def insert_job(self, job: JobRow, reason: str = "submitted") -> JobEvent:  # noqa: D102
        with self.transaction():
            if self._query_one("SELECT 1 FROM jobs WHERE job_id = ?", (job.job_id,)) is not None:
                raise StoreError(f"state store {self._path}: job {job.job_id} already exists")
            self._execute(
                f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                _job_values(job),
            )
            event = JobEvent(job_id=job.job_id, time_s=job.submitted_s, state=job.state, reason=reason)
            return self._append_job_event(event)

    def get_job(self, job_id: str) -> JobRow | None:  # noqa: D102
        row = self._query_one(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE job_id = ?", (job_id,))
        return None if row is None else _job_row(row)

    def list_jobs(self, states: Collection[str] | None = None) -> list[JobRow]:  # noqa: D102
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
        params: tuple[Any, ...] = ()
        if states is not None:
            params = tuple(states)
            sql += f" WHERE state IN ({', '.join('?' * len(params))})"
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY submitted_s, rowid", params).fetchall()
        return [_job_row(row) for row in rows]

    def count_jobs(self, states: Collection[str]) -> dict[str, int]:  # noqa: D102
        wanted = tuple(states)
        if not wanted:
            return {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT state, COUNT(*) FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) "
                "GROUP BY state", wanted).fetchall()
        return {str(state): int(count) for state, count in rows}

    def transition_job(self, job_id: str, state: str, reason: str, time_s: float, *,  # noqa: D102
                       expected_from: Collection[str], detail: dict[str, Any] | None = None,
                       **fields: Any) -> JobEvent:
        with self.transaction():
            row = self._query_one("SELECT state FROM jobs WHERE job_id = ?", (job_id,))
            current = None if row is None else str(row[0])
            if current is None or current not in expected_from:
                raise StateConflictError(
                    job_id, current,
                    f"job {job_id} is {current or 'unknown'}, not {' or '.join(sorted(expected_from))}; "
                    f"it was not moved to {state}")
            self._update_job(job_id, {"state": state, "reason": reason, "updated_s": time_s, **fields})
            event = JobEvent(job_id=job_id, time_s=time_s, from_state=current, state=state, reason=reason,
                             detail=detail or {})
            return self._append_job_event(event)

    def update_job(self, job_id: str, **fields: Any) -> None:  # noqa: D102
        with self.transaction():
            if self._query_one("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)) is None:
                raise StateConflictError(job_id, None, f"job {job_id} is unknown")
            self._update_job(job_id, fields)

    def job_events(self, job_id: str) -> list[JobEvent]:  # noqa: D102
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, job_id, time_s, from_state, state, reason, detail_json FROM job_events "
                "WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [JobEvent(id=r[0], job_id=r[1], time_s=r[2], from_state=r[3], state=r[4], reason=r[5],
                         detail=json.loads(r[6])) for r in rows]

    # -- model registry ------------------------------------------------------------------------------

    def add_model_version(self, row: ModelVersionRow) -> ModelVersionRow:  # noqa: D102
        with self.transaction():  # BEGIN IMMEDIATE: two registrations of one name get distinct numbers
            row = row.model_copy(update={"version": (self.latest_model_version(row.name) or 0) + 1})
            self._execute(
                f"INSERT INTO model_versions ({', '.join(_VERSION_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_VERSION_COLUMNS))})",
                (row.name, row.version, row.kind, row.storage_uri, row.artifact_key,
                 json.dumps(row.files, sort_keys=True), row.digest, row.size_bytes, row.description,
                 json.dumps(row.tags, sort_keys=True), json.dumps(row.lineage, sort_keys=True),
                 row.registered_s, row.registered_by, json.dumps(row.serving, sort_keys=True)))
            return row

    def get_model_version(self, name: str, version: int) -> ModelVersionRow | None:  # noqa: D102
        row = self._query_one(f"SELECT {', '.join(_VERSION_COLUMNS)} FROM model_versions "
                              "WHERE name = ? AND version = ?", (name, version))
        return None if row is None else _version_row(row)

    def latest_model_version(self, name: str) -> int | None:  # noqa: D102
        row = self._query_one("SELECT MAX(version) FROM model_versions WHERE name = ?", (name,))
        return None if row is None or row[0] is None else int(row[0])

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRow]:  # noqa: D102
        sql = f"SELECT {', '.join(_VERSION_COLUMNS)} FROM model_versions"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql, params = sql + " WHERE name = ?", (name,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY name, version", params).fetchall()
        return [_version_row(row) for row in rows]

    def set_model_alias(self, name: str, alias: str, version: int, time_s: float,  # noqa: D102
                        set_by: str = "", if_last_change: int | None = None) -> AliasChange:
        with self.transaction():
            if if_last_change is not None and self.last_alias_change(name, alias) != if_last_change:
                raise AliasMovedError(f"model '{name}': alias '{alias}' was moved since (by another "
                                      "change); this conditional move is not made")
            previous = self._query_one("SELECT version FROM model_aliases WHERE name = ? AND alias = ?",
                                       (name, alias))
            self._execute("INSERT INTO model_aliases (name, alias, version) VALUES (?, ?, ?) "
                          "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                          (name, alias, version))
            from_version = None if previous is None else int(previous[0])
            change = AliasChange(name=name, alias=alias, from_version=from_version, version=version,
                                 time_s=time_s, set_by=set_by)
            cursor = self._execute(
                "INSERT INTO model_alias_history (name, alias, from_version, version, time_s, set_by) "
                "VALUES (?, ?, ?, ?, ?, ?)", (name, alias, change.from_version, version, time_s, set_by))
            return change.model_copy(update={"id": int(cursor.lastrowid)})

    def last_alias_change(self, name: str, alias: str) -> int:  # noqa: D102
        row = self._query_one("SELECT MAX(id) FROM model_alias_history WHERE name = ? AND alias = ?",
                              (name, alias))
        return 0 if row is None or row[0] is None else int(row[0])

    def model_aliases(self, name: str | None = None) -> dict[str, dict[str, int]]:  # noqa: D102
        sql, params = "SELECT name, alias, version FROM model_aliases", ()
        if name is not None:
            sql, params = sql + " WHERE name = ?", (name,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY name, alias", params).fetchall()
        aliases: dict[str, dict[str, int]] = {}
        for model, alias, version in rows:
            aliases.setdefault(str(model), {})[str(alias)] = int(version)
        return aliases

    def model_alias_history(self, name: str) -> list[AliasChange]:  # noqa: D102
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, alias, from_version, version, time_s, set_by FROM model_alias_history "
                "WHERE name = ? ORDER BY id", (name,)).fetchall()
        return [AliasChange(id=r[0], name=r[1], alias=r[2], from_version=r[3], version=r[4], time_s=r[5],
                            set_by=r[6]) for r in rows]

    def _update_job(self, job_id: str, fields: dict[str, Any]) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:  # a programming error, not a user's: the columns are ours
            raise ValueError(f"not updatable job fields: {sorted(unknown)}")
        columns = {_JSON_FIELDS.get(name, name): json.dumps(value, sort_keys=True) if name in _JSON_FIELDS
                   else value for name, value in fields.items()}
        if columns:
            assignments = ", ".join(f"{column} = ?" for column in columns)
            self._execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*columns.values(), job_id))

    def _append_job_event(self, event: JobEvent) -> JobEvent:
        cursor = self._execute(
            "INSERT INTO job_events (job_id, time_s, from_state, state, reason, detail_json) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (event.job_id, event.time_s, event.from_state, event.state, event.reason,
             json.dumps(event.detail, sort_keys=True)),
        )
        return event.model_copy(update={"id": int(cursor.lastrowid)})

    def close(self) -> None:  # noqa: D102
        with self._lock:
            self._conn.close()

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        latest = migrations[-1].version if migrations else 0
        current = self.schema_version()
        if current > latest:
            raise SchemaTooNewError(
                f"state store {self._path} has schema version {current}, newer than this factory "
                f"knows ({latest}); upgrade the factory package or point state_dir elsewhere"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                with self.transaction():
                    # Re-read under the write lock: another process (an actor starting beside this
                    # one) may have applied this step since we looked.
                    current = self.schema_version()
                    if migration.version <= current:
                        continue
                    for statement in migration.statements:
                        self._execute(statement)
                    # PRAGMA takes no parameters; the version is an int from our own table.
                    self._execute(f"PRAGMA user_version = {int(migration.version)}")
                    current = migration.version
            except sqlite3.Error as exc:
                raise StoreError(
                    f"state store {self._path}: migration {migration.version} "
                    f"({migration.description}) failed and was rolled back: {exc}"
                ) from None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreError(
                        f"state store {self._path} stayed locked for {BUSY_TIMEOUT_S:.0f} s: {exc}"
                    ) from exc
                raise

    def _query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()
