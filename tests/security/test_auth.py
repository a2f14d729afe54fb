"""Bearer-key auth and CORS in-process, on the app factory both services use: which routes need a key, the 401
shape, keys from the environment and a file, and settings that stop the service at start-up."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from embedding_service.settings import EmbeddingSettings
from orchestrator.settings import OrchestratorSettings
from service_common.app import service_app
from service_common.auth import bearer_token, matched_key
from service_common.settings import ServiceSettings

KEYS = "first-key-0123456789,second-key-abcdef"
ORIGIN = "https://app.example.com"


def client(settings: ServiceSettings) -> TestClient:
    router = APIRouter()

    @router.get("/v1/models")
    async def models() -> dict[str, str]:
        return {"object": "list"}

    @router.post("/v1/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @router.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        return {"name": getattr(request.state, "api_key_name", None)}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    return TestClient(service_app("test", settings, lifespan, lambda: None, router))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_every_route_is_open_and_no_cors_header_is_sent() -> None:
    http = client(ServiceSettings())
    for path in ("/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        response = http.get(path, headers={"Origin": ORIGIN})
        assert response.status_code == 200, path
        assert not any(name.startswith("access-control-") for name in response.headers), path
    preflight = http.options("/v1/echo", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_a_missing_or_wrong_key_is_a_401_in_our_error_shape() -> None:
    http = client(ServiceSettings(api_keys=KEYS))
    cases = [
        ({}, "missing_api_key"),
        (bearer("first-key-012345678"), "invalid_api_key"),  # a prefix of a key
        (bearer("first-key-0123456789x"), "invalid_api_key"),
        ({"Authorization": "Basic Zmlyc3Qta2V5"}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "first-key-0123456789"}, "missing_api_key"),
    ]
    for headers, code in cases:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/echo"), ("GET", "/openapi.json"), ("GET", "/nope")):
            response = http.request(method, path, headers={**headers, "X-Request-ID": "req-1"}, json={"a": "b"})
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.headers["x-request-id"] == "req-1"
            error = response.json()["error"]
            assert (error["type"], error["code"], error["param"]) == ("authentication_error", code, None)
            assert "key-0123" not in response.text


def test_every_configured_key_is_accepted_and_the_scheme_is_case_insensitive() -> None:
    http = client(ServiceSettings(api_keys=KEYS))
    for key in KEYS.split(","):
        assert http.get("/v1/models", headers=bearer(key)).status_code == 200
        assert http.post("/v1/echo", headers=bearer(key), json={"a": "b"}).json() == {"a": "b"}
    assert http.get("/v1/models", headers={"Authorization": "bearer  first-key-0123456789 "}).status_code == 200


def test_ops_routes_are_open_by_default_and_closed_when_configured() -> None:
    open_ops = client(ServiceSettings(api_keys=KEYS))
    closed_ops = client(ServiceSettings(api_keys=KEYS, auth_ops_routes=True))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert open_ops.get(path).status_code == 200, path
        assert closed_ops.get(path).status_code == 401, path
        assert closed_ops.get(path, headers=bearer("second-key-abcdef")).status_code == 200, path


def test_keys_come_from_the_environment_and_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("\n  file-key-1  \n\nfile-key-2\n", encoding="utf-8")
    monkeypatch.setenv("EMBEDDING_API_KEYS", "env-key-1, env-key-2")
    monkeypatch.setenv("EMBEDDING_API_KEYS_FILE", str(keys_file))
    settings = EmbeddingSettings()
    assert len(settings.api_key_digests) == 4
    http = client(settings)
    for key in ("env-key-1", "env-key-2", "file-key-1", "file-key-2"):
        assert http.get("/v1/models", headers=bearer(key)).status_code == 200, key
    assert http.get("/v1/models", headers=bearer("env-key-1, env-key-2")).status_code == 401
    # Never printed: not in the settings' repr, nor in a start-up error about another setting.
    assert "env-key" not in repr(settings) and "env-key" not in str(settings)
    monkeypatch.setenv("EMBEDDING_PORT", "0")
    with pytest.raises(ValidationError) as caught:
        EmbeddingSettings()
    assert "port" in str(caught.value) and "env-key" not in str(caught.value)


def test_key_matching_compares_digests_against_every_key() -> None:
    settings = ServiceSettings(api_keys=KEYS)
    assert matched_key(b"first-key-0123456789", settings.api_key_digests) == 0
    assert matched_key(b"second-key-abcdef", settings.api_key_digests) == 1
    assert matched_key(b"", settings.api_key_digests) is None
    assert matched_key(b"first-key-0123456789", ()) is None
    assert bearer_token([(b"authorization", b"Bearer abc")]) == b"abc"
    assert bearer_token([(b"authorization", b"Token abc")]) is None
    assert bearer_token([(b"x-api-key", b"abc")]) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"api_keys_file": "/nonexistent/keys"}, "api_keys_file /nonexistent/keys cannot be read"),
        ({"api_keys": "good-key,bad key"}, "api key 2 has characters a bearer token cannot carry"),
        ({"api_keys": "caf\u00e9-key"}, "api key 1 has characters a bearer token cannot carry"),
    ],
)
def test_unusable_keys_stop_the_service_at_start_up(settings: dict[str, str], message: str) -> None:
    for service in (EmbeddingSettings, OrchestratorSettings):
        with pytest.raises(ValidationError, match=message) as caught:
            service(**settings)  # type: ignore[arg-type]
        assert "good-key" not in str(caught.value)


def test_an_empty_keys_file_stops_the_service_rather_than_turning_auth_off(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValidationError, match="holds no keys"):
        OrchestratorSettings(api_keys_file=str(empty))


def test_cors_when_origins_are_configured_even_on_a_401() -> None:
    http = client(ServiceSettings(api_keys=KEYS, cors_origins=f"{ORIGIN}, https://other.example.com"))
    preflight = http.options(
        "/v1/echo",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200  # answered without a key: browsers send none on a preflight
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = http.get("/v1/models", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # so the page can read why
    stranger = http.get("/v1/models", headers={"Origin": "https://evil.example.com", **bearer("second-key-abcdef")})
    assert stranger.status_code == 200
    assert "access-control-allow-origin" not in stranger.headers


def test_a_named_key_tells_the_routes_its_name_and_an_unnamed_one_does_not(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("indexer:key-of-the-nightly-job\nplain-file-key\n", encoding="utf-8")
    settings = ServiceSettings(api_keys="search:key-for-search, anonymous-key", api_keys_file=str(keys_file))
    assert settings.api_key_names == ("search", None, "indexer", None)
    http = client(settings)
    expected = {
        "key-for-search": "search",
        "anonymous-key": None,
        "key-of-the-nightly-job": "indexer",
        "plain-file-key": None,
    }
    for key, name in expected.items():
        assert http.get("/v1/whoami", headers=bearer(key)).json() == {"name": name}, key
    # The name is not part of the key: `search:key-for-search` itself is no key.
    assert http.get("/v1/whoami", headers=bearer("search:key-for-search")).status_code == 401
