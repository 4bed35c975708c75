"""Persistence kernel: engine and sessions, declarative base, migrations, artifact store."""

from bridgehead.store.base import Base, new_id, utcnow
from bridgehead.store.db import Database, translate_db_errors
from bridgehead.store.migrate import upgrade

__all__ = ["Base", "Database", "new_id", "translate_db_errors", "upgrade", "utcnow"]
