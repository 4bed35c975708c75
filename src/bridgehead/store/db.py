"""Engine, sessions and the translation of database errors into Bridgehead errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from bridgehead.errors import BridgeheadError, Conflict, StoreUnavailable, ValidationFailed

log = logging.getLogger(__name__)

__all__ = ["Database", "translate_db_errors"]


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    """The store boundary: foreign database exceptions become Bridgehead errors here and nowhere else."""
    try:
        yield
    except BridgeheadError:
        raise
    except IntegrityError as exc:
        raise Conflict(
            "The change conflicts with existing data.", details={"reason": str(exc.orig).splitlines()[0]}
        ) from exc
    except DataError as exc:
        # The database refused a value the request carried (PostgreSQL: a NUL character in text, a string
        # longer than its column, a number out of range). The client's input, not the store, is at fault.
        raise ValidationFailed(
            "A value in the request cannot be stored or searched for.",
            details={"reason": next(iter(str(exc.orig).splitlines()), "")},
        ) from exc
    except (OperationalError, DBAPIError) as exc:
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        raise StoreUnavailable("The database is unavailable; retry shortly.") from exc
    except SQLAlchemyError as exc:
        log.exception("database error")
        raise StoreUnavailable("The database failed to complete the request.") from exc


class Database:
    """One engine per app. Write sessions on SQLite start with BEGIN IMMEDIATE so that writers queue
    instead of failing on a stale snapshot; PostgreSQL serializes the audit chain with an advisory lock."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        # Every domain's tables and mapper events (e.g. the Default experiment created with the central
        # unit), whichever process opens the database: server, CLI or tests.
        import bridgehead.store.models  # noqa: F401

        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # Pooled: when the last connection to a WAL database closes, SQLite checkpoints and deletes the
            # WAL, so a connection per request would pay that (and the PRAGMAs) on every call, about twice the
            # cost of a small write. Server workers are spawned, not forked, so no handle crosses processes.
            kwargs["poolclass"] = QueuePool
            kwargs["pool_size"] = 5
            kwargs["max_overflow"] = 20
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 5
            kwargs["max_overflow"] = 10
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(bridgehead_write=True), expire_on_commit=False
        )

    @contextlib.contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends cleanly, rolled back otherwise."""
        factory = self._write if write else self._read
        with translate_db_errors():
            session = factory()
            try:
                yield session
                if write:
                    session.commit()
                # A read session just closes: close() ends the transaction without expiring loaded
                # objects, so callers may render them after the block.
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def ping(self) -> None:
        with translate_db_errors(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("bridgehead_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
