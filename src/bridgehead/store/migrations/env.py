"""Alembic environment: the engine comes from the caller (bridgehead.store.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from bridgehead.store.models import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        # Two servers starting together must not both run the same migration.
        connection.execute(text("SELECT pg_advisory_lock(727274)"))
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_unlock(727274)"))
            connection.commit()
