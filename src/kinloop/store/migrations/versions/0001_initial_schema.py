"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 18:35:14.544364
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kinloop.store.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "programs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programs")),
        sa.UniqueConstraint("key", name=op.f("uq_programs_key")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_audit_log_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "ingest_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_ingest_checkpoints_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_checkpoints")),
        sa.UniqueConstraint("program_id", "source", name=op.f("uq_ingest_checkpoints_program_id")),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_id", sa.String(length=200), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=True),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_members_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint("program_id", "member_id", name=op.f("uq_members_program_id")),
    )
    op.create_table(
        "program_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], name=op.f("fk_program_versions_program_id_programs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_versions")),
        sa.UniqueConstraint("program_id", "version", name=op.f("uq_program_versions_program_id")),
    )
    op.create_table(
        "activity",
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_day", sa.Integer(), nullable=True),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_activity_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "event_type", name=op.f("pk_activity")),
    )
    op.create_table(
        "balances",
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("pending >= 0", name=op.f("ck_balances_pending_not_negative")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_balances_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "currency", name=op.f("pk_balances")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("program_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.Column("refunded", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_events_member_pk_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("program_id", "event_id", name=op.f("uq_events_program_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_member_pk"), ["member_pk"], unique=False)

    op.create_table(
        "first_awards",
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_first_awards_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "rule", name=op.f("pk_first_awards")),
    )
    op.create_table(
        "rule_usage",
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("times", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_rule_usage_member_pk_members")),
        sa.PrimaryKeyConstraint("member_pk", "period", "rule", name=op.f("pk_rule_usage")),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("from_account", sa.String(length=32), nullable=False),
        sa.Column("to_account", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("award_kind", sa.String(length=32), nullable=True),
        sa.Column("program_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("reverses", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("effective_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_entries_amount_positive")),
        sa.CheckConstraint("from_account <> to_account", name=op.f("ck_entries_two_accounts")),
        sa.ForeignKeyConstraint(["event_pk"], ["events.id"], name=op.f("fk_entries_event_pk_events")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_entries_member_pk_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
    )
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_entries_event_pk"), ["event_pk"], unique=False)
        batch_op.create_index("ix_entries_member_currency", ["member_pk", "currency"], unique=False)
        batch_op.create_index(
            "uq_entries_idempotency_key",
            ["program_id", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_tier", sa.String(length=64), nullable=True),
        sa.Column("to_tier", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("event_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_pk"], ["events.id"], name=op.f("fk_tier_changes_event_pk_events")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_tier_changes_member_pk_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_changes")),
    )
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tier_changes_member_pk"), ["member_pk"], unique=False)

    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("member_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("earned_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("event_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("pending_until", kinloop.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("release_key", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "(amount >= 0 AND remaining >= 0 AND remaining <= amount) OR (amount < 0 AND remaining >= amount AND remaining <= 0)",
            name=op.f("ck_lots_remaining_within_amount"),
        ),
        sa.ForeignKeyConstraint(["id"], ["entries.id"], name=op.f("fk_lots_id_entries")),
        sa.ForeignKeyConstraint(["member_pk"], ["members.id"], name=op.f("fk_lots_member_pk_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_expires_at", ["expires_at"], unique=False)
        batch_op.create_index("ix_lots_member_currency", ["member_pk", "currency", "status"], unique=False)
        batch_op.create_index(
            "ix_lots_pending_until",
            ["pending_until"],
            unique=False,
            sqlite_where=sa.text("pending_until IS NOT NULL"),
            postgresql_where=sa.text("pending_until IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_lots_release_key",
            ["release_key"],
            unique=False,
            sqlite_where=sa.text("release_key IS NOT NULL"),
            postgresql_where=sa.text("release_key IS NOT NULL"),
        )

    op.create_table(
        "lot_movements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], name=op.f("fk_lot_movements_entry_id_entries")),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_lot_movements_lot_id_lots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot_movements")),
    )
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lot_movements_entry_id"), ["entry_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lot_movements_lot_id"), ["lot_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lot_movements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_movements_lot_id"))
        batch_op.drop_index(batch_op.f("ix_lot_movements_entry_id"))

    op.drop_table("lot_movements")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_lots_release_key",
            sqlite_where=sa.text("release_key IS NOT NULL"),
            postgresql_where=sa.text("release_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_lots_pending_until",
            sqlite_where=sa.text("pending_until IS NOT NULL"),
            postgresql_where=sa.text("pending_until IS NOT NULL"),
        )
        batch_op.drop_index("ix_lots_member_currency")
        batch_op.drop_index("ix_lots_expires_at")

    op.drop_table("lots")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tier_changes_member_pk"))

    op.drop_table("tier_changes")
    with op.batch_alter_table("entries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_entries_idempotency_key",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index("ix_entries_member_currency")
        batch_op.drop_index(batch_op.f("ix_entries_event_pk"))

    op.drop_table("entries")
    op.drop_table("rule_usage")
    op.drop_table("first_awards")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_member_pk"))

    op.drop_table("events")
    op.drop_table("balances")
    op.drop_table("activity")
    op.drop_table("program_versions")
    op.drop_table("members")
    op.drop_table("ingest_checkpoints")
    op.drop_table("audit_log")
    op.drop_table("programs")
