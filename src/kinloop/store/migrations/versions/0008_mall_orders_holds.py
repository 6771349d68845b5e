"""mall, orders, reward codes and holds

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:28:41.857180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "rewards",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("supplier", sa.String(length=200), nullable=True),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("cash", sa.String(length=40), nullable=True),
        sa.Column("cash_currency", sa.String(length=3), nullable=True),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("sold", sa.BigInteger(), nullable=False),
        sa.Column("limit_count", sa.Integer(), nullable=True),
        sa.Column("limit_period", sa.String(length=16), nullable=True),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("promos", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("image_url", sa.String(length=2000), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("uses_codes", sa.Boolean(), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price > 0", name=op.f("ck_rewards_price_positive")),
        sa.CheckConstraint("sold >= 0 AND (stock IS NULL OR sold <= stock)", name=op.f("ck_rewards_sold_within_stock")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_rewards_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
        sa.UniqueConstraint("program_id", "key", name=op.f("uq_rewards_program_id")),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("expires_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("hold_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("close_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'released', 'expired')", name=op.f("ck_holds_known_status")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_holds_amount_positive")),
        sa.ForeignKeyConstraint(["close_entry_id"], ["entries.id"], name=op.f("fk_holds_close_entry_id_entries")),
        sa.ForeignKeyConstraint(["hold_entry_id"], ["entries.id"], name=op.f("fk_holds_hold_entry_id_entries")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_holds_member_pk_members")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_holds_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_holds_active_expires_at",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.create_index(
            "ix_holds_active_member",
            ["member_pk"],
            unique=False,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.create_index(
            "uq_holds_idempotency_key",
            ["program_id", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reward_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash", sa.String(length=40), nullable=True),
        sa.Column("cash_currency", sa.String(length=3), nullable=True),
        sa.Column("promo", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spend_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("restore_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("shipping_reference", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("placed_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('placed', 'confirmed', 'fulfilled', 'completed', 'cancelled', 'refunded')",
            name=op.f("ck_orders_known_status"),
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_orders_quantity_positive")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_orders_member_pk_members")),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_orders_program_id_programs")),
        sa.ForeignKeyConstraint(["restore_entry_id"], ["entries.id"], name=op.f("fk_orders_restore_entry_id_entries")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_orders_reward_id_rewards")),
        sa.ForeignKeyConstraint(["spend_entry_id"], ["entries.id"], name=op.f("fk_orders_spend_entry_id_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_member_reward", ["member_pk", "reward_id"], unique=False)
        batch_op.create_index("ix_orders_program_placed", ["program_id", "placed_at"], unique=False)
        batch_op.create_index(
            "uq_orders_idempotency_key",
            ["program_id", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "reward_codes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reward_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("uploaded_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("issued_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_reward_codes_order_id_orders")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"], name=op.f("fk_reward_codes_reward_id_rewards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_codes")),
        sa.UniqueConstraint("reward_id", "code", name=op.f("uq_reward_codes_reward_id")),
    )
    with op.batch_alter_table("reward_codes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reward_codes_free",
            ["reward_id", "id"],
            unique=False,
            sqlite_where=sa.text("order_id IS NULL"),
            postgresql_where=sa.text("order_id IS NULL"),
        )
        batch_op.create_index("ix_reward_codes_order_id", ["order_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("reward_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_codes_order_id")
        batch_op.drop_index(
            "ix_reward_codes_free",
            sqlite_where=sa.text("order_id IS NULL"),
            postgresql_where=sa.text("order_id IS NULL"),
        )

    op.drop_table("reward_codes")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_orders_idempotency_key",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index("ix_orders_program_placed")
        batch_op.drop_index("ix_orders_member_reward")

    op.drop_table("orders")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_holds_idempotency_key",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_holds_active_member",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index(
            "ix_holds_active_expires_at",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.drop_table("holds")
    op.drop_table("rewards")
