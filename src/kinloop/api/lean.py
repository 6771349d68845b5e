"""A route class for the hottest endpoints: declared like any other (its OpenAPI operation,
docs and validation errors are FastAPI's), served without FastAPI's per-request machinery.

For a member read, FastAPI's request handling (solving the endpoint's parameters, path, query,
header and cookie alike, around validating and serialising the reply) was a tenth of the read's
instructions. A lean route admits only what it can serve the same way for less: an async endpoint whose
parameters are the `Request` and path parameters, and a response model with the default
serialisation. Anything else is refused when the route is built, not served differently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class LeanRoute(APIRoute):
    """An APIRoute whose requests skip FastAPI's dependency solving and response processing:
    path parameters are validated by their own annotated types (a failure is the same
    `RequestValidationError`), and the reply is the response model's JSON."""

    def get_route_handler(self) -> Handler:
        endpoint = self.endpoint
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"{self.path}: a lean route's endpoint is async (it is awaited on the event loop)")
        self._refuse_options()
        request_arg, path = self._parameters()
        reply = TypeAdapter(self.response_model)
        status = self.status_code or 200

        async def handle(request: Request) -> Response:
            given = request.path_params
            args: dict[str, Any] = {}
            errors: list[Any] = []
            for name, adapter in path.items():
                try:
                    args[name] = adapter.validate_python(given[name])
                except ValidationError as exc:
                    errors.extend({**e, "loc": ("path", name, *e["loc"])} for e in exc.errors(include_url=False))
            if errors:
                raise RequestValidationError(errors)
            if request_arg is not None:
                args[request_arg] = request
            content = await endpoint(**args)
            if isinstance(content, Response):
                return content
            body = reply.dump_json(reply.validate_python(content), by_alias=True)  # as FastAPI does
            return Response(body, status, media_type="application/json")

        return handle

    def _parameters(self) -> tuple[str | None, dict[str, TypeAdapter[Any]]]:
        """The name of the endpoint's `Request` parameter (if any), and a validator for each path parameter."""
        hints = get_type_hints(self.endpoint, include_extras=True)
        request_arg = None
        path: dict[str, TypeAdapter[Any]] = {}
        for name in inspect.signature(self.endpoint).parameters:
            hint = hints.get(name)
            if hint is Request:
                request_arg = name
            elif name in self.param_convertors:
                path[name] = TypeAdapter(Any if hint is None else hint)  # unannotated: as given
            else:
                raise TypeError(f"{self.path}: {name!r} is neither the Request nor a path parameter")
        return request_arg, path

    def _refuse_options(self) -> None:
        """What FastAPI's handler would honour and this one would not."""
        refused = {
            "replies without a response_model": self.response_model is None,
            "dependencies": bool(self.dependencies),
            "response_model_include": self.response_model_include is not None,
            "response_model_exclude": self.response_model_exclude is not None,
            "response_model_by_alias": not self.response_model_by_alias,
            "response_model_exclude_unset": self.response_model_exclude_unset,
            "response_model_exclude_defaults": self.response_model_exclude_defaults,
            "response_model_exclude_none": self.response_model_exclude_none,
        }
        named = [k for k, v in refused.items() if v]
        if named:
            raise TypeError(f"{self.path}: a lean route does not serve {', '.join(named)}")
