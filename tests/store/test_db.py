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
    assert current_revision(db) == head_revision() == "0002"
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
