"""badges and tasks

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "member_counters",
        sa.Column("member_pk", Id, nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("totals", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_member_counters_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "period", "event_type", name=op.f("pk_member_counters")),
    )
    op.create_table(
        "member_badges",
        sa.Column("member_pk", Id, nullable=False),
        sa.Column("badge", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=64), nullable=False),
        sa.Column("awarded_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_pk", Id, nullable=True),
        sa.ForeignKeyConstraint(["event_pk"], ["events.id"], name=op.f("fk_member_badges_event_pk_events")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_member_badges_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "badge", "level", name=op.f("pk_member_badges")),
    )
    op.create_table(
        "task_progress",
        sa.Column("member_pk", Id, nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_task_progress_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "period", "task", name=op.f("pk_task_progress")),
    )
    with op.batch_alter_table("task_progress", schema=None) as batch_op:
        batch_op.create_index("ix_task_progress_completed", ["task", "period", "completed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_progress", schema=None) as batch_op:
        batch_op.drop_index("ix_task_progress_completed")
    op.drop_table("task_progress")
    op.drop_table("member_badges")
    op.drop_table("member_counters")
