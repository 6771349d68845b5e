"""The points mall's catalogue: rewards (database rows managed by API and CLI), their pools of
codes, what members see of them, and redemption figures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import yaml
from sqlalchemy import Connection, Row, func, select, update

from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput, InvalidReward, Issue, UnknownReward
from kinloop.domain.program import Program
from kinloop.domain.rewards import Limit, Promo, Reward, may_redeem, parse_reward, price_at, tier_names
from kinloop.services.members import json_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import insert_rows
from kinloop.store.db import insert_ignore
from kinloop.store.tables import orders, reward_codes, rewards

MAX_CODES = 100_000  # per upload
MAX_CODE_LENGTH = 200


@dataclass(frozen=True, slots=True)
class StoredReward:
    """A reward with its database id."""

    id: int
    reward: Reward
    codes_left: int | None = None  # for rewards that issue codes, when asked for


def to_reward(row: Row[Any]) -> Reward:
    """The domain reward of a `rewards` row."""
    return Reward(
        key=row.key,
        name=row.name,
        currency=row.currency,
        price=row.price,
        kind=row.kind,
        supplier=row.supplier,
        cash=Decimal(row.cash) if row.cash is not None else None,
        cash_currency=row.cash_currency,
        stock=row.stock,
        sold=row.sold,
        limit=Limit(row.limit_count, row.limit_period) if row.limit_count is not None else None,
        tiers=tuple(row.tiers or ()),
        promos=tuple(
            Promo(datetime.fromisoformat(p["starts_at"]), datetime.fromisoformat(p["ends_at"]), p["price"])
            for p in row.promos or ()
        ),
        category=row.category,
        image_url=row.image_url,
        description=row.description,
        active=row.active,
        hidden=row.hidden,
        uses_codes=row.uses_codes,
    )


def _columns(reward: Reward) -> dict[str, Any]:
    return {
        "name": reward.name,
        "kind": reward.kind,
        "supplier": reward.supplier,
        "currency": reward.currency,
        "price": reward.price,
        "cash": str(reward.cash) if reward.cash is not None else None,
        "cash_currency": reward.cash_currency,
        "stock": reward.stock,
        "limit_count": reward.limit.count if reward.limit else None,
        "limit_period": reward.limit.period if reward.limit else None,
        "tiers": list(reward.tiers),
        "promos": [
            {"starts_at": p.starts_at.isoformat(), "ends_at": p.ends_at.isoformat(), "price": p.price}
            for p in reward.promos
        ],
        "category": reward.category,
        "image_url": reward.image_url,
        "description": reward.description,
        "active": reward.active,
        "hidden": reward.hidden,
        "uses_codes": reward.uses_codes,
    }


def find(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> StoredReward:
    """One reward by key, or UnknownReward."""
    query = select(rewards).where(rewards.c.program_id == program_id, rewards.c.key == key)
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise UnknownReward(f"no reward {key!r} in this program", field="reward")
    return StoredReward(row.id, to_reward(row))


def put(
    conn: Connection, loaded: LoadedProgram, key: str, fields: Mapping[str, Any], *, now: datetime
) -> tuple[StoredReward, bool]:
    """Create or replace a reward (what it has sold is kept); returns it and whether it is new."""
    if not key.strip() or len(key) > 64:
        raise InvalidReward("a reward key is 1 to 64 characters", field="key")
    reward, issues = parse_reward(key, fields, loaded.program)
    if reward is None:
        first = issues[0]
        raise InvalidReward("; ".join(str(i) for i in issues), field=first.path)
    pid = loaded.program_id
    existing = conn.execute(
        select(rewards.c.id, rewards.c.sold).where(rewards.c.program_id == pid, rewards.c.key == key)
    ).first()
    if existing is None:
        insert_rows(
            conn,
            rewards,
            [{"program_id": pid, "key": key, "sold": 0, "created_at": now, "updated_at": now, **_columns(reward)}],
        )
        return find(conn, pid, key), True
    # Conditional, like a sale: a stock lowered below what concurrent orders sold is refused.
    done = conn.execute(
        update(rewards)
        .where(
            rewards.c.id == existing.id,
            (rewards.c.sold <= reward.stock) if reward.stock is not None else rewards.c.id.is_not(None),
        )
        .values(updated_at=now, **_columns(reward))
    ).rowcount
    if not done:
        sold = conn.execute(select(rewards.c.sold).where(rewards.c.id == existing.id)).scalar_one()
        raise InvalidReward(f"stock {reward.stock} is below the {sold} already sold", field="stock")
    return find(conn, pid, key), False


def fields_of(reward: Reward, program: Program) -> dict[str, Any]:
    """A reward as the plain fields `put` takes: amounts in the currency's units, times in ISO 8601."""
    currency = program.currencies.get(reward.currency)
    decimals = currency.decimals if currency else 0
    return {
        "name": reward.name,
        "kind": reward.kind,
        "supplier": reward.supplier,
        "currency": reward.currency,
        "price": from_minor(reward.price, decimals),
        "cash": str(reward.cash) if reward.cash is not None else None,
        "cash_currency": reward.cash_currency,
        "stock": reward.stock,
        "limit": {"count": reward.limit.count, "period": reward.limit.period} if reward.limit else None,
        "tiers": list(reward.tiers),
        "promos": [
            {
                "starts_at": p.starts_at.isoformat(),
                "ends_at": p.ends_at.isoformat(),
                "price": from_minor(p.price, decimals),
            }
            for p in reward.promos
        ],
        "category": reward.category,
        "image_url": reward.image_url,
        "description": reward.description,
        "active": reward.active,
        "hidden": reward.hidden,
        "uses_codes": reward.uses_codes,
    }


@dataclass(frozen=True, slots=True)
class Revision:
    """A change asked for an existing reward: the fields to `put`, every problem with them, and
    what would change (field -> [before, after], as JSON for the audit log)."""

    fields: dict[str, Any]
    issues: list[Issue]
    changed: dict[str, list[Any]]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def revise(stored: StoredReward, program: Program, changes: Mapping[str, Any]) -> Revision:
    """Check a change of some fields of a reward (the others kept), reporting every problem at once."""
    before = fields_of(stored.reward, program)
    after = {**before, **changes}
    reward, issues = parse_reward(stored.reward.key, after, program)
    changed = {}
    if reward is not None:
        # Compared once parsed, so `120` and `120.0`, or one instant in two offsets, are no change.
        now_fields = fields_of(reward, program)
        changed = {
            k: [_plain(before[k]), _plain(now_fields[k])] for k in before if _plain(before[k]) != _plain(now_fields[k])
        }
    return Revision(after, issues, changed)


def load_seed(conn: Connection, loaded: LoadedProgram, text: str, *, now: datetime, source: str) -> dict[str, str]:
    """Create or replace the rewards of a YAML file (`rewards:` mapping keys to fields), all or
    nothing; returns what happened to each key (`created` or `updated`)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not YAML: {exc}", field="file") from None
    given = data.get("rewards") if isinstance(data, dict) else None
    if not isinstance(given, dict) or not given:
        raise InvalidInput(f"{source}: expected a `rewards:` mapping of keys to reward fields", field="rewards")
    done: dict[str, str] = {}
    for key, fields in given.items():
        if not isinstance(fields, dict):
            raise InvalidReward(f"{source}: rewards.{key}: expected a mapping of fields", field=f"rewards.{key}")
        try:
            _, created = put(conn, loaded, str(key), _as_text(fields), now=now)
        except InvalidInput as exc:
            raise InvalidReward(f"{source}: rewards.{key}: {exc.detail}", field=f"rewards.{key}.{exc.field}") from None
        done[str(key)] = "created" if created else "updated"
    return done


def _as_text(fields: dict[str, Any]) -> dict[str, Any]:
    """YAML reads unquoted times as datetimes; the checks take ISO 8601 text, as over HTTP."""
    shaped = dict(fields)
    shaped["promos"] = [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in p.items()} if isinstance(p, dict) else p
        for p in fields.get("promos") or ()
    ]
    return shaped


def listing(
    conn: Connection, program_id: int, *, category: str | None = None, include_hidden: bool = False
) -> list[StoredReward]:
    """The program's rewards by key; members see active, listed ones only (`include_hidden` False)."""
    query = select(rewards).where(rewards.c.program_id == program_id).order_by(rewards.c.key)
    if category is not None:
        query = query.where(rewards.c.category == category)
    if not include_hidden:
        query = query.where(rewards.c.active.is_(True), rewards.c.hidden.is_(False))
    rows = conn.execute(query).all()
    free = _free_codes(conn, [r.id for r in rows if r.uses_codes])
    return [StoredReward(r.id, to_reward(r), free.get(r.id, 0) if r.uses_codes else None) for r in rows]


def _free_codes(conn: Connection, reward_ids: Sequence[int]) -> dict[int, int]:
    if not reward_ids:
        return {}
    return dict(
        conn.execute(
            select(reward_codes.c.reward_id, func.count())
            .where(reward_codes.c.reward_id.in_(reward_ids), reward_codes.c.order_id.is_(None))
            .group_by(reward_codes.c.reward_id)
        ).all()
    )


def show(conn: Connection, program_id: int, key: str) -> StoredReward:
    found = find(conn, program_id, key)
    if found.reward.uses_codes:
        return StoredReward(found.id, found.reward, _free_codes(conn, [found.id]).get(found.id, 0))
    return found


def as_json(stored: StoredReward, program: Program, now: datetime, *, tier: str | None = None) -> dict[str, Any]:
    """A reward as members and operators see it, priced at `now`, in the program's words."""
    r = stored.reward
    currency = program.currencies.get(r.currency)
    decimals = currency.decimals if currency else 0
    price = price_at(r, now)
    left = r.left
    if stored.codes_left is not None:
        left = stored.codes_left if left is None else min(left, stored.codes_left)

    def words(points: int) -> str:
        base = currency.display(points) if currency else str(points)
        return base + (f" + {r.cash} {r.cash_currency}" if r.cash is not None else "")

    text = words(price.points)
    if price.promo is not None:
        text += f" (was {words(r.price)}, until {price.promo.ends_at.isoformat()})"
    return {
        "key": r.key,
        "name": r.name,
        "kind": r.kind,
        "supplier": r.supplier,
        "category": r.category,
        "description": r.description,
        "image_url": r.image_url,
        "currency": r.currency,
        "price": json_amount(price.points, decimals),
        "regular_price": json_amount(r.price, decimals),
        "on_sale": price.on_sale,
        "cash": str(r.cash) if r.cash is not None else None,
        "cash_currency": r.cash_currency,
        "stock": r.stock,
        "sold": r.sold,
        "left": left,
        "sold_out": left == 0,
        "limit": {"count": r.limit.count, "period": r.limit.period} if r.limit else None,
        "tiers": list(r.tiers),
        "tier_names": tier_names(program, r.tiers),
        "promos": [
            {
                "starts_at": p.starts_at.isoformat(),
                "ends_at": p.ends_at.isoformat(),
                "price": json_amount(p.price, decimals),
            }
            for p in r.promos
        ],
        "active": r.active,
        "hidden": r.hidden,
        "uses_codes": r.uses_codes,
        "eligible": may_redeem(r, tier) if tier is not None or r.tiers else True,
        "text": f"{r.name}: {'sold out' if left == 0 else text}",
    }


def upload_codes(conn: Connection, program_id: int, key: str, codes: Iterable[str], *, now: datetime) -> dict[str, int]:
    """Add codes to a digital reward's pool; a code already in it is skipped (uploads can be repeated)."""
    found = find(conn, program_id, key)
    if not found.reward.uses_codes:
        raise InvalidInput(f"reward {key!r} does not issue codes (set uses_codes)", field="reward")
    clean: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(codes):
        code = raw.strip()
        if not code:
            continue
        if len(code) > MAX_CODE_LENGTH or "\x00" in code:
            raise InvalidInput(f"code {i + 1} is longer than {MAX_CODE_LENGTH} characters or has a NUL", field="codes")
        if code not in seen:
            seen.add(code)
            clean.append(code)
    if not clean:
        raise InvalidInput("no codes given", field="codes")
    if len(clean) > MAX_CODES:
        raise InvalidInput(f"at most {MAX_CODES:,} codes per upload", field="codes")
    before = _count_codes(conn, found.id)
    insert_ignore(
        conn,
        reward_codes,
        [{"reward_id": found.id, "code": c, "order_id": None, "uploaded_at": now, "issued_at": None} for c in clean],
        ("reward_id", "code"),
    )
    added = _count_codes(conn, found.id) - before
    return {"added": added, "skipped": len(clean) - added, "free": _free_codes(conn, [found.id]).get(found.id, 0)}


def _count_codes(conn: Connection, reward_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(reward_codes).where(reward_codes.c.reward_id == reward_id)
        ).scalar()
        or 0
    )


def redemptions(
    conn: Connection, loaded: LoadedProgram, *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """Orders placed in [since, until), by reward, category and tier: orders, units and points,
    apart from cancelled or refunded ones (counted on their own)."""
    program = loaded.program
    query = (
        select(
            rewards.c.key,
            rewards.c.name,
            rewards.c.category,
            orders.c.tier,
            orders.c.currency,
            orders.c.status,
            func.count(),
            func.sum(orders.c.quantity),
            func.sum(orders.c.points),
        )
        .join(rewards, rewards.c.id == orders.c.reward_id)
        .where(orders.c.program_id == loaded.program_id)
        .group_by(
            rewards.c.key,
            rewards.c.name,
            rewards.c.category,
            orders.c.tier,
            orders.c.currency,
            orders.c.status,
        )
    )
    if since is not None:
        query = query.where(orders.c.placed_at >= since)
    if until is not None:
        query = query.where(orders.c.placed_at < until)
    names = {t.key: t.name for t in program.ladder.tiers} if program.ladder else {}
    groups: dict[str, dict[tuple[str, str | None], dict[str, Any]]] = {"reward": {}, "category": {}, "tier": {}}
    for key, name, category, tier, cur, status, n, units, points in conn.execute(query):
        returned = status in ("cancelled", "refunded")
        for by, (gk, label) in (
            ("reward", (key, name)),
            ("category", (category or "(none)", category or "(none)")),
            ("tier", (tier or "(none)", names.get(tier or "", tier or "(no tier)"))),
        ):
            slot = groups[by].setdefault(
                (gk, cur),
                {"key": gk, "name": label, "currency": cur, "orders": 0, "units": 0, "points": 0, "returned_orders": 0},
            )
            if returned:
                slot["returned_orders"] += int(n)
            else:
                slot["orders"] += int(n)
                slot["units"] += int(units or 0)
                slot["points"] += int(points or 0)

    def shaped(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in sorted(rows, key=lambda r: (-r["points"], r["key"])):
            currency = program.currencies.get(row["currency"])
            if currency is not None:
                row["text"] = f"{row['name']}: {row['units']} redeemed for {currency.display(row['points'])}"
                row["points"] = json_amount(row["points"], currency.decimals)
            out.append(row)
        return out

    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "by_reward": shaped(groups["reward"].values()),
        "by_category": shaped(groups["category"].values()),
        "by_tier": shaped(groups["tier"].values()),
    }
