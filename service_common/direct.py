"""Direct routes: served straight from ASGI, behind every service middleware (request id, access log, trace,
auth, body limit) but none of FastAPI's routing, dependency resolution or response machinery, which cost a
hot path more than its own work (issue 24: a third of the orchestrator's CPU per /classify). A direct route
reads its body as FastAPI reads a body parameter, with the same errors naming the same fields, and is
documented in the app's OpenAPI schema from its models like any route."""

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from service_common.errors import MethodNotAllowedError, ServiceError, unparsable_body, validation_error
from service_common.middleware import send_error

M = TypeVar("M", bound=BaseModel)
_SCHEMAS = "#/components/schemas/{model}"
# A direct route's work: the request (its scope, and `receive`, whose first message holds the whole body,
# as BodyLimitMiddleware replays it) to its 200 answer's JSON bytes; a ServiceError for any other answer.
Handler = Callable[[Scope, Receive], Awaitable[bytes]]


@dataclass(frozen=True)
class DirectRoute:
    """`handler` answers `method` on `path`. `body` and `answer` (a model, or a union of models) are what
    the OpenAPI schema says it takes and answers with 200."""

    method: str
    path: str
    handler: Handler
    body: type[BaseModel]
    answer: Any
    summary: str


class DirectRoutes:
    """The innermost service middleware: a request for a direct route's path goes to its handler (405 for
    another method), any other on to FastAPI. The handler's answer is sent as JSON, its ServiceError in
    the one error shape."""

    def __init__(self, app: ASGIApp, routes: Sequence[DirectRoute]) -> None:
        self.app = app
        self._routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # what the access log, the latency metric and the server span name it by
        if scope["method"] != route.method:
            refused = MethodNotAllowedError("Method Not Allowed", code="405")
            await send_error(send, refused, [(b"allow", route.method.encode())])
            return
        try:
            content = await route.handler(scope, receive)
        except ServiceError as error:
            await send_error(send, error)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value; `name` in lower case."""
    return next((value.decode("latin-1") for key, value in scope["headers"] if key == name), None)


def json_value(scope: Scope, body: bytes) -> object:
    """The body's JSON value, where its Content-Type says JSON (`application/json`, `application/*+json`);
    else the bytes themselves, which no model takes. Unparsable JSON is a 400 (`invalid_json`)."""
    mime = (header(scope, b"content-type") or "").partition(";")[0].strip().lower()
    if not body or not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
        return body or None
    try:
        return json.loads(body)  # what FastAPI parses with: NaN, bad UTF-8 and deep nesting behave the same
    except (ValueError, RecursionError) as exc:
        raise unparsable_body(exc) from None


def validated(model: type[M], value: object) -> M:
    """`value` as `model`; a 400 naming the first field at fault."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def document(app: FastAPI, routes: Sequence[DirectRoute]) -> None:
    """Adds the direct routes to the app's OpenAPI schema (FastAPI documents only its own routes)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for route in (route for route in routes if route.path not in schema["paths"]):
            operation = {
                "summary": route.summary,
                "operationId": route.path.strip("/").replace("/", "_") + "_" + route.method.lower(),
                "requestBody": {
                    "content": {"application/json": {"schema": _schema(route.body, "validation", components)}},
                    "required": True,
                },
                "responses": {
                    "200": {
                        "description": "Successful Response",
                        "content": {"application/json": {"schema": _schema(route.answer, "serialization", components)}},
                    }
                },
            }
            schema["paths"][route.path] = {route.method.lower(): operation}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _schema(kind: Any, mode: str, components: dict[str, Any]) -> dict[str, Any]:
    """`kind`'s JSON schema, its models in `components` (a model itself by reference, as FastAPI does)."""
    schema: dict[str, Any] = TypeAdapter(kind).json_schema(ref_template=_SCHEMAS, mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        components[kind.__name__] = schema
        return {"$ref": _SCHEMAS.format(model=kind.__name__)}
    return schema
