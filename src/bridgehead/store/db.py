"""Engine, sessions and the translation of database errors into Bridgehead errors."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from bridgehead.errors import BridgeheadError, Conflict, StoreUnavailable, ValidationFailed

log = logging.getLogger(__name__)
BUSY_TIMEOUT_MS = 30_000

__all__ = ["Database", "WriteLockBusy", "translate_db_errors"]


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


class WriteLockBusy(StoreUnavailable):
    """A ``wait=False`` write session found SQLite's write lock taken (see ``Database.session``)."""


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
            # The connection used last has the warmest page cache.
            kwargs["pool_use_lifo"] = True
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
        self._write_nowait = sessionmaker(
            self.engine.execution_options(bridgehead_write=True, bridgehead_nowait=True),
            expire_on_commit=False,
        )
        if self.is_sqlite:
            _CHECKPOINTS.add(self.engine)

    @contextlib.contextmanager
    def session(self, *, write: bool = False, wait: bool = True) -> Iterator[Session]:
        """A transaction: committed when the block ends cleanly, rolled back otherwise.

        ``wait=False`` (SQLite write sessions): raise WriteLockBusy at once, rather than wait for another
        writer, when the write lock is taken. For work short enough to run on the event loop, which must
        never block on a lock."""
        factory = self._write if write and wait else self._write_nowait if write else self._read
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

    @contextlib.contextmanager
    def driver_write(self) -> Iterator[sqlite3.Connection]:
        """SQLite only: a write transaction on the driver's own connection (one of the pool's), past
        SQLAlchemy's session and connection layers, which cost a small write about four times what SQLite's
        own work does (a single metric point: about 0.2 of 0.29 ms). For a hot path's few statements (the MLflow
        logging lane). As ``session(write=True, wait=False)``: WriteLockBusy at once when another writer
        holds the lock, committed when the block ends cleanly, rolled back otherwise, and the driver's errors
        become Bridgehead errors."""
        if not self.is_sqlite:
            raise RuntimeError("driver_write is for SQLite databases")
        with _translate_driver_errors():
            pooled = self.engine.raw_connection()
            try:
                driver: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
                _begin_nowait(driver)
                try:
                    yield driver
                    driver.execute("COMMIT")
                except BaseException:
                    if driver.in_transaction:
                        driver.execute("ROLLBACK")
                    raise
            finally:
                pooled.close()  # back to the pool

    def ping(self) -> None:
        with translate_db_errors(), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        _CHECKPOINTS.remove(self.engine)
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA wal_autocheckpoint={_Checkpointer.SAFETY_PAGES}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if not options.get("bridgehead_write", False):
            conn.exec_driver_sql("BEGIN")
        elif not options.get("bridgehead_nowait", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _begin_nowait(conn.connection.driver_connection)


def _begin_nowait(driver: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, or WriteLockBusy at once when another writer holds the lock."""
    driver.execute("PRAGMA busy_timeout=0")
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise WriteLockBusy("Another writer holds the database; retry shortly.") from exc
    finally:
        driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


@contextlib.contextmanager
def _translate_driver_errors() -> Iterator[None]:
    """``translate_db_errors`` for sqlite3's own exceptions (``Database.driver_write``)."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict("The change conflicts with existing data.", details={"reason": str(exc)}) from exc
    except sqlite3.Error as exc:
        log.warning("database unavailable: %s", exc)
        raise StoreUnavailable("The database is unavailable; retry shortly.") from exc


class _Checkpointer:
    """Copies SQLite's write-ahead log back into the database file from a background thread.

    Left to SQLite, the commit that grows the log past 1,000 pages does that copy (and its fsync) itself,
    so every thirtieth or so large write waits several milliseconds more. Here one thread per process checks
    the log of every open database a few times a second and checkpoints it (PASSIVE: it never blocks
    readers or writers); commits still checkpoint on their own past ``SAFETY_PAGES``, should the thread
    fall behind."""

    INTERVAL_S = 0.25
    THRESHOLD_BYTES = 4 << 20
    SAFETY_PAGES = 20_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Weak: an engine nobody disposed of is still let go with its Database.
        self.engines: weakref.WeakKeyDictionary[Engine, Path] = weakref.WeakKeyDictionary()
        self.thread: threading.Thread | None = None

    def add(self, engine: Engine) -> None:
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        with self.lock:
            self.engines[engine] = Path(f"{database}-wal")
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="bridgehead-wal-checkpoint", daemon=True
                )
                self.thread.start()

    def remove(self, engine: Engine) -> None:
        with self.lock:
            self.engines.pop(engine, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.INTERVAL_S)
            with self.lock:
                due = [e for e, wal in list(self.engines.items()) if _size(wal) >= self.THRESHOLD_BYTES]
            for engine in due:
                try:
                    with engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception:  # never let one failure end the thread; SQLite's own checkpoints remain
                    log.warning("background WAL checkpoint failed", exc_info=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


_CHECKPOINTS = _Checkpointer()
