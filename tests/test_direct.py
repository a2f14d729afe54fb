"""Direct routes (service_common/direct.py) in-process: served behind every service middleware, refused
with FastAPI's own errors, named in the latency metric, and documented in the OpenAPI schema."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict
from starlette.types import Receive, Scope

from service_common.app import service_app
from service_common.direct import DirectRoute, json_value, validated
from service_common.settings import ServiceSettings


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


async def echo(scope: Scope, receive: Receive) -> bytes:
    return validated(Echo, json_value(scope, (await receive())["body"])).model_dump_json().encode()


def client(**settings: str) -> TestClient:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    route = DirectRoute("POST", "/v1/echo", echo, Echo, Echo, "Echo")
    app = service_app("test", ServiceSettings(**settings), lifespan, lambda: None, APIRouter(), direct=[route])
    return TestClient(app, raise_server_exceptions=False)


def test_a_direct_route_answers_behind_the_service_middleware() -> None:
    http = client(api_keys="key-0123456789")
    assert http.post("/v1/echo", json={"text": "hi"}).status_code == 401  # auth runs first
    before = REGISTRY.get_sample_value(
        "http_request_duration_seconds_count", {"method": "POST", "route": "/v1/echo", "status": "200"}
    )
    answer = http.post("/v1/echo", json={"text": "hi"}, headers={"Authorization": "Bearer key-0123456789"})
    assert (answer.status_code, answer.json()) == (200, {"text": "hi"})
    assert len(answer.headers["x-request-id"]) == 32
    after = REGISTRY.get_sample_value(
        "http_request_duration_seconds_count", {"method": "POST", "route": "/v1/echo", "status": "200"}
    )
    assert after == (before or 0) + 1


def test_its_refusals_are_fastapis() -> None:
    http = client()
    cases = [
        (b'{"text": 5}', "application/json", "text", "invalid_value"),
        (b'{"text": "a", "x": 1}', "application/json", "x", "invalid_value"),
        (b"{not json", "application/json", "body", "invalid_json"),
        (b'{"text": "hi"}', "text/plain", "body", "invalid_body"),
        (b"", "application/json", "body", "invalid_body"),
    ]
    for content, content_type, param, code in cases:
        error = http.post("/v1/echo", content=content, headers={"Content-Type": content_type}).json()["error"]
        assert (error["param"], error["code"]) == (param, code), content
    refused = http.get("/v1/echo")
    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")


def test_it_is_documented_like_a_fastapi_route() -> None:
    schema = client().get("/openapi.json").json()
    operation = schema["paths"]["/v1/echo"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Echo"}
    assert schema["components"]["schemas"]["Echo"]["required"] == ["text"]
    assert "200" in operation["responses"]
