"""The database schema (SQLAlchemy Core). One model for SQLite and PostgreSQL: `JSON`, not
`JSONB`; datetimes stored as UTC; a naming convention so migrations can name constraints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases the rowid for a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, UTC out; SQLite keeps them as naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


programs = Table(
    "programs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

program_versions = Table(
    "program_versions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("active", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "version"),
)

members = Table(
    "members",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("member_id", String(200), nullable=False),
    Column("tier", String(64)),
    Column("profile", JSON, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "member_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False, index=True),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("program_version_id", Id, nullable=False),
    # What the rules decided, kept so that a repeat returns the first result and
    # `kinloop explain` can answer for any past event.
    Column("outcome", JSON, nullable=False),
    Column("refunded", String(40)),
    UniqueConstraint("program_id", "event_id"),
)

# The ledger tables are written for every event. Their references to programs, versions and
# other entries are checked by the code that writes them and by `kinloop verify`, not by
# foreign keys: PostgreSQL runs a trigger per key and row, and those were most of its cost.
# The keys to members and events stay.
entries = Table(
    "entries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("currency", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("from_account", String(32), nullable=False),
    Column("to_account", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("event_pk", Id, ForeignKey("events.id"), index=True),
    Column("rule", String(64)),
    Column("award_kind", String(32)),
    Column("program_version_id", Id),
    Column("reverses", Id),
    Column("idempotency_key", String(200)),
    Column("actor", String(200)),
    Column("reason", Text),
    Column("effective_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("from_account <> to_account", name="two_accounts"),
    # Partial: only spends, adjustments and expiries carry a key, and ingestion should not
    # pay for indexing the NULLs of every earned entry.
    Index(
        "uq_entries_idempotency_key",
        "program_id",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_entries_member_currency", "member_pk", "currency"),
)

lots = Table(
    "lots",
    metadata,
    # A lot shares its id with the entry that created it.
    Column("id", Id, ForeignKey("entries.id"), primary_key=True, autoincrement=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("currency", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("earned_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("event_pk", Id),
    Column("pending_until", UTCDateTime),
    Column("release_key", String(200)),
    CheckConstraint(
        "(amount >= 0 AND remaining >= 0 AND remaining <= amount)"
        " OR (amount < 0 AND remaining >= amount AND remaining <= 0)",
        name="remaining_within_amount",
    ),
    Index("ix_lots_member_currency", "member_pk", "currency", "status"),
    Index("ix_lots_expires_at", "expires_at"),
    Index(
        "ix_lots_pending_until",
        "pending_until",
        sqlite_where=text("pending_until IS NOT NULL"),
        postgresql_where=text("pending_until IS NOT NULL"),
    ),
    Index(
        "ix_lots_release_key",
        "release_key",
        sqlite_where=text("release_key IS NOT NULL"),
        postgresql_where=text("release_key IS NOT NULL"),
    ),
)

lot_movements = Table(
    "lot_movements",
    metadata,
    Column("id", Id, primary_key=True),
    Column("entry_id", Id, ForeignKey("entries.id"), nullable=False, index=True),
    Column("lot_id", Id, ForeignKey("lots.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
)

balances = Table(
    "balances",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("currency", String(64), primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    CheckConstraint("pending >= 0", name="pending_not_negative"),
)

activity = Table(
    "activity",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("event_type", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    # A day number (date.toordinal()): read and written for every event, so kept cheap.
    Column("last_day", Integer),
    Column("streak", Integer, nullable=False),
)

rule_usage = Table(
    "rule_usage",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    # Period before rule: a batch reads the current periods of its members, not their history.
    Column("period", String(16), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("times", BigInteger, nullable=False),
)

first_awards = Table(
    "first_awards",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("event_id", String(200), nullable=False),
)

tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False, index=True),
    Column("from_tier", String(64)),
    Column("to_tier", String(64)),
    Column("reason", String(200), nullable=False),
    Column("event_pk", Id, ForeignKey("events.id")),
    Column("at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id")),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200)),
    Column("reason", Text),
    Column("details", JSON, nullable=False, default=dict),
)

ingest_checkpoints = Table(
    "ingest_checkpoints",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("source", String(500), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("byte_offset", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "source"),
)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    # The key's public part: shown in listings, used to find the row; the secret is only hashed.
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("rate_limit", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    CheckConstraint("scope IN ('admin', 'ingest', 'read')", name="known_scope"),
)

app_secrets = Table(
    "app_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- webhooks -------------------------------------------------------------------------------
# Changes that integrators subscribe to are written to the outbox in the transaction that
# makes them; the delivery worker sends each message to every subscription that wanted it.

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False, index=True),
    Column("url", String(2000), nullable=False),
    # Kept in the clear: the worker needs it to sign every request (it cannot be hashed).
    Column("secret", String(100), nullable=False),
    Column("kinds", JSON, nullable=False),
    Column("description", String(200)),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deactivated_at", UTCDateTime),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True),
    # No foreign key: written in bulk on the ingest path, like `events`.
    Column("program_id", Id, nullable=False),
    Column("kind", String(64), nullable=False),
    # The message's idempotency id, sent as `kinloop-message-id`: the same change always
    # gets the same id, so a receiver can drop repeats of an at-least-once delivery.
    Column("message_id", String(64), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("subscription_id", Id, ForeignKey("webhook_subscriptions.id"), nullable=False),
    Column("outbox_id", Id, ForeignKey("outbox.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    # When a pending delivery is next due; a claimed one is pushed past its worker's lease,
    # so that it comes due again if that worker dies. NULL once delivered or failed.
    Column("next_attempt_at", UTCDateTime),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="known_status"),
    UniqueConstraint("subscription_id", "outbox_id"),
    # What the worker claims: only pending deliveries are indexed.
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("delivery_id", Id, ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
)

# --- badges and tasks -----------------------------------------------------------------------
# Counters badge criteria read beyond `activity` (counts per day/week/month, totals of an
# attribute), the badge levels members hold, and task progress per period. Only what the
# program's badges and tasks use is written, in bulk with the rest of a batch.

member_counters = Table(
    "member_counters",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    # Period before type: a batch reads its members' current periods, not their history.
    Column("period", String(16), primary_key=True),
    Column("event_type", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    # {"attribute": "decimal text"}: exact sums, as JSON text so the bulk helpers pass it as is.
    Column("totals", Text),
)

member_badges = Table(
    "member_badges",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("badge", String(64), primary_key=True),
    # "" for a one-time badge. The key makes a level impossible to hold twice.
    Column("level", String(64), primary_key=True),
    Column("awarded_at", UTCDateTime, nullable=False),
    Column("event_pk", Id, ForeignKey("events.id")),
)

task_progress = Table(
    "task_progress",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("completed_at", UTCDateTime),
    Index("ix_task_progress_completed", "task", "period", "completed_at"),
)

# --- privileges and leaderboards -------------------------------------------------------------
# A privilege is held through the member's current tier, so only its uses are stored: the
# quota left is counted from them, under the member's row lock.

privilege_uses = Table(
    "privilege_uses",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("privilege", String(64), nullable=False),
    # The tier that held the privilege when it was used: utilisation is reported per tier.
    Column("tier", String(64)),
    Column("used_at", UTCDateTime, nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    # The reply to the use, returned again when the same key is replayed.
    Column("result", JSON, nullable=False),
    UniqueConstraint("program_id", "idempotency_key"),
    Index("ix_privilege_uses_member", "member_pk", "privilege", "used_at"),
    Index("ix_privilege_uses_program", "program_id", "privilege", "used_at"),
)

# Member ids compare byte by byte in PostgreSQL too (as in SQLite), so ties order the same.
MemberIdC = String(200).with_variant(String(200, collation="C"), "postgresql")

leaderboard_scores = Table(
    "leaderboard_scores",
    metadata,
    Column("program_id", Id, ForeignKey("programs.id"), primary_key=True),
    Column("board", String(64), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    # The member's group (the profile attribute's value when it last scored; '' for none).
    Column("grp", String(200), nullable=False),
    Column("member_id", MemberIdC, nullable=False),
    Column("score", BigInteger, nullable=False),
    # When the score was reached: the latest occurred_at of the events that raised it.
    Column("reached_at", UTCDateTime, nullable=False),
    # Top N is a scan of this index in ranking order: score desc, reached_at, member_id.
    Index(
        "ix_leaderboard_scores_rank",
        "program_id",
        "board",
        "period",
        "grp",
        text("score DESC"),
        "reached_at",
        "member_id",
    ),
)

# --- tiers ----------------------------------------------------------------------------------
# Qualification sums per member, currency and local day (a date ordinal): the realtime upgrade
# in ingest and the periodic review both read a window of them with one set-based query.
# Written for every batch that earns growth: no foreign key (a trigger per row), like `entries`.

tier_qualification = Table(
    "tier_qualification",
    metadata,
    Column("member_pk", Id, primary_key=True),
    Column("currency", String(64), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("amount", BigInteger, nullable=False),
)

# What decides a member's tier besides `members.tier` (the effective tier): the earned tier and
# when it was reached, the grace period, the paid term, the manual floor or lock, and the tier
# kept by grandfathering. A member without a row has earned `members.tier` and nothing else.
tier_status = Table(
    "tier_status",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("earned", String(64)),
    Column("reached_on", Integer),  # date ordinal
    Column("grace_until", Integer),  # date ordinal
    Column("paid", String(64)),
    Column("paid_until", UTCDateTime),
    Column("manual", String(64)),
    Column("manual_until", UTCDateTime),
    Column("locked", Boolean, nullable=False, default=False),
    Column("kept", String(64)),
    Column("kept_until", UTCDateTime),
)

tier_purchases = Table(
    "tier_purchases",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False, index=True),
    Column("tier", String(64), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    # `event:<event_id>` for purchases by event, the caller's key for the API.
    Column("idempotency_key", String(200), nullable=False),
    Column("actor", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "idempotency_key"),
)

# The last day `kinloop tiers evaluate` ran for a program: reviews fall between two runs.
tier_runs = Table(
    "tier_runs",
    metadata,
    Column("program_id", Id, ForeignKey("programs.id"), primary_key=True),
    Column("evaluated_on", Integer, nullable=False),  # date ordinal, program time zone
    Column("evaluated_at", UTCDateTime, nullable=False),
)

# --- check-in and campaigns -------------------------------------------------------------------
# A member's check-in record (the engine's `CheckinState`), read and written only for batches
# with check-ins in programs that have them.
checkin_states = Table(
    "checkin_states",
    metadata,
    Column("member_pk", Id, ForeignKey("members.id"), primary_key=True),
    Column("streak", Integer, nullable=False),
    Column("last_day", Integer),  # date.toordinal(), as in `activity`
    Column("days", Integer, nullable=False),
    Column("best", Integer, nullable=False),
    Column("cards_month", String(7), nullable=False),
    Column("cards_used", Integer, nullable=False),
    Column("milestones", String(400), nullable=False),  # `once` milestones given: "100,365"
)

# What each budgeted rule or campaign has given, for all members together. Ingestion locks the
# rows it needs (after the members, in key order) and takes from `total - spent`, so a budget is
# never overspent however many writers there are; the CHECK is the backstop.
campaign_budgets = Table(
    "campaign_budgets",
    metadata,
    Column("program_id", Id, ForeignKey("programs.id"), primary_key=True),
    Column("key", String(80), primary_key=True),  # rule:<key> or campaign:<key>
    Column("total", BigInteger, nullable=False),
    Column("spent", BigInteger, nullable=False),
    CheckConstraint("spent >= 0 AND spent <= total", name="within_total"),
)

# --- mall, orders and holds -------------------------------------------------------------------
# Rewards are rows, not program-file entries: operators change stock and prices daily.
rewards = Table(
    "rewards",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("supplier", String(200)),
    Column("currency", String(64), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("cash", String(40)),  # a Decimal, as text: exact on both databases
    Column("cash_currency", String(3)),
    Column("stock", BigInteger),  # NULL: unlimited
    Column("sold", BigInteger, nullable=False),
    Column("limit_count", Integer),
    Column("limit_period", String(16)),
    Column("tiers", JSON, nullable=False),
    Column("promos", JSON, nullable=False),
    Column("category", String(100)),
    Column("image_url", String(2000)),
    Column("description", Text),
    Column("active", Boolean, nullable=False),
    Column("hidden", Boolean, nullable=False),
    Column("uses_codes", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "key"),
    # The backstop of the conditional update that sells: stock is never oversold.
    CheckConstraint("sold >= 0 AND (stock IS NULL OR sold <= stock)", name="sold_within_stock"),
    CheckConstraint("price > 0", name="price_positive"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("reward_id", Id, ForeignKey("rewards.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("currency", String(64), nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("cash", String(40)),
    Column("cash_currency", String(3)),
    Column("promo", Boolean, nullable=False),
    Column("tier", String(64)),  # the member's tier when ordering, for redemptions by tier
    Column("status", String(16), nullable=False),
    Column("spend_entry_id", Id, ForeignKey("entries.id"), nullable=False),
    Column("restore_entry_id", Id, ForeignKey("entries.id")),
    Column("shipping_reference", String(200)),
    Column("idempotency_key", String(200)),
    Column("history", JSON, nullable=False),
    Column("placed_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint(
        "status IN ('placed', 'confirmed', 'fulfilled', 'completed', 'cancelled', 'refunded')", name="known_status"
    ),
    Index(
        "uq_orders_idempotency_key",
        "program_id",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_orders_member_reward", "member_pk", "reward_id"),
    Index("ix_orders_program_placed", "program_id", "placed_at"),
)

reward_codes = Table(
    "reward_codes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("reward_id", Id, ForeignKey("rewards.id"), nullable=False),
    Column("code", String(200), nullable=False),
    Column("order_id", Id, ForeignKey("orders.id")),  # NULL: still in the pool
    Column("uploaded_at", UTCDateTime, nullable=False),
    Column("issued_at", UTCDateTime),
    UniqueConstraint("reward_id", "code"),
    Index(
        "ix_reward_codes_free",
        "reward_id",
        "id",
        sqlite_where=text("order_id IS NULL"),
        postgresql_where=text("order_id IS NULL"),
    ),
    Index("ix_reward_codes_order_id", "order_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("currency", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reference", String(200)),
    Column("idempotency_key", String(200)),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("hold_entry_id", Id, ForeignKey("entries.id"), nullable=False),
    Column("close_entry_id", Id, ForeignKey("entries.id")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("status IN ('active', 'captured', 'released', 'expired')", name="known_status"),
    Index(
        "uq_holds_idempotency_key",
        "program_id",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    # What the expiry job and the member view look for: only active holds are indexed.
    Index(
        "ix_holds_active_expires_at",
        "expires_at",
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
    Index(
        "ix_holds_active_member",
        "member_pk",
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
)


# --- draws, red envelopes, shared goals ----------------------------------------------------
# Draws: the seed stays secret until `closes_at`; its sha256 is published from the start.
# Stock lives in `draw_prizes`, changed only under the draw's row lock (and never below 0).

draws = Table(
    "draws",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(64), nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("daily_limit", Integer),
    Column("guarantee_after", Integer),
    Column("guarantee_prize", String(64)),
    Column("seed", String(64), nullable=False),  # hex; public only once closes_at has passed
    Column("commitment", String(64), nullable=False),
    Column("odds_version", Integer, nullable=False),
    Column("entries", BigInteger, nullable=False),  # the last entry's seq
    Column("opens_at", UTCDateTime, nullable=False),
    Column("closes_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "key"),
    CheckConstraint("cost > 0", name="cost_positive"),
)

draw_odds = Table(
    "draw_odds",
    metadata,
    Column("draw_id", Id, ForeignKey("draws.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("prizes", JSON, nullable=False),  # the prize table as declared, stock included
    Column("created_at", UTCDateTime, nullable=False),
)

draw_prizes = Table(
    "draw_prizes",
    metadata,
    Column("draw_id", Id, ForeignKey("draws.id"), primary_key=True),
    Column("prize", String(64), primary_key=True),
    Column("stock", BigInteger),  # NULL: unlimited
    Column("given", BigInteger, nullable=False),
    CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),
)

draw_entries = Table(
    "draw_entries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("draw_id", Id, ForeignKey("draws.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_key", String(200), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("odds_version", Integer, nullable=False),
    Column("roll", String(80), nullable=False),  # a 256-bit integer, in decimal
    Column("stock_seen", JSON, nullable=False),
    Column("guaranteed", Boolean, nullable=False),
    Column("prize", String(64)),
    Column("spend_entry_id", Id, nullable=False),
    Column("prize_entry_id", Id),
    Column("day", Integer, nullable=False),  # local day number, for daily limits
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("draw_id", "seq", name="uq_draw_entries_seq"),
    UniqueConstraint("draw_id", "entry_key", name="uq_draw_entries_entry_key"),
    Index("ix_draw_entries_member_day", "draw_id", "member_pk", "day"),
)

envelopes = Table(
    "envelopes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("key", String(200), nullable=False),  # idempotency key, and the envelope's public id
    Column("kind", String(16), nullable=False),
    Column("sender_pk", Id, ForeignKey("members.id")),  # NULL: sent in the program's name
    Column("recipient_pk", Id, ForeignKey("members.id")),  # one-to-one envelopes
    Column("currency", String(64), nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("shares", JSON, nullable=False),  # amounts, handed out in order
    Column("split", String(16), nullable=False),
    # The soonest expiry of the sender's points it holds: received points keep it, so that
    # passing points around never extends their life. NULL: they do not expire.
    Column("points_expire_at", UTCDateTime),
    Column("claimed", BigInteger, nullable=False),
    Column("claims", Integer, nullable=False),
    Column("returned", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message", String(200)),
    Column("reason", Text),
    Column("actor", String(200)),
    Column("day", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("closed_at", UTCDateTime),
    UniqueConstraint("program_id", "key"),
    CheckConstraint("claimed + returned <= total", name="within_total"),
    CheckConstraint("status IN ('open', 'closed')", name="known_status"),
    Index("ix_envelopes_sender_day", "sender_pk", "day"),
    Index(
        "ix_envelopes_open",
        "expires_at",
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
)

envelope_claims = Table(
    "envelope_claims",
    metadata,
    Column("id", Id, primary_key=True),
    Column("envelope_id", Id, ForeignKey("envelopes.id"), nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("entry_id", Id, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("envelope_id", "member_pk"),
)

goals = Table(
    "goals",
    metadata,
    Column("id", Id, primary_key=True),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(64), nullable=False),
    Column("target", BigInteger, nullable=False),
    Column("repeat", Boolean, nullable=False),
    Column("round", Integer, nullable=False),
    Column("raised", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "key"),
    CheckConstraint("raised >= 0 AND raised <= target", name="raised_within_target"),
)

goal_donations = Table(
    "goal_donations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("goal_id", Id, ForeignKey("goals.id"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("member_pk", Id, ForeignKey("members.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("entry_id", Id, nullable=False),
    Column("donation_key", String(200), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("goal_id", "donation_key"),
    Index("ix_goal_donations_round", "goal_id", "round"),
)

goal_milestones = Table(
    "goal_milestones",
    metadata,
    Column("goal_id", Id, ForeignKey("goals.id"), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("raised", BigInteger, nullable=False),
    Column("donors", JSON, nullable=False),
    Column("reached_at", UTCDateTime, nullable=False),
)


# Console operators are of the deployment, not of one program: an agency may run several.
operators = Table(
    "operators",
    metadata,
    Column("id", Id, primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>: the parameters travel with the hash.
    Column("password_hash", String(300), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime),
    CheckConstraint("role IN ('owner', 'operator', 'viewer')", name="known_role"),
)

operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("id", Id, primary_key=True),
    # A SHA-256 of the cookie's random token: a leaked table opens no session.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("program_key", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
)

# --- dashboard rollups -----------------------------------------------------------------------
# Daily sums behind the console's dashboard, kept by `services/dashboard.refresh` (its module
# docstring says how they stay exact). `layer` 'final' holds the rows of ids up to the source's
# `final_id`, which never change again; 'open' holds everything above it and the current-state
# snapshots, and is rebuilt on every refresh. k1..k5 are the source's dimensions ('' for none).
dashboard_daily = Table(
    "dashboard_daily",
    metadata,
    Column("program_id", Id, primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("layer", String(8), primary_key=True),
    Column("day", Integer, primary_key=True),  # date ordinal in the program's time zone
    Column("k1", String(64), primary_key=True),
    Column("k2", String(64), primary_key=True),
    Column("k3", String(64), primary_key=True),
    Column("k4", String(64), primary_key=True),
    Column("k5", String(140), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("layer IN ('final', 'open')", name="known_layer"),
)

dashboard_sources = Table(
    "dashboard_sources",
    metadata,
    Column("program_id", Id, primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("final_id", BigInteger, nullable=False),  # every row with an id up to this is in 'final'
    Column("seen_id", BigInteger, nullable=False),  # the highest id the last refresh saw
    # PostgreSQL: the sequence's value and the transactions running when it was read; once
    # they have all ended, no id up to `frontier` can appear any more (see the service).
    Column("frontier", BigInteger),
    Column("waiting", JSON),
    Column("refreshed_at", UTCDateTime, nullable=False),
)
