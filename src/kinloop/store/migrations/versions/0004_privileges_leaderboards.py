"""privileges and leaderboards

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "privilege_uses",
        sa.Column("id", Id, nullable=False),
        sa.Column("program_id", Id, nullable=False),
        sa.Column("member_pk", Id, nullable=False),
        sa.Column("privilege", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("used_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_privilege_uses_member_pk_members")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_privilege_uses_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privilege_uses")),
        sa.UniqueConstraint("program_id", "idempotency_key", name=op.f("uq_privilege_uses_program_id")),
    )
    op.create_index("ix_privilege_uses_member", "privilege_uses", ["member_pk", "privilege", "used_at"])
    op.create_index("ix_privilege_uses_program", "privilege_uses", ["program_id", "privilege", "used_at"])
    op.create_table(
        "leaderboard_scores",
        sa.Column("program_id", Id, nullable=False),
        sa.Column("board", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("member_pk", Id, nullable=False),
        sa.Column("grp", sa.String(length=200), nullable=False),
        sa.Column(
            "member_id",
            sa.String(length=200).with_variant(sa.String(length=200, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("score", sa.BigInteger(), nullable=False),
        sa.Column("reached_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_leaderboard_scores_member_pk_members")),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_leaderboard_scores_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "board", "period", "member_pk", name=op.f("pk_leaderboard_scores")),
    )
    op.create_index(
        "ix_leaderboard_scores_rank",
        "leaderboard_scores",
        ["program_id", "board", "period", "grp", sa.text("score DESC"), "reached_at", "member_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_leaderboard_scores_rank", table_name="leaderboard_scores")
    op.drop_table("leaderboard_scores")
    op.drop_index("ix_privilege_uses_program", table_name="privilege_uses")
    op.drop_index("ix_privilege_uses_member", table_name="privilege_uses")
    op.drop_table("privilege_uses")
