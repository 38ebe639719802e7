"""Versioned schema migrations of the SQLite state store.

Invariants:
  * Versions are 1, 2, 3, ... with no gaps; `PRAGMA user_version` records the applied one.
  * A migration is applied inside one transaction together with the version bump, so a crash or an
    error leaves the store at the previous version with its data untouched.
  * Migrations are append-only: a released migration is never edited, a new one is added.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: SQL statements that take the store from `version - 1` to `version`."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="metadata, per-actor state and the audit log",
        statements=(
            """CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
            """CREATE TABLE actor_state (
                name TEXT PRIMARY KEY,
                state_json TEXT NOT NULL,
                updated_wall_s REAL NOT NULL
            )""",
            """CREATE TABLE audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                time_s REAL NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL DEFAULT '',
                detail_json TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX audit_log_action ON audit_log (action)",
        ),
    ),
    Migration(
        version=2,
        description="jobs and their state transitions",
        statements=(
            """CREATE TABLE jobs (
                job_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                team TEXT NOT NULL,
                kind TEXT NOT NULL,
                spec_json TEXT NOT NULL,
                spec_hash TEXT NOT NULL,
                state TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                submitted_s REAL NOT NULL,
                deadline_s REAL,
                updated_s REAL NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                progress_json TEXT NOT NULL DEFAULT '{}',
                schedule_json TEXT NOT NULL DEFAULT '{}',
                accounting_json TEXT NOT NULL DEFAULT '{}',
                error TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX jobs_state ON jobs (state)",
            """CREATE TABLE job_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id TEXT NOT NULL REFERENCES jobs (job_id),
                time_s REAL NOT NULL,
                from_state TEXT NOT NULL DEFAULT '',
                state TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                detail_json TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX job_events_job ON job_events (job_id, id)",
        ),
    ),
    Migration(
        version=3,
        description="model registry: versions, aliases and their history",
        statements=(
            """CREATE TABLE model_versions (
                name TEXT NOT NULL,
                version INTEGER NOT NULL,
                kind TEXT NOT NULL,
                storage_uri TEXT NOT NULL,
                artifact_key TEXT NOT NULL,
                files_json TEXT NOT NULL,
                digest TEXT NOT NULL,
                size_bytes INTEGER NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                tags_json TEXT NOT NULL DEFAULT '{}',
                lineage_json TEXT NOT NULL DEFAULT '{}',
                registered_s REAL NOT NULL,
                registered_by TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (name, version)
            )""",
            """CREATE TABLE model_aliases (
                name TEXT NOT NULL,
                alias TEXT NOT NULL,
                version INTEGER NOT NULL,
                PRIMARY KEY (name, alias)
            )""",
            """CREATE TABLE model_alias_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL,
                alias TEXT NOT NULL,
                from_version INTEGER,
                version INTEGER NOT NULL,
                time_s REAL NOT NULL,
                set_by TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX model_alias_history_name ON model_alias_history (name, id)",
        ),
    ),
    Migration(
        version=4,
        description="how a model version is served (its predictor)",
        statements=(
            "ALTER TABLE model_versions ADD COLUMN serving_json TEXT NOT NULL DEFAULT '{}'",
        ),
    ),
    Migration(
        version=5,
        description="client request ids and what their mutation returned (a retry never acts twice)",
        statements=(
            """CREATE TABLE requests (
                request_id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                result_json TEXT NOT NULL,
                time_s REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        version=6,
        description="endpoints in their own table (they were a JSON blob in the serving actor's state)",
        statements=(
            """CREATE TABLE endpoints (
                name TEXT PRIMARY KEY,
                endpoint_json TEXT NOT NULL,
                updated_wall_s REAL NOT NULL
            )""",
            # Each endpoint of the blob becomes a row (json_each gives an object member as JSON text).
            """INSERT INTO endpoints (name, endpoint_json, updated_wall_s)
               SELECT member.key, member.value, state.updated_wall_s
               FROM actor_state AS state, json_each(state.state_json, '$.endpoints') AS member
               WHERE state.name = 'serving'""",
            """UPDATE actor_state SET state_json = json_remove(state_json, '$.endpoints')
               WHERE name = 'serving'""",
        ),
    ),
    Migration(
        version=7,
        description="registration is part of a job's states (SUCCEEDED -> REGISTERING -> REGISTERED or "
                    "REGISTRATION_FAILED); jobs whose outcome is in their accounting move there",
        statements=(
            # The outcome used to be only in the accounting ("model" or "registration_error"): such a job
            # gets the two transitions it would have had, at the time it was last updated (the outcome's).
            """CREATE TEMP TABLE registered_before AS
               SELECT job_id, updated_s, json_extract(spec_json, '$.register_as') AS model_name,
                      json_extract(accounting_json, '$.model') AS model_ref,
                      COALESCE(json_extract(accounting_json, '$.registration_error'), '') AS error
               FROM jobs
               WHERE state = 'SUCCEEDED' AND COALESCE(json_extract(spec_json, '$.register_as'), '') != ''
                 AND (json_extract(accounting_json, '$.model') IS NOT NULL
                      OR json_extract(accounting_json, '$.registration_error') IS NOT NULL)""",
            """INSERT INTO job_events (job_id, time_s, from_state, state, reason, detail_json)
               SELECT job_id, updated_s, 'SUCCEEDED', 'REGISTERING', 'registering as ' || model_name, '{}'
               FROM registered_before ORDER BY job_id""",
            """INSERT INTO job_events (job_id, time_s, from_state, state, reason, detail_json)
               SELECT job_id, updated_s, 'REGISTERING',
                      CASE WHEN model_ref IS NOT NULL THEN 'REGISTERED' ELSE 'REGISTRATION_FAILED' END,
                      CASE WHEN model_ref IS NOT NULL THEN 'registered as ' || model_ref ELSE error END, '{}'
               FROM registered_before ORDER BY job_id""",
            """UPDATE jobs SET
                 state = (SELECT CASE WHEN model_ref IS NOT NULL THEN 'REGISTERED'
                                      ELSE 'REGISTRATION_FAILED' END
                          FROM registered_before AS r WHERE r.job_id = jobs.job_id),
                 reason = (SELECT CASE WHEN model_ref IS NOT NULL THEN 'registered as ' || model_ref
                                       ELSE error END
                           FROM registered_before AS r WHERE r.job_id = jobs.job_id)
               WHERE job_id IN (SELECT job_id FROM registered_before)""",
            "DROP TABLE registered_before",
        ),
    ),
    Migration(
        version=8,
        description="grid_events: demand-response events (the grid's load targets) and their outcome",
        statements=(
            """CREATE TABLE grid_events (
                event_id TEXT PRIMARY KEY,
                start_s REAL NOT NULL,
                end_s REAL NOT NULL,
                event_json TEXT NOT NULL,
                updated_wall_s REAL NOT NULL
            )""",
            "CREATE INDEX grid_events_by_end ON grid_events (end_s)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
