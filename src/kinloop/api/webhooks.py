"""The /v1/webhooks endpoints (admin only): subscriptions and their delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from kinloop.api.deps import Admin, Conn, ReadConn
from kinloop.api.schemas import NO_NUL, Model
from kinloop.clock import utcnow
from kinloop.services import webhooks

router = APIRouter(prefix="/v1/webhooks")
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Kind = Literal[
    "award.created",
    "tier.changed",
    "points.expiring",
    "tier.will_change",
    "tier.expiring",
    "badge.awarded",
    "order.placed",
    "order.confirmed",
    "order.fulfilled",
    "order.completed",
    "order.cancelled",
    "order.refunded",
    "goal.reached",
]

SIGNING = """Every message is a JSON `POST` of `{"id", "kind", "created_at", "program", "data"}` with
the headers `kinloop-message-id` (the message's idempotency id, the same as `id`: delivery is
at least once, so drop repeats by it), `kinloop-event-kind`, `kinloop-attempt` (1, 2, ...) and
`kinloop-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the
secret>`; check it with `kinloop.webhook_signature.verify_signature`. Reply 2xx within 5
seconds; anything else is retried after 10 s, 20 s, 40 s, ... (at most an hour apart),
10 attempts in all."""


class WebhookIn(Model):
    """A URL to notify of some kinds of messages."""

    url: str = Field(min_length=1, max_length=2000, examples=["https://example.com/kinloop"])
    kinds: list[Kind] = Field(
        min_length=1, max_length=len(get_args(Kind)), examples=[["award.created", "tier.changed"]]
    )
    description: str | None = Field(None, max_length=200, pattern=NO_NUL)


class WebhookOut(BaseModel):
    id: int
    url: str
    kinds: list[str]
    description: str | None
    active: bool
    created_at: str
    deactivated_at: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="signs every request; shown once, store it now")


class AttemptOut(BaseModel):
    attempt: int
    at: str
    status_code: int | None
    error: str | None
    duration_ms: int | None


class DeliveryOut(BaseModel):
    id: int
    message_id: str
    kind: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    created_at: str
    payload: dict[str, Any]
    log: list[AttemptOut]


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=201,
    summary="Subscribe a URL to kinds of messages",
    description="The reply holds the signing secret; it is not shown again.\n\n" + SIGNING,
)
def create_webhook(who: Admin, conn: Conn, body: WebhookIn) -> Any:
    sub, secret = webhooks.create(
        conn, who.program_id, url=body.url, kinds=body.kinds, description=body.description, now=utcnow()
    )
    return {**sub.as_json(), "secret": secret}


@router.get("", response_model=list[WebhookOut], summary="The program's webhook subscriptions")
def list_webhooks(who: Admin, conn: ReadConn) -> Any:
    return [s.as_json() for s in webhooks.listing(conn, who.program_id)]


@router.get("/{webhook_id}", response_model=WebhookOut, summary="One webhook subscription")
def get_webhook(who: Admin, conn: ReadConn, webhook_id: WebhookId) -> Any:
    return webhooks.get(conn, who.program_id, webhook_id).as_json()


@router.delete("/{webhook_id}", response_model=WebhookOut, summary="Deactivate a webhook subscription")
def delete_webhook(who: Admin, conn: Conn, webhook_id: WebhookId) -> Any:
    """It gets no new messages and its pending deliveries are dropped; its log stays readable."""
    return webhooks.deactivate(conn, who.program_id, webhook_id, now=utcnow()).as_json()


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    summary="The delivery log, newest message first",
)
def list_deliveries(
    who: Admin,
    conn: ReadConn,
    webhook_id: WebhookId,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
) -> Any:
    """Each delivery with its state and every attempt (time, HTTP status or error)."""
    before = min(int(cursor), 2**63 - 1) if cursor else None
    rows, next_cursor = webhooks.delivery_log(
        conn, who.program_id, webhook_id, before=before, limit=limit, status=status
    )
    return {"deliveries": rows, "next_cursor": next_cursor}
