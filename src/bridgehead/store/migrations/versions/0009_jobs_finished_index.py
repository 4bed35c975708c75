"""jobs: an index on (status, finished_at), by which retention reads only the jobs past its cutoff

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 22:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_finished_at", "jobs", ["status", "finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_status_finished_at", table_name="jobs")
