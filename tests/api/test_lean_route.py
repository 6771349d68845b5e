"""`LeanRoute` serves an endpoint as FastAPI's own route class would: same replies, same errors,
same OpenAPI operation; and it refuses, when built, what it could not serve the same way."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kinloop.api import problems
from kinloop.api.app import create_app
from kinloop.api.lean import LeanRoute
from kinloop.domain.errors import UnknownMember

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Key = Annotated[str, Path(min_length=1, max_length=8, pattern=r"^[a-z0-9]*$")]
Count = Annotated[int, Path(ge=0, le=99)]


class Thing(BaseModel):
    key: str
    count: int
    label: str = Field(serialization_alias="displayName")
    extra: dict[str, Any] = {}


async def thing(request: Request, key: Key, count: Count) -> Any:
    if key == "gone":
        raise UnknownMember("no such thing", field="key")
    if key == "raw":
        return JSONResponse({"raw": True}, status_code=202)
    # More than the model declares, and a number as text: the reply is what the model makes of it.
    return {"key": key, "count": str(count), "label": request.url.path, "unused": 1, "extra": {"n": 1.5}}


def _app(route_class: type) -> FastAPI:
    app = FastAPI()
    problems.install(app, pages=None)
    router = APIRouter(prefix="/v1", route_class=route_class)
    router.get("/things/{key}/{count}", response_model=Thing, summary="A thing")(thing)
    app.router.routes.extend(router.routes)
    return app


PATHS = [
    "/v1/things/abc/3",  # fine
    "/v1/things/gone/3",  # a domain error
    "/v1/things/raw/3",  # a Response of the endpoint's own
    "/v1/things/ABC/3",  # pattern
    "/v1/things/toolongkey/3",  # length
    "/v1/things/abc/x",  # not a number
    "/v1/things/abc/100",  # out of range
    "/v1/things/ABC/-1",  # two bad parameters at once
    "/v1/things/a%00b/1",  # NUL
]


@pytest.mark.parametrize("path", PATHS)
async def test_replies_as_fastapis_route_does(path: str) -> None:
    replies = []
    for route_class in (LeanRoute, None):
        app = _app(route_class) if route_class else _app(APIRouter().route_class)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.get(path)
        replies.append((r.status_code, r.headers.get("content-type"), r.content))
    lean, plain = replies
    assert lean == plain


async def test_the_reply_is_the_models_json() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(LeanRoute)), base_url="http://t") as client:
        r = await client.get("/v1/things/abc/3")
    assert r.status_code == 200
    assert r.json() == {"key": "abc", "count": 3, "displayName": "/v1/things/abc/3", "extra": {"n": 1.5}}


async def test_a_bad_path_parameter_names_it() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(LeanRoute)), base_url="http://t") as client:
        r = await client.get("/v1/things/ABC/-1")
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["key", "count"]


@pytest.mark.parametrize("path", ["/v1/things/ABC/-1", "/v1/things/abc/x"])
async def test_the_validation_error_is_fastapis(path: str) -> None:
    """As raised, before any handler shapes it: a handler of an integrator's sees the same."""
    seen = []
    for route_class in (LeanRoute, APIRouter().route_class):
        app = _app(route_class)

        @app.exception_handler(RequestValidationError)
        async def raw(_request: Request, exc: RequestValidationError) -> JSONResponse:
            return JSONResponse(jsonable_encoder(exc.errors()), status_code=422)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            seen.append((await client.get(path)).json())
    assert seen[0] == seen[1]
    assert all(e["loc"][0] == "path" for e in seen[0])


def test_the_openapi_operation_is_fastapis() -> None:
    assert _app(LeanRoute).openapi() == _app(APIRouter().route_class).openapi()


def test_the_member_read_is_lean() -> None:
    app = create_app("sqlite:///:memory:")
    (route,) = [r for r in app.routes if getattr(r, "path", None) == "/v1/members/{member_id}" and "GET" in r.methods]
    assert isinstance(route, LeanRoute)


async def _with_query(key: Key, q: Annotated[str, Query()] = "") -> Any:
    return {}


async def _with_dependency(key: Key, dep: Annotated[str, Depends(lambda: "x")]) -> Any:
    return {}


def _sync(key: Key) -> Any:
    return {}


@pytest.mark.parametrize(
    ("endpoint", "options", "refusal"),
    [
        (_with_query, {}, "'q' is neither the Request nor a path parameter"),
        (_with_dependency, {}, "'dep' is neither the Request nor a path parameter"),
        (_sync, {}, "is async"),
        (thing, {"dependencies": [Depends(lambda: None)]}, "does not serve dependencies"),
        (thing, {"response_model_exclude_none": True}, "does not serve response_model_exclude_none"),
        (thing, {"response_model_by_alias": False}, "does not serve response_model_by_alias"),
        (thing, {"response_model": None}, "does not serve replies without a response_model"),
    ],
)
def test_what_it_cannot_serve_the_same_is_refused_when_built(endpoint: Any, options: Any, refusal: str) -> None:
    router = APIRouter(route_class=LeanRoute)
    path = "/things/{key}/{count}" if endpoint is thing else "/things/{key}"
    with pytest.raises(TypeError, match=refusal):
        router.get(path, **{"response_model": Thing, **options})(endpoint)
