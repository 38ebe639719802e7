"""The SQLite state store: durability, atomic transactions, migrations, crash safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.errors import SchemaTooNewError, StoreError
from factory.store import AuditEvent, SQLiteStore, open_store
from factory.store.migrations import LATEST_VERSION, MIGRATIONS, Migration


class Boom(Exception):
    """Raised inside a transaction to abort it."""


def event(action: str = "factory.up", subject: str = "", **detail: object) -> AuditEvent:
    return AuditEvent(time_s=1_720_000_000.0, actor="cli:test", action=action, subject=subject,
                      detail=dict(detail))


def raw(path: Path) -> sqlite3.Connection:
    """A separate connection, as another process or a person with `sqlite3` would have."""
    return sqlite3.connect(path, isolation_level=None)


def raw_one(path: Path, sql: str) -> object:
    connection = raw(path)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def tables(path: Path) -> set[str]:
    connection = raw(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        connection.close()
    return {name for (name,) in rows}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "factory.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db_path)
    yield opened
    opened.close()


# --- opening -----------------------------------------------------------------------------------


def test_open_creates_file_and_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "factory.db"

    opened = open_store(path)
    try:
        assert path.is_file()
        assert opened.location == str(path)
    finally:
        opened.close()


def test_store_uses_wal_journal(store: SQLiteStore, db_path: Path) -> None:
    assert str(raw_one(db_path, "PRAGMA journal_mode")).lower() == "wal"


def test_commits_wait_for_the_disk(store: SQLiteStore) -> None:
    """synchronous=FULL: a commit is fsynced before it returns. Only a power cut shows this
    otherwise, so read the setting of the store's own connection."""
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_new_store_is_at_latest_schema(store: SQLiteStore, db_path: Path) -> None:
    assert store.schema_version() == LATEST_VERSION
    assert raw_one(db_path, "PRAGMA user_version") == LATEST_VERSION
    assert {"meta", "actor_state", "audit_log"} <= tables(db_path)


def test_unopenable_path_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "afile" / "factory.db"

    with pytest.raises(StoreError) as info:
        SQLiteStore(path)

    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# --- round trips -------------------------------------------------------------------------------


def test_meta_round_trip_and_overwrite(store: SQLiteStore) -> None:
    assert store.get_meta("clock_spec") is None

    store.set_meta("clock_spec", '{"mode": "wall"}')
    store.set_meta("clock_spec", '{"mode": "replay"}')

    assert store.get_meta("clock_spec") == '{"mode": "replay"}'


def test_actor_state_round_trip_and_replace(store: SQLiteStore) -> None:
    assert store.get_actor_state("scheduler") is None

    store.put_actor_state("scheduler", {"round": 1, "queue": ["a", "b"]})
    store.put_actor_state("scheduler", {"round": 2})

    assert store.get_actor_state("scheduler") == {"round": 2}
    assert store.get_actor_state("telemetry") is None


def test_audit_round_trip(store: SQLiteStore) -> None:
    written = event("actor.restarted", subject="scheduler", attempt=2, reason="oom")

    event_id = store.append_audit(written)

    [read] = store.list_audit()
    assert read == written.model_copy(update={"id": event_id})


def test_everything_persists_across_close_and_reopen(db_path: Path) -> None:
    first = SQLiteStore(db_path)
    first.set_meta("factory_id", "f-123")
    first.put_actor_state("scheduler", {"round": 7})
    first.append_audit(event("factory.up"))
    first.close()

    second = SQLiteStore(db_path)
    try:
        assert second.get_meta("factory_id") == "f-123"
        assert second.get_actor_state("scheduler") == {"round": 7}
        assert [e.action for e in second.list_audit()] == ["factory.up"]
        assert second.schema_version() == LATEST_VERSION
    finally:
        second.close()


def test_audit_ids_increase(store: SQLiteStore) -> None:
    ids = [store.append_audit(event(subject=str(i))) for i in range(5)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_list_audit_returns_newest_limit_oldest_first(store: SQLiteStore) -> None:
    for i in range(10):
        store.append_audit(event(subject=str(i)))

    listed = store.list_audit(limit=3)

    assert [e.subject for e in listed] == ["7", "8", "9"]
    assert [e.id for e in listed] == sorted(e.id for e in listed if e.id is not None)


def test_action_prefix_matches_whole_dotted_components(store: SQLiteStore) -> None:
    for action in ["factory.up", "factory", "factory_x", "factoryx.up", "factory.down",
                   "actor.restarted", "FACTORY.up", "Factory"]:
        store.append_audit(event(action))

    matched = [e.action for e in store.list_audit(action_prefix="factory")]

    assert matched == ["factory.up", "factory", "factory.down"]


def test_action_prefix_treats_like_wildcards_literally(store: SQLiteStore) -> None:
    for action in ["job_run.start", "jobXrun.start", "job%.start", "jobs.start"]:
        store.append_audit(event(action))

    assert [e.action for e in store.list_audit(action_prefix="job_run")] == ["job_run.start"]
    assert [e.action for e in store.list_audit(action_prefix="job%")] == ["job%.start"]


def test_action_prefix_with_limit_counts_only_matches(store: SQLiteStore) -> None:
    for i in range(5):
        store.append_audit(event("factory.up", subject=str(i)))
        store.append_audit(event("actor.restarted", subject=str(i)))

    listed = store.list_audit(limit=2, action_prefix="factory")

    assert [(e.action, e.subject) for e in listed] == [("factory.up", "3"), ("factory.up", "4")]


# --- transactions ------------------------------------------------------------------------------


def test_transaction_commits_all_writes_together(store: SQLiteStore, db_path: Path) -> None:
    with store.transaction():
        store.set_meta("a", "1")
        store.append_audit(event())

    assert raw_one(db_path, "SELECT value FROM meta WHERE key = 'a'") == "1"
    assert raw_one(db_path, "SELECT count(*) FROM audit_log") == 1


def test_transaction_that_raises_commits_nothing(store: SQLiteStore, db_path: Path) -> None:
    store.set_meta("kept", "before")

    with pytest.raises(Boom), store.transaction():
        store.set_meta("kept", "changed")
        store.set_meta("new", "x")
        store.put_actor_state("scheduler", {"round": 1})
        store.append_audit(event())
        raise Boom

    assert store.get_meta("kept") == "before"
    assert store.get_meta("new") is None
    assert store.get_actor_state("scheduler") is None
    assert store.list_audit() == []
    # ... and not from a fresh connection either.
    assert raw_one(db_path, "SELECT count(*) FROM audit_log") == 0
    assert raw_one(db_path, "SELECT value FROM meta WHERE key = 'kept'") == "before"
    # The store is usable afterwards.
    store.set_meta("new", "y")
    assert raw_one(db_path, "SELECT value FROM meta WHERE key = 'new'") == "y"


def test_nested_transaction_joins_the_outer(store: SQLiteStore, db_path: Path) -> None:
    with pytest.raises(Boom), store.transaction():
        store.set_meta("outer", "1")
        with store.transaction():
            store.set_meta("inner", "1")
        # The inner block has ended, but nothing is visible outside the outer one yet.
        assert raw_one(db_path, "SELECT count(*) FROM meta") == 0
        raise Boom

    assert store.get_meta("outer") is None
    assert store.get_meta("inner") is None


def test_nested_transaction_commits_with_the_outer(store: SQLiteStore, db_path: Path) -> None:
    with store.transaction():
        with store.transaction():
            store.set_meta("inner", "1")
        store.set_meta("outer", "1")

    assert raw_one(db_path, "SELECT count(*) FROM meta") == 2


def test_writes_from_two_processes_on_one_file_both_land(db_path: Path) -> None:
    """Two stores on one file (two actor processes): the second writer waits, it never fails."""
    first = SQLiteStore(db_path)
    second = SQLiteStore(db_path)
    second_done = threading.Event()
    errors: list[BaseException] = []

    def write_second() -> None:
        try:
            with second.transaction():
                second.append_audit(event("scheduler.round", subject="second"))
                second.set_meta("writer", "second")
        except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)
        finally:
            second_done.set()

    try:
        with first.transaction():
            first.append_audit(event("factory.up", subject="first"))
            writer = threading.Thread(target=write_second)
            writer.start()
            # The second writer is blocked on the write lock while the first holds it.
            assert not second_done.wait(0.3)
            first.set_meta("writer", "first")
        writer.join(timeout=10)

        assert not errors
        assert second_done.is_set()
        assert [e.subject for e in first.list_audit()] == ["first", "second"]
        assert first.get_meta("writer") == "second"
        assert second.get_meta("writer") == "second"
    finally:
        first.close()
        second.close()


# --- migrations --------------------------------------------------------------------------------

V1 = Migration(1, "things", ("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",))
V2 = Migration(2, "colour of things and a tag table", (
    "ALTER TABLE things ADD COLUMN colour TEXT NOT NULL DEFAULT 'grey'",
    "CREATE TABLE tags (thing_id INTEGER NOT NULL, tag TEXT NOT NULL)",
))
V3_BROKEN = Migration(3, "half-broken step", (
    "CREATE TABLE v3_new (id INTEGER PRIMARY KEY)",
    "ALTER TABLE things ADD COLUMN weight_kg REAL",
    "CREATE TABLEE oops (x)",
))


def test_migration_adds_schema_and_keeps_data(db_path: Path) -> None:
    v1 = SQLiteStore(db_path, migrations=(V1,))
    assert v1.schema_version() == 1
    with v1.transaction():
        v1._execute("INSERT INTO things (name) VALUES ('widget')")
    v1.close()

    v2 = SQLiteStore(db_path, migrations=(V1, V2))
    try:
        assert v2.schema_version() == 2
        assert raw_one(db_path, "SELECT name || '/' || colour FROM things") == "widget/grey"
        assert "tags" in tables(db_path)
    finally:
        v2.close()


def test_failed_migration_rolls_back_and_names_itself(db_path: Path) -> None:
    SQLiteStore(db_path, migrations=(V1,)).close()
    v2 = SQLiteStore(db_path, migrations=(V1, V2))
    with v2.transaction():
        v2._execute("INSERT INTO things (name) VALUES ('widget')")
    v2.close()

    with pytest.raises(StoreError) as info:
        SQLiteStore(db_path, migrations=(V1, V2, V3_BROKEN))

    message = str(info.value)
    assert "migration 3" in message
    assert "half-broken step" in message
    assert "\n" not in message
    assert raw_one(db_path, "PRAGMA user_version") == 2
    assert raw_one(db_path, "SELECT name FROM things") == "widget"
    assert "v3_new" not in tables(db_path)
    columns = {row[1] for row in raw(db_path).execute("PRAGMA table_info(things)").fetchall()}
    assert "weight_kg" not in columns
    # A fixed release of migration 3 applies cleanly afterwards.
    fixed = Migration(3, "fixed step", ("CREATE TABLE v3_new (id INTEGER PRIMARY KEY)",))
    reopened = SQLiteStore(db_path, migrations=(V1, V2, fixed))
    try:
        assert reopened.schema_version() == 3
    finally:
        reopened.close()


def test_store_from_newer_code_is_refused_untouched(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    connection = raw(db_path)
    connection.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    connection.close()
    before = db_path.read_bytes()

    with pytest.raises(SchemaTooNewError) as info:
        SQLiteStore(db_path)

    message = str(info.value)
    assert "upgrade" in message
    assert str(db_path) in message
    assert isinstance(info.value, StoreError)
    assert db_path.read_bytes() == before
    assert raw_one(db_path, "PRAGMA user_version") == LATEST_VERSION + 5


def test_released_migrations_are_numbered_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == MIGRATIONS[-1].version


# --- crash safety ------------------------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    from factory.store import AuditEvent, SQLiteStore

    path, committed, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = SQLiteStore(path)
    for i in range(committed):
        store.append_audit(AuditEvent(time_s=i, actor="child", action="committed", subject=str(i)))
    with store.transaction():
        # Enough to overflow SQLite's page cache, so uncommitted pages reach the WAL on disk.
        for i in range(1500):
            store.append_audit(AuditEvent(time_s=i, actor="child", action="uncommitted",
                                          detail={"pad": "x" * 4000}))
        store.set_meta("uncommitted", "yes")
        store.put_actor_state("scheduler", {"uncommitted": True})
        print("dying inside the transaction", flush=True)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(1)
    print("unreachable", flush=True)
""")


@pytest.mark.parametrize("how", ["sigkill", "os_exit"])
def test_process_killed_mid_transaction_loses_only_uncommitted(db_path: Path, how: str) -> None:
    committed = 25

    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(db_path), str(committed), how],
        capture_output=True, text=True, timeout=60,
    )

    assert "dying inside the transaction" in child.stdout, child.stderr
    assert "unreachable" not in child.stdout
    assert child.returncode != 0
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 1_000_000, "uncommitted pages never hit disk"

    reopened = SQLiteStore(db_path)
    try:
        events = reopened.list_audit(limit=10_000)
        assert [e.subject for e in events] == [str(i) for i in range(committed)]
        assert {e.action for e in events} == {"committed"}
        assert reopened.get_meta("uncommitted") is None
        assert reopened.get_actor_state("scheduler") is None
        assert raw_one(db_path, "PRAGMA integrity_check") == "ok"
        # The recovered store takes new writes.
        reopened.append_audit(event("factory.up"))
        assert reopened.list_audit(limit=1)[0].action == "factory.up"
    finally:
        reopened.close()


def test_second_writer_waits_for_a_crashed_writers_lock_to_clear(db_path: Path) -> None:
    """A writer that dies holding the write lock does not block the next one for long."""
    SQLiteStore(db_path).close()
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(db_path), "0", "sigkill"],
        capture_output=True, text=True, timeout=60,
    )
    assert "dying inside the transaction" in child.stdout, child.stderr

    started = time.monotonic()
    survivor = SQLiteStore(db_path)
    try:
        survivor.append_audit(event("factory.up"))
        assert time.monotonic() - started < 5
        assert [e.action for e in survivor.list_audit()] == ["factory.up"]
    finally:
        survivor.close()


def test_processes_opening_a_new_store_together_all_migrate_it(tmp_path: Path) -> None:
    """Control-plane actors start side by side on a fresh state dir; none may fail migrating."""
    db = tmp_path / "race.db"
    code = (
        "import sys, time; from factory.store import SQLiteStore\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(SQLiteStore(sys.argv[1]).schema_version())\n"
    )
    start_at = time.time() + 1.5  # past every child's import, so they open at once
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(db), str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * 4, results
    assert [out.strip() for out, _ in results] == [str(LATEST_VERSION)] * 4


def test_endpoints_are_stored_as_a_whole_set_that_survives_a_reopen(db_path: Path,
                                                                    store: SQLiteStore) -> None:
    first = {"nlp": {"model": "nlp", "follows": "production"}, "vision": {"model": "vision", "follows": None}}
    store.replace_endpoints(first)
    assert store.list_endpoints() == first
    store.replace_endpoints({"vision": {"model": "vision", "follows": "staging"}})
    store.close()
    reopened = SQLiteStore(db_path)
    try:
        assert reopened.list_endpoints() == {"vision": {"model": "vision", "follows": "staging"}}
        reopened.replace_endpoints({})
        assert reopened.list_endpoints() == {}
    finally:
        reopened.close()
