"""schemathesis against /openapi.json: generated requests to every operation, with an admin
key, must never get a 5xx, and every reply must be documented: its status, its content type
and its body's schema (problems included).

The app runs in-process (ASGI) on SQLite with the coffee program loaded and members with
history. Each operation gets valid requests (positive mode), valid requests aimed at the
members and events that exist, and requests that break the schema (negative mode), which
must be refused with a documented 4xx problem.

schemathesis' own pytest plugin resolves lazy schemas through a pytest attribute that pytest 9
removed, so the operations are listed here and driven through `APIOperation.as_strategy`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from kinloop.api.app import create_app
from kinloop.services import keys
from kinloop.store import migrate
from kinloop.store.db import connect
from tests.api.conftest import event
from tests.conftest import NOW, load_example

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
# Path parameters that name something that exists, for the aimed requests.
KNOWN = {"member_id": "m1", "event_id": "seed-0", "version": 1, "a": 1, "b": 1}


def _operations() -> list[str]:
    """Every documented operation, as schemathesis labels it ("POST /v1/events")."""
    app = create_app("sqlite://")  # only the schema is read; no connection is made
    labels = [f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items() for method in ops]
    app.state.kinloop.engine.dispose()
    return sorted(labels)


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """The loaded schema and an admin key's headers."""
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'kinloop.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    coffee = load_example(engine, "coffee")
    with engine.begin() as conn:
        admin, _ = keys.create(conn, coffee.program_id, "admin", name="schemathesis", now=NOW)
    engine.dispose()
    app = create_app(url, rate_limit=1_000_000)
    headers = {"Authorization": f"Bearer {admin}"}
    with TestClient(app) as client:
        # "string" is what schemathesis puts in string parameters by default: make it real too.
        for i, member in enumerate(["m1", "m2", "string"]):
            r = client.post("/v1/events", json=event(f"seed-{i}", member), headers=headers)
            assert r.status_code == 200, r.text
        r = client.post("/v1/events", json=event("string", "m1"), headers=headers)
        assert r.status_code == 200, r.text
    yield schemathesis.openapi.from_asgi("/openapi.json", app), headers
    app.state.kinloop.engine.dispose()


def test_the_schema_lists_every_v1_endpoint() -> None:
    assert len(OPERATIONS) >= 14
    assert all(label.split(" ", 1)[1].startswith("/v1/") for label in OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests(target: tuple[Any, dict[str, str]], label: str) -> None:
    schema, headers = target
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    known = {name: KNOWN[name] for name in re.findall(r"\{(\w+)\}", label) if name in KNOWN}
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
