"""Webhook signatures: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, checked
against the raw body, the secret and a clock."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from kinloop.webhook_signature import sign, signature_header, verify_signature

SECRET = "whsec_test-secret"
BODY = b'{"id":"msg_1","kind":"award.created","data":{"member_id":"m1","text":"2 \xe2\x98\x85"}}'
T = 1_772_366_400  # 2026-03-01T12:00:00Z
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == expected
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_a_signed_body_verifies() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify_signature(SECRET, header, BODY, now=NOW)
    assert verify_signature(SECRET.encode(), header, BODY, now=float(T))
    assert verify_signature(SECRET, header, BODY.decode(), now=T + 10)


def test_a_tampered_body_does_not_verify() -> None:
    header = signature_header(SECRET, T, BODY)
    assert not verify_signature(SECRET, header, BODY.replace(b"m1", b"m2"), now=NOW)
    assert not verify_signature(SECRET, header, BODY + b" ", now=NOW)


def test_a_wrong_secret_does_not_verify() -> None:
    header = signature_header(SECRET, T, BODY)
    assert not verify_signature("whsec_other", header, BODY, now=NOW)


def test_a_timestamp_outside_the_tolerance_does_not_verify() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify_signature(SECRET, header, BODY, now=T + 300)
    assert not verify_signature(SECRET, header, BODY, now=T + 301)
    assert not verify_signature(SECRET, header, BODY, now=T - 301)  # from the future
    assert verify_signature(SECRET, header, BODY, now=T + 3600, tolerance=3600)


def test_a_changed_timestamp_does_not_verify() -> None:
    # Replaying the body with a fresh timestamp needs the secret.
    good = sign(SECRET, T, BODY)
    assert not verify_signature(SECRET, f"t={T + 60},v1={good}", BODY, now=T + 60)


def test_any_one_of_several_v1_signatures_is_enough() -> None:
    # While a secret is rotated, a request may carry one signature per secret.
    header = f"t={T},v1={sign('whsec_old', T, BODY)},v1={sign(SECRET, T, BODY)}"
    assert verify_signature(SECRET, header, BODY, now=NOW)
    assert verify_signature("whsec_old", header, BODY, now=NOW)
    assert not verify_signature("whsec_third", header, BODY, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"v1={sign(SECRET, T, BODY)}",  # no timestamp
        f"t={T}",  # no signature
        f"t=soon,v1={sign(SECRET, T, BODY)}",
        f"t={T},v0={sign(SECRET, T, BODY)}",  # an unknown scheme
        f"t={T},v1=é{sign(SECRET, T, BODY)}",  # not ASCII
    ],
)
def test_malformed_headers_do_not_verify(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, now=NOW)


def test_the_module_uses_only_the_standard_library() -> None:
    # Integrators may copy it; it must not drag kinloop's dependencies along.
    import ast
    import sys
    from pathlib import Path

    import kinloop.webhook_signature as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
