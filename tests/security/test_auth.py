"""Bearer-key auth and CORS in-process, on the app factory both services use: which routes need a key, the 401
shape, keys from the environment and a file, lane keys (identity with auth on or off), no body read before the
key check, and settings that stop the service at start-up."""

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
from tests.asgi import call

KEYS = "first-key-0123456789,second-key-abcdef"
ORIGIN = "https://app.example.com"


def client(settings: ServiceSettings) -> TestClient:
    return TestClient(app(settings))


def app(settings: ServiceSettings) -> FastAPI:
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

    return service_app("test", settings, lifespan, lambda: None, router)


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


LANE_KEY = "lane-key-of-the-orchestrator-4567"
LANE_KEYS = f"orchestrator:{LANE_KEY}"


def test_without_api_keys_a_identity_key_names_its_caller_and_anyone_else_passes_as_anonymous() -> None:
    settings = EmbeddingSettings(lane_keys=LANE_KEYS)
    assert settings.api_key_digests == () and settings.identity_key_names == ("orchestrator",)
    http = client(settings)
    assert http.get("/v1/whoami", headers=bearer(LANE_KEY)).json() == {"name": "orchestrator"}
    # OpenAI's clients send some `Bearer sk-...` even to a server without auth: never refused for it.
    for headers in ({}, bearer("sk-no-key-needed"), {"Authorization": "Basic Zmlyc3Q="}, bearer(f"x{LANE_KEY}")):
        answer = http.post("/v1/echo", headers={**headers, "X-Request-ID": "anon"}, json={"a": "b"})
        assert answer.status_code == 200 and answer.json() == {"a": "b"}, headers
        assert http.get("/v1/whoami", headers=headers).json() == {"name": None}, headers


def test_with_api_keys_a_lane_key_is_accepted_too_and_anything_else_is_a_401() -> None:
    http = client(EmbeddingSettings(api_keys=f"search:{KEYS}", lane_keys=LANE_KEYS))
    assert http.get("/v1/whoami", headers=bearer(LANE_KEY)).json() == {"name": "orchestrator"}
    assert http.get("/v1/whoami", headers=bearer("first-key-0123456789")).json() == {"name": "search"}
    assert http.get("/v1/whoami", headers=bearer("sk-no-key-needed")).status_code == 401
    assert http.get("/v1/whoami").status_code == 401


def test_lane_keys_come_from_the_environment_and_a_file_and_are_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "lane-keys"
    keys_file.write_text("orchestrator:new-lane-key-0001\n\n  indexer:file-lane-key-0002 \n", encoding="utf-8")
    monkeypatch.setenv("EMBEDDING_LANE_KEYS", LANE_KEYS)
    monkeypatch.setenv("EMBEDDING_LANE_KEYS_FILE", str(keys_file))
    settings = EmbeddingSettings()
    # The same lane twice: its old key and its new one, while the new one replaces the old.
    assert settings.identity_key_names == ("orchestrator", "orchestrator", "indexer")
    assert matched_key(b"file-lane-key-0002", settings.identity_key_digests) == 2
    for key in (LANE_KEY, "new-lane-key-0001", "file-lane-key-0002"):
        assert key not in repr(settings) and key not in str(settings)


@pytest.mark.parametrize(
    ("lane_keys", "message"),
    [
        ("orchestrator:good-lane-key,bare-key-without-a-name", "lane key 2 is not `name:key`"),
        ("orchestrator:bad key", "lane key 1 has characters a bearer token cannot carry"),
        ("orchestrator:caf\u00e9-lane-key", "lane key 1 has characters a bearer token cannot carry"),
    ],
)
def test_unusable_lane_keys_stop_the_service_naming_the_setting_never_a_key(lane_keys: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        EmbeddingSettings(lane_keys=lane_keys)
    assert "lane-key" not in str(caught.value) and "bare-key" not in str(caught.value)


def test_an_unreadable_or_empty_lane_keys_file_stops_the_service(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="lane_keys_file /nonexistent/lane-keys cannot be read"):
        EmbeddingSettings(lane_keys_file="/nonexistent/lane-keys")
    empty = tmp_path / "lane-keys"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="holds no keys"):
        EmbeddingSettings(lane_keys_file=str(empty))


def test_the_orchestrator_sends_the_first_key_of_its_file_without_the_name(tmp_path: Path) -> None:
    """The embedding service's lane keys file serves: while a key is replaced, it lists two."""
    keys_file = tmp_path / "lane-keys"
    keys_file.write_text("orchestrator:old-lane-key-0001\norchestrator:new-lane-key-0002\n", encoding="utf-8")
    assert OrchestratorSettings(embedding_api_key_file=str(keys_file)).embedding_key == "old-lane-key-0001"
    assert OrchestratorSettings(embedding_api_key="plain-key-0003").embedding_key == "plain-key-0003"
    assert OrchestratorSettings().embedding_key == ""
    with pytest.raises(ValidationError, match="not both"):
        OrchestratorSettings(embedding_api_key="plain-key-0003", embedding_api_key_file=str(keys_file))
    with pytest.raises(ValidationError, match="embedding_api_key_file /nonexistent/key cannot be read"):
        OrchestratorSettings(embedding_api_key_file="/nonexistent/key")


async def test_with_auth_on_no_body_is_read_before_the_key_check() -> None:
    """A chunked body without a valid key: 401, and not one receive() of the body."""
    service = app(ServiceSettings(api_keys=KEYS))
    chunked, json = (b'{"a": ', b'"b"}'), {"Content-Type": "application/json"}
    for headers in ({}, bearer("wrong-key")):
        refused = await call(service, "POST", "/v1/echo", {**json, **headers}, chunked, then="stall")
        assert (refused.status, refused.reads) == (401, 0), headers
    answered = await call(service, "POST", "/v1/echo", {**json, **bearer("second-key-abcdef")}, chunked)
    assert (answered.status, answered.json()) == (200, {"a": "b"})


async def test_a_body_let_in_is_bounded_in_size_and_in_time() -> None:
    service = app(ServiceSettings(api_keys=KEYS, max_body_bytes=1024, body_read_timeout_s=0.2))
    key = bearer("first-key-0123456789")
    declared = await call(service, "POST", "/v1/echo", {**key, "Content-Length": "1025"}, then="stall")
    assert (declared.status, declared.json()["error"]["code"], declared.reads) == (413, "body_too_large", 0)
    streamed = await call(service, "POST", "/v1/echo", key, [b"x" * 600, b"x" * 600, b"x" * 600], then="stall")
    assert (streamed.status, streamed.json()["error"]["code"], streamed.reads) == (413, "body_too_large", 2)
    slow = await call(service, "POST", "/v1/echo", {**key, "X-Request-ID": "slow-1"}, [b'{"a": '], then="stall")
    assert (slow.status, slow.json()["error"]["code"]) == (408, "body_timeout")
    assert slow.headers["connection"] == "close" and slow.headers["x-request-id"] == "slow-1"
    assert "0.2 s" in slow.json()["error"]["message"]
    left = await call(service, "POST", "/v1/echo", key, [b'{"a": '], then="leave")
    assert left.status is None  # nobody to answer; the route never ran
