"""metric points: unique per identical point (logging needs no read to stay idempotent); no foreign key;
the Default experiment saved for an existing central unit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:00:00
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

POINT = ["run_id", "key", "step", "timestamp_ms", "value", "is_nan"]


def upgrade() -> None:
    # Two writers racing past the old read-then-insert check could both store a point: keep the first
    # (linking it to a model if any copy was), drop the rest.
    op.execute(
        "UPDATE metrics SET model_id = (SELECT max(d.model_id) FROM metrics d WHERE d.run_id = metrics.run_id "
        'AND d."key" = metrics."key" AND d.step = metrics.step AND d.timestamp_ms = metrics.timestamp_ms '
        "AND d.value = metrics.value AND d.is_nan = metrics.is_nan) WHERE model_id IS NULL"
    )
    op.execute(
        "DELETE FROM metrics WHERE id NOT IN (SELECT min(id) FROM metrics "
        'GROUP BY run_id, "key", step, timestamp_ms, value, is_nan)'
    )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_run_key_step")
        # Its prefix (run, key, step) serves metric histories as the dropped index did.
        batch_op.create_index("ux_metrics_point", POINT, unique=True)
        # Checked per row, it cost SQLite more than inserting a batch; log_batch checks the run instead.
        batch_op.drop_constraint("fk_metrics_run_id_runs", type_="foreignkey")

    # Since this revision the Default experiment ("0") is saved with the central unit (tracking.models); a
    # database whose central unit came first gets it here, so no request ever has to create it.
    op.get_bind().execute(
        sa.text(
            "INSERT INTO experiments (id, name, business_unit_id, visibility, description, artifact_location, "
            "lifecycle_stage, created_ms, updated_ms) "
            "SELECT '0', 'Default', u.id, 'organization', '', 'mlflow-artifacts:/0', 'active', :ms, :ms "
            "FROM business_units u WHERE u.is_central = true "
            "AND NOT EXISTS (SELECT 1 FROM experiments e WHERE e.id = '0')"
        ),
        {"ms": int(time.time() * 1000)},
    )


def downgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_foreign_key("fk_metrics_run_id_runs", "runs", ["run_id"], ["id"])
        batch_op.drop_index("ux_metrics_point")
        batch_op.create_index("ix_metrics_run_key_step", ["run_id", "key", "step"], unique=False)
