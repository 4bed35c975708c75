"""datasets: versions (content digest, profile, column tags), access grants, derivations, validations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 16:39:48.419772
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("business_unit_id", sa.String(length=32), nullable=False),
        sa.Column("visibility", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source_system", sa.String(length=250), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("contract", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_unit_id"],
            ["business_units.id"],
            name=op.f("fk_datasets_business_unit_id_business_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("business_unit_id", "name", name=op.f("uq_datasets_business_unit_id")),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_business_unit_id"), ["business_unit_id"], unique=False)

    op.create_table(
        "dataset_grants",
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_grants_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("dataset_id", "kind", "value", name=op.f("pk_dataset_grants")),
    )
    with op.batch_alter_table("dataset_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_grants_value"), ["value"], unique=False)

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=2000), nullable=False),
        sa.Column("storage", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("column_tags", sa.JSON(), nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("author_id", sa.String(length=32), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_versions_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("dataset_id", "digest", name="uq_dataset_versions_digest"),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_number"),
    )
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_versions_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataset_versions_digest"), ["digest"], unique=False)

    op.create_table(
        "dataset_derivations",
        sa.Column("version_id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=False),
        sa.Column("transformation", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_derivations_parent_id_dataset_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_derivations_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", "parent_id", name=op.f("pk_dataset_derivations")),
    )
    with op.batch_alter_table("dataset_derivations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_derivations_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "dataset_validations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=False),
        sa.Column("version_id", sa.String(length=32), nullable=True),
        sa.Column("location", sa.String(length=2000), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("contract", sa.Text(), nullable=False),
        sa.Column("author_id", sa.String(length=32), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_validations_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_validations_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_validations")),
    )
    with op.batch_alter_table("dataset_validations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_validations_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dataset_validations_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dataset_validations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_validations_version_id"))
        batch_op.drop_index(batch_op.f("ix_dataset_validations_dataset_id"))

    op.drop_table("dataset_validations")
    with op.batch_alter_table("dataset_derivations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_derivations_parent_id"))

    op.drop_table("dataset_derivations")
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_versions_digest"))
        batch_op.drop_index(batch_op.f("ix_dataset_versions_dataset_id"))

    op.drop_table("dataset_versions")
    with op.batch_alter_table("dataset_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_grants_value"))

    op.drop_table("dataset_grants")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_business_unit_id"))

    op.drop_table("datasets")
