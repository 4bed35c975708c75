"""metric points: the point is the primary key (no surrogate id); on SQLite a WITHOUT ROWID table

A point was written twice, to the table and to its unique index ``ux_metrics_point``; now it is written once,
to the table's key. On SQLite the table is rebuilt (its rows copied in key order); on PostgreSQL the id and the
index are dropped and the key added in place.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 22:00:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

POINT = ["run_id", "key", "step", "timestamp_ms", "value", "is_nan"]
_COPY = (
    'INSERT INTO metrics (run_id, "key", step, timestamp_ms, value, is_nan, model_id) '
    'SELECT run_id, "key", step, timestamp_ms, value, is_nan, model_id FROM {source} '
    'ORDER BY run_id, "key", step, timestamp_ms, value, is_nan'
)


def _point_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("is_nan", sa.Boolean(), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=True),
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ux_metrics_point", table_name="metrics")
        op.rename_table("metrics", "metrics_0007")
        op.create_table(
            "metrics",
            *_point_columns(),
            sa.PrimaryKeyConstraint(*POINT, name=op.f("pk_metrics")),
            sqlite_with_rowid=False,
        )
        op.execute(_COPY.format(source="metrics_0007"))
        op.drop_table("metrics_0007")
        return
    op.drop_index("ux_metrics_point", table_name="metrics")
    op.drop_constraint("pk_metrics", "metrics", type_="primary")
    op.drop_column("metrics", "id")
    op.create_primary_key("pk_metrics", "metrics", POINT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.rename_table("metrics", "metrics_0008")
        op.create_table(
            "metrics",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            *_point_columns(),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
        )
        op.execute(_COPY.format(source="metrics_0008"))
        op.drop_table("metrics_0008")
    else:
        op.drop_constraint("pk_metrics", "metrics", type_="primary")
        op.add_column("metrics", sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False))
        op.create_primary_key("pk_metrics", "metrics", ["id"])
    op.create_index("ux_metrics_point", "metrics", POINT, unique=True)
