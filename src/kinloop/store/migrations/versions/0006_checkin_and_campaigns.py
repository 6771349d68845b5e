"""check-in states and campaign budgets

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "checkin_states",
        sa.Column("member_pk", _ID, nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("last_day", sa.Integer(), nullable=True),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("best", sa.Integer(), nullable=False),
        sa.Column("cards_month", sa.String(length=7), nullable=False),
        sa.Column("cards_used", sa.Integer(), nullable=False),
        sa.Column("milestones", sa.String(length=400), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_checkin_states_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", name=op.f("pk_checkin_states")),
    )
    op.create_table(
        "campaign_budgets",
        sa.Column("program_id", _ID, nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("spent >= 0 AND spent <= total", name=op.f("ck_campaign_budgets_within_total")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_campaign_budgets_program_id_programs")),
        sa.PrimaryKeyConstraint("program_id", "key", name=op.f("pk_campaign_budgets")),
    )


def downgrade() -> None:
    op.drop_table("campaign_budgets")
    op.drop_table("checkin_states")
