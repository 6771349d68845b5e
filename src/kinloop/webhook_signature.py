"""Signing and verifying kinloop webhook requests (standard library only).

Every webhook request carries the header

    kinloop-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC is keyed with the subscription's secret (its text, as UTF-8) and computed over
the timestamp, a dot and the raw request body: ``f"{t}.".encode() + body``. A receiver checks
it against the body exactly as received (before parsing the JSON), and refuses timestamps
more than `tolerance` seconds away from its own clock, so that a captured request cannot be
replayed later. Several `v1=` values may appear (one per secret while a secret is rotated);
one match is enough. Messages are delivered at least once: drop repeats by `kinloop-message-id`.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

__all__ = ["HEADER", "SCHEME", "sign", "signature_header", "verify_signature"]

HEADER = "kinloop-signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: int, body: str | bytes) -> str:
    """The hex HMAC-SHA256 of `f"{timestamp}.{body}"` under `secret`."""
    message = f"{timestamp}.".encode() + _bytes(body)
    return hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, timestamp: int, body: str | bytes) -> str:
    """The value of the `kinloop-signature` header for a body sent at `timestamp`."""
    return f"t={timestamp},{SCHEME}={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: str | bytes,
    *,
    now: datetime | float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Whether `header` (a `kinloop-signature` value) signs `body` with `secret`, at a
    timestamp within `tolerance` seconds of `now` (a datetime or Unix seconds)."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Every candidate is compared (in constant time), so timing says nothing about which matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.strip().lower().encode())
    return matched
