"""A small typed client for kinloop's HTTP API, for integrators (brands' apps, partner platforms).

    from kinloop.client import KinloopClient, KinloopApiError

    with KinloopClient("http://127.0.0.1:8000", "kl_...") as kl:  # admin: ingest keys post, read keys read
        result = kl.post_event("order-1001", "m-42", "purchase", "2026-01-05T10:00:00Z", {"amount": 120})
        print([a.text for a in result.awards])           # ['2 ★', '12 Beans']
        print(kl.member("m-42").next_tier.text)          # '2 ★ to Jade'

One `httpx.Client` is kept for the client's life, so requests reuse their connection
(keep-alive). Every reply the API refuses raises `KinloopApiError` with the problem's
`status`, `code`, `detail` and `field`; network failures raise httpx's own exceptions.

`verify_webhook` checks the `kinloop-signature` header of a webhook delivery.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from kinloop.webhook_signature import HEADER as SIGNATURE_HEADER
from kinloop.webhook_signature import verify_signature

__all__ = [
    "SIGNATURE_HEADER",
    "Award",
    "BatchResult",
    "EventResult",
    "Expiring",
    "ItemError",
    "KinloopApiError",
    "KinloopClient",
    "LedgerEntry",
    "LedgerPage",
    "Member",
    "MemberToken",
    "Movement",
    "NextTier",
    "Reversal",
    "TierChange",
    "TierRef",
    "verify_webhook",
]

DEFAULT_TIMEOUT = 10.0
Amount = int | str  # whole-unit currencies are numbers; currencies with decimals are exact strings
T = TypeVar("T")


def _make(cls: type[T], data: Mapping[str, Any]) -> T:
    """A reply dataclass from JSON, ignoring fields a newer server may add."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


class KinloopApiError(Exception):
    """The API refused a request; built from its RFC 9457 problem details."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.errors = errors or []  # every problem, for invalid requests and program files
        self.retry_after = retry_after  # seconds, on 429

    @classmethod
    def from_response(cls, response: httpx.Response) -> KinloopApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        retry = response.headers.get("retry-after")
        retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
        if not isinstance(body, dict) or "code" not in body:
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, "http_error", text, retry_after=retry_after)
        errors = body.get("errors")
        return cls(
            response.status_code,
            str(body["code"]),
            str(body.get("detail", "")),
            body.get("field"),
            errors=errors if isinstance(errors, list) else None,
            retry_after=retry_after,
        )


# --- replies (they mirror kinloop.api.schemas) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Award:
    rule: str
    currency: str
    amount: Amount
    kind: str
    pending: bool
    text: str


@dataclass(frozen=True, slots=True)
class TierChange:
    from_: str | None
    to: str | None
    text: str


@dataclass(frozen=True, slots=True)
class ItemError:
    code: str
    detail: str
    field: str | None


@dataclass(frozen=True, slots=True)
class EventResult:
    """What one event did: its awards and tier change, or (in a batch) why it was rejected."""

    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    awards: list[Award]
    tier_changed: TierChange | None
    error: ItemError | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EventResult:
        tier = d.get("tier_changed")
        err = d.get("error")
        return cls(
            index=d["index"],
            event_id=d.get("event_id"),
            status=d["status"],
            awards=[_make(Award, a) for a in d.get("awards") or []],
            tier_changed=TierChange(tier.get("from"), tier.get("to"), tier.get("text", "")) if tier else None,
            error=ItemError(err["code"], err["detail"], err.get("field")) if err else None,
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BatchResult:
        return cls(d["accepted"], d["duplicates"], d["rejected"], [EventResult.from_json(r) for r in d["results"]])


@dataclass(frozen=True, slots=True)
class TierRef:
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class NextTier:
    key: str
    name: str
    missing: Amount
    text: str  # "3 ★ to Gold"


@dataclass(frozen=True, slots=True)
class Expiring:
    currency: str
    amount: Amount
    on: str  # YYYY-MM-DD, in the program's time zone
    text: str


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    balances: dict[str, Amount]
    pending: dict[str, Amount]
    tier: TierRef | None
    next_tier: NextTier | None
    expiring: list[Expiring]
    display: dict[str, str]
    profile: dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Member:
        return cls(
            member_id=d["member_id"],
            balances=dict(d["balances"]),
            pending=dict(d.get("pending") or {}),
            tier=_make(TierRef, d["tier"]) if d.get("tier") else None,
            next_tier=_make(NextTier, d["next_tier"]) if d.get("next_tier") else None,
            expiring=[_make(Expiring, e) for e in d.get("expiring") or []],
            display=dict(d.get("display") or {}),
            profile=dict(d.get("profile") or {}),
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: int
    kind: str
    currency: str
    amount: Amount
    signed: Amount  # the change to the member's balance: negative for debits, 0 for pending -> available
    from_: str
    to: str
    event_id: str | None
    rule: str | None
    reason: str | None
    actor: str | None
    effective_at: str
    created_at: str
    text: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LedgerEntry:
        return _make(cls, {**d, "from_": d["from"]})


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Movement:
    """A spend or an adjustment, with the balance after it."""

    entry_id: int
    member_id: str
    currency: str
    amount: int
    balance: int
    replayed: bool  # True when the idempotency key had been used: nothing moved this time
    text: str


@dataclass(frozen=True, slots=True)
class Reversal:
    event_id: str
    clawed_back: dict[str, int]
    unrecovered: dict[str, int]
    text: dict[str, str]
    unrecovered_text: dict[str, str]
    tier_changed: dict[str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class MemberToken:
    token: str
    member_id: str
    expires_at: str


class KinloopClient:
    """The HTTP API, one method per endpoint. Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`key` is an API key (`kl_...`) or a member token (`klm_...`); `transport` replaces
        the network (tests, proxies, retries: `httpx.HTTPTransport(retries=3)`)."""
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={
                "authorization": f"Bearer {key}",
                "accept": "application/json",
                "user-agent": "kinloop-client",
                **(headers or {}),
            },
        )

    def __enter__(self) -> KinloopClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            raise KinloopApiError.from_response(response)
        return response.json()

    # --- events ---------------------------------------------------------------------------
    def post_event(
        self,
        event_id: str,
        member_id: str,
        type: str,
        occurred_at: str | datetime,
        attributes: Mapping[str, Any] | None = None,
    ) -> EventResult:
        """Send one event. A repeat of an `event_id` answers `status="duplicate"` and awards
        nothing; an event that cannot be accepted raises KinloopApiError (422)."""
        body = _event(
            {
                "event_id": event_id,
                "member_id": member_id,
                "type": type,
                "occurred_at": occurred_at,
                "attributes": attributes or {},
            }
        )
        return EventResult.from_json(self._call("POST", "/v1/events", json=body))

    def post_events(self, events: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Send up to 1,000 events (mappings with the keys of `post_event`'s arguments).
        Each succeeds or fails on its own: look at `results[i].status` and `.error`."""
        return BatchResult.from_json(self._call("POST", "/v1/events", json={"events": [_event(e) for e in events]}))

    def reverse(self, event_id: str, *, amount: str | int | None = None, reason: str = "reversal") -> Reversal:
        """Claw back an event's awards: all, or with `amount` what a refund of that much takes away."""
        body: dict[str, Any] = {"reason": reason}
        if amount is not None:
            body["amount"] = amount
        return _make(Reversal, self._call("POST", f"/v1/events/{_seg(event_id)}/reversal", json=body))

    # --- members --------------------------------------------------------------------------
    def member(self, member_id: str) -> Member:
        """Balances, tier, progress to the next tier and points expiring within 30 days."""
        return Member.from_json(self._call("GET", f"/v1/members/{_seg(member_id)}"))

    def set_profile(
        self,
        member_id: str,
        *,
        display_name: str | None = None,
        birthday: str | None = None,
        timezone: str | None = None,
        joined_at: str | None = None,
        attributes: Mapping[str, str | int | float | bool] | None = None,
    ) -> Member:
        """Create or replace a member's profile (`attributes` are visible to rule conditions)."""
        body: dict[str, Any] = {
            k: v
            for k, v in {
                "display_name": display_name,
                "birthday": birthday,
                "timezone": timezone,
                "joined_at": joined_at,
            }.items()
            if v is not None
        }
        body["attributes"] = dict(attributes or {})
        return Member.from_json(self._call("PUT", f"/v1/members/{_seg(member_id)}", json=body))

    def ledger(self, member_id: str, cursor: str | None = None, limit: int = 50) -> LedgerPage:
        """One page of a member's history, newest first; pass `next_cursor` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        data = self._call("GET", f"/v1/members/{_seg(member_id)}/ledger", params=params)
        return LedgerPage([LedgerEntry.from_json(e) for e in data["entries"]], data.get("next_cursor"))

    def iter_ledger(self, member_id: str, page_size: int = 200) -> Iterator[LedgerEntry]:
        """Every entry of a member's history, newest first, fetched page by page."""
        cursor: str | None = None
        while True:
            page = self.ledger(member_id, cursor=cursor, limit=page_size)
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def spend(
        self, member_id: str, currency: str, amount: str | int, reason: str, *, idempotency_key: str | None = None
    ) -> Movement:
        """Debit available points (soonest-expiring first). With `idempotency_key`, a retry
        of the same spend moves nothing again; insufficient points raise a 409."""
        body = _movement(currency, amount, reason, idempotency_key)
        return _make(Movement, self._call("POST", f"/v1/members/{_seg(member_id)}/spends", json=body))

    def adjust(
        self, member_id: str, currency: str, amount: str | int, reason: str, *, idempotency_key: str | None = None
    ) -> Movement:
        """A manual credit (positive) or debit (negative); admin keys only, audited."""
        body = _movement(currency, amount, reason, idempotency_key)
        return _make(Movement, self._call("POST", f"/v1/members/{_seg(member_id)}/adjustments", json=body))

    def member_token(self, member_id: str, *, ttl_seconds: int | None = None) -> MemberToken:
        """A short-lived token with which the member's own app may read that member only
        (`KinloopClient(base_url, token.token).member(member_id)`)."""
        body = None if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return _make(MemberToken, self._call("POST", f"/v1/members/{_seg(member_id)}/tokens", json=body))


def _seg(value: str) -> str:
    """One path segment: ids may hold characters that are special in URLs."""
    return quote(value, safe="")


def _event(event: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(event)
    at = out.get("occurred_at")
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("occurred_at needs a time zone (an aware datetime)")
        out["occurred_at"] = at.isoformat()
    out.setdefault("attributes", {})
    return out


def _movement(currency: str, amount: str | int, reason: str, key: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"currency": currency, "amount": amount, "reason": reason}
    if key is not None:
        body["idempotency_key"] = key
    return body


# --- webhooks -------------------------------------------------------------------------------
def verify_webhook(
    secret: str | bytes,
    header: str | None,
    body: bytes | str,
    now: float | datetime | None = None,
    tolerance: int = 300,
) -> bool:
    """True when `header` (the `kinloop-signature` header: `t=<unix time>,v1=<hex>`) signs
    `body` (the raw request body, before any JSON parsing) with the subscription's `secret`,
    and its time is within `tolerance` seconds of `now` (default: the current time).

    The signature is HMAC-SHA256 over `f"{t}.{body}"`; a header may carry several `v1=`
    values (while a secret is being rotated): one match is enough. The server signs with
    the same module (`kinloop.webhook_signature`), so the two cannot drift apart."""
    return verify_signature(secret, header, body, now=time.time() if now is None else now, tolerance=tolerance)
