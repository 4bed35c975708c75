"""Persistence: migrations on both engines, WAL on SQLite, database errors translated at the boundary."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from bridgehead.errors import Conflict, StoreUnavailable
from bridgehead.org.models import BusinessUnit
from bridgehead.store import Database, translate_db_errors, upgrade
from bridgehead.store.migrate import current_revision, head_revision
from bridgehead.store.models import metadata


def test_migrations_create_every_model_table_and_are_idempotent(db: Database) -> None:
    upgrade(db)  # already at head: a no-op, not an error
    assert current_revision(db) == head_revision() == "0009"
    tables = set(inspect(db.engine).get_table_names())
    assert set(metadata.tables) <= tables


def test_schema_matches_the_models(db: Database) -> None:
    """Alembic's autogenerate finds nothing to add: the migration tree and the models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_integrity_errors_become_conflict_and_roll_back(db: Database) -> None:
    with db.session(write=True) as session:
        session.add(BusinessUnit(slug="same", name="A"))
    with pytest.raises(Conflict), db.session(write=True) as session:
        session.add(BusinessUnit(slug="other", name="B"))
        session.flush()
        session.add(BusinessUnit(slug="same", name="C"))
        session.flush()
    with db.session() as session:
        # The whole transaction rolled back: "other" is not half-written.
        assert session.query(BusinessUnit).filter_by(slug="other").count() == 0


def test_unreachable_database_is_store_unavailable() -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable):
        db.ping()
    db.dispose()


def test_translate_passes_bridgehead_errors_through() -> None:
    with pytest.raises(Conflict, match="mine"), translate_db_errors():
        raise Conflict("mine")
    with pytest.raises(Conflict), translate_db_errors():
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))


def test_write_sessions_serialize_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A write session takes the write lock at BEGIN, so a second writer waits instead of failing later."""
    import threading
    import time

    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(db)
    order: list[str] = []
    entered = threading.Event()

    def first() -> None:
        with db.session(write=True) as session:
            session.add(BusinessUnit(slug="first", name="first"))
            session.flush()  # BEGIN IMMEDIATE has run: this thread holds the write lock
            entered.set()
            time.sleep(0.5)
            order.append("first-commit")

    t = threading.Thread(target=first)
    t.start()
    entered.wait()
    with db.session(write=True) as session:
        count = session.execute(text("SELECT count(*) FROM business_units")).scalar_one()
        order.append("second-begin")
    t.join()
    assert order == ["first-commit", "second-begin"]
    assert count == 1
    db.dispose()


def _run_r1(db: Database) -> None:
    with db.session(write=True) as session:
        unit = BusinessUnit(slug="central", name="Central", is_central=True)
        session.add(unit)
        session.flush()
        session.execute(
            text(
                "INSERT INTO runs (id, experiment_id, business_unit_id, name, status, start_ms, user_name, "
                "source_name, source_type, lifecycle_stage, artifact_uri) VALUES ('r1', '0', :unit, 'r', "
                "'RUNNING', 1, '', '', '', 'active', '')"
            ),
            {"unit": unit.id},
        )


def test_migration_0003_merges_duplicate_metric_points(db: Database) -> None:
    """Points stored twice by racing writers before 0003 become one row, linked to a model if a copy was."""
    from alembic import command

    from bridgehead.store.migrate import alembic_config

    _run_r1(db)
    command.downgrade(alembic_config(db), "0002")
    insert = text(
        'INSERT INTO metrics (run_id, "key", value, is_nan, timestamp_ms, step, model_id) '
        "VALUES ('r1', :key, :value, false, 10, :step, :model)"
    )
    with db.engine.begin() as conn:
        for key, value, step, model in [
            ("acc", 0.5, 1, None),
            ("acc", 0.5, 1, "m-1"),
            ("acc", 0.5, 1, None),
            ("acc", 0.6, 2, None),
            ("loss", 0.5, 1, None),
            ("loss", 0.5, 1, None),
        ]:
            conn.execute(insert, {"key": key, "value": value, "step": step, "model": model})
    upgrade(db)
    with db.engine.connect() as conn:
        rows = conn.execute(
            text('SELECT "key", value, step, model_id FROM metrics ORDER BY "key", step')
        ).all()
        assert [tuple(r) for r in rows] == [
            ("acc", 0.5, 1, "m-1"),
            ("acc", 0.6, 2, None),
            ("loss", 0.5, 1, None),
        ]
        with pytest.raises(IntegrityError):
            conn.execute(insert, {"key": "acc", "value": 0.6, "step": 2, "model": None})


_POINTS = (
    'SELECT run_id, "key", step, timestamp_ms, value, is_nan, model_id FROM metrics ORDER BY "key", step'
)


def test_migration_0008_keys_metric_points_by_the_point_and_keeps_every_row(db: Database) -> None:
    """0008 drops the surrogate id: the point is the key (a WITHOUT ROWID table on SQLite). Every row, its NaN
    flag and its model link survive the upgrade and the downgrade; an identical point is still refused."""
    from alembic import command

    from bridgehead.store.migrate import alembic_config

    _run_r1(db)
    command.downgrade(alembic_config(db), "0007")
    insert = text(
        'INSERT INTO metrics (run_id, "key", value, is_nan, timestamp_ms, step, model_id) '
        "VALUES ('r1', :key, :value, :nan, :ts, :step, :model)"
    )
    points = [
        ("loss", 0.9, False, 10, 1, None),
        ("acc", 0.5, False, 10, 1, "m-1"),
        ("acc", 0.0, True, 11, 2, None),
        ("acc", 0.5, False, 12, 2, None),
        ("acc", 0.7, False, 12, 2, None),  # same step and time, another value: a point of its own
    ]
    with db.engine.begin() as conn:
        for key, value, nan, ts, step, model in points:
            conn.execute(
                insert, {"key": key, "value": value, "nan": nan, "ts": ts, "step": step, "model": model}
            )
        before = [tuple(r) for r in conn.execute(text(_POINTS)).all()]
    assert len(before) == len(points)

    upgrade(db)
    inspector = inspect(db.engine)
    assert "id" not in {c["name"] for c in inspector.get_columns("metrics")}
    assert inspector.get_pk_constraint("metrics")["constrained_columns"] == [
        "run_id",
        "key",
        "step",
        "timestamp_ms",
        "value",
        "is_nan",
    ]
    assert "ux_metrics_point" not in {i["name"] for i in inspector.get_indexes("metrics")}
    with db.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(_POINTS)).all()] == before
        if db.is_sqlite:
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'metrics'")).scalar_one()
            assert "WITHOUT ROWID" in ddl
        with pytest.raises(IntegrityError):
            conn.execute(
                insert, {"key": "acc", "value": 0.5, "nan": False, "ts": 12, "step": 2, "model": None}
            )

    command.downgrade(alembic_config(db), "0007")
    inspector = inspect(db.engine)
    assert "id" in {c["name"] for c in inspector.get_columns("metrics")}
    assert "ux_metrics_point" in {i["name"] for i in inspector.get_indexes("metrics")}
    with db.engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(text(_POINTS)).all()] == before
        conn.execute(insert, {"key": "new", "value": 1.0, "nan": False, "ts": 13, "step": 3, "model": None})
    upgrade(db)
    with db.engine.connect() as conn:
        assert len(conn.execute(text(_POINTS)).all()) == len(points) + 1


def test_nowait_write_session_refuses_at_once_when_another_writer_holds_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3
    import time

    from bridgehead.store.db import WriteLockBusy

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    with pytest.raises(WriteLockBusy), db.session(write=True, wait=False) as session:
        session.execute(text("SELECT 1"))
    assert time.perf_counter() - started < 5  # refused, not queued behind the 30 s busy timeout
    holder.execute("ROLLBACK")
    with db.session(write=True, wait=False) as session:  # free again: the same pooled connection works
        session.execute(text("SELECT 1"))
    with db.engine.connect() as conn:  # and waits again, as every other session does
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    holder.close()
    db.dispose()


def test_driver_write_commits_rolls_back_refuses_at_once_and_translates_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``Database.driver_write``, SQLite's own connection for the logging lane: committed when the block ends,
    rolled back when it raises, WriteLockBusy at once when another writer holds the lock, and the driver's
    errors become Bridgehead errors; the pooled connection goes back waiting for locks as before."""
    import sqlite3
    import time

    from bridgehead.store.db import WriteLockBusy

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY)")

    def keys() -> list[str]:
        with db.engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql("SELECT k FROM t ORDER BY k")]

    with db.driver_write() as driver:
        driver.execute("INSERT INTO t VALUES ('a')")
    assert keys() == ["a"]
    with pytest.raises(RuntimeError), db.driver_write() as driver:
        driver.execute("INSERT INTO t VALUES ('b')")
        raise RuntimeError("the caller failed")
    assert keys() == ["a"]
    with pytest.raises(Conflict), db.driver_write() as driver:
        driver.execute("INSERT INTO t VALUES ('c')")
        driver.execute("INSERT INTO t VALUES ('a')")
    with pytest.raises(StoreUnavailable), db.driver_write() as driver:
        driver.execute("INSERT INTO missing VALUES ('d')")
    assert keys() == ["a"]

    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    with pytest.raises(WriteLockBusy), db.driver_write():
        pass
    assert time.perf_counter() - started < 5  # refused, not queued behind the 30 s busy timeout
    holder.execute("ROLLBACK")
    holder.close()
    with db.driver_write() as driver:
        driver.execute("INSERT INTO t VALUES ('e')")
    assert keys() == ["a", "e"]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    db.dispose()


def test_driver_write_is_for_sqlite_only(db: Database) -> None:
    if db.is_sqlite:
        with db.driver_write() as driver:
            assert driver.execute("SELECT 1").fetchone() == (1,)
    else:
        with pytest.raises(RuntimeError), db.driver_write():
            pass


def test_wal_is_checkpointed_in_the_background(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Large writes leave the log for the background thread to copy into the database file, so no commit
    pays for the copy; the file grows without anyone asking for a checkpoint."""
    import time

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 20_000
    with db.session(write=True) as session:
        session.execute(text("CREATE TABLE blobs (b BLOB)"))
    main = tmp_path / "x.db"
    before = main.stat().st_size
    with db.session(write=True) as session:
        for _ in range(6):
            session.execute(text("INSERT INTO blobs VALUES (:b)"), {"b": b"x" * (1 << 20)})
    assert (tmp_path / "x.db-wal").stat().st_size > 4 << 20
    deadline = time.monotonic() + 20
    while main.stat().st_size < before + (6 << 20) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main.stat().st_size >= before + (6 << 20)
    db.dispose()


def test_migration_0003_saves_the_default_experiment_for_an_existing_central_unit(db: Database) -> None:
    """Before 0003 the Default experiment was created lazily by requests; after it, it exists whenever the
    central unit does, so no request writes it."""
    from alembic import command

    from bridgehead.store.migrate import alembic_config

    with db.session(write=True) as session:
        unit = BusinessUnit(slug="central", name="Central", is_central=True)
        session.add(unit)
        session.flush()
        unit_id = unit.id
    command.downgrade(alembic_config(db), "0002")
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM experiments WHERE id = '0'"))  # as a stop-7 database may be
    upgrade(db)
    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT name, business_unit_id, visibility, lifecycle_stage, created_ms FROM experiments WHERE id = '0'"
            )
        ).one()
    assert tuple(row)[:4] == ("Default", unit_id, "organization", "active") and row.created_ms > 0
