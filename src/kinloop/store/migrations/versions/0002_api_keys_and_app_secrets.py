"""api keys and app secrets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 19:11:54.887876
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_secrets")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("scope IN ('admin', 'ingest', 'read')", name=op.f("ck_api_keys_known_scope")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_api_keys_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("app_secrets")
