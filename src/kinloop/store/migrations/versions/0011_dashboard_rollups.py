"""dashboard rollups: daily sums per program and source, and each source's refresh state

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dashboard_daily",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("layer", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("k1", sa.String(length=64), nullable=False),
        sa.Column("k2", sa.String(length=64), nullable=False),
        sa.Column("k3", sa.String(length=64), nullable=False),
        sa.Column("k4", sa.String(length=64), nullable=False),
        sa.Column("k5", sa.String(length=140), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("layer IN ('final', 'open')", name=op.f("ck_dashboard_daily_known_layer")),
        sa.PrimaryKeyConstraint(
            "program_id", "source", "layer", "day", "k1", "k2", "k3", "k4", "k5", name=op.f("pk_dashboard_daily")
        ),
    )
    op.create_table(
        "dashboard_sources",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("final_id", sa.BigInteger(), nullable=False),
        sa.Column("seen_id", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.BigInteger(), nullable=True),
        sa.Column("waiting", sa.JSON(), nullable=True),
        sa.Column("refreshed_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("program_id", "source", name=op.f("pk_dashboard_sources")),
    )


def downgrade() -> None:
    op.drop_table("dashboard_sources")
    op.drop_table("dashboard_daily")
