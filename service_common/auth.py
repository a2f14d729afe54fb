"""Who may call a service, and who it is: bearer keys on every route but the ops ones, and CORS, which is off
unless origins are configured. `service_app` installs both, so every service gets them the same way.

Two kinds of keys: API keys (`api_keys`), which turn auth on, and identity keys (the embedding service's lane
keys), which only say who the caller is. With auth off, a request bearing no key or an unknown one passes as
anonymous (OpenAI's clients always send some `Bearer sk-...`); with auth on, it gets 401."""

import hashlib
import hmac
from collections.abc import Sequence

from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service_common.errors import UnauthorizedError
from service_common.ops import OPS_PATHS
from service_common.settings import ServiceSettings


def auth_middleware(settings: ServiceSettings) -> Middleware | None:
    """Bearer-key auth when any key is configured (an API key or an identity key); None without keys."""
    digests = settings.api_key_digests + settings.identity_key_digests
    if not digests:
        return None
    return Middleware(
        BearerAuthMiddleware,
        key_digests=digests,
        key_names=settings.api_key_names + settings.identity_key_names,
        open_paths=frozenset() if settings.auth_ops_routes else OPS_PATHS,
        required=bool(settings.api_key_digests),
    )


def cors_middleware(settings: ServiceSettings, expose_headers: Sequence[str] = ()) -> Middleware | None:
    """CORS for the configured origins; None (no CORS header at all) without any. `expose_headers`: a
    service's own answer headers that a page may read, besides every service's."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "X-Request-ID",
            "X-Request-Timeout-Ms",
            "traceparent",
            "tracestate",
        ],
        expose_headers=["X-Request-ID", "Retry-After", "Server-Timing", "traceresponse", *expose_headers],
    )


def matched_key(given: bytes, key_digests: tuple[bytes, ...]) -> int | None:
    """The index of the key `given` is, or None. Constant time: the digest makes every comparison the same
    length, and every key is compared, so timing tells neither which key (or how much of one) matched."""
    digest = hashlib.sha256(given).digest()
    matched = None
    for index, key_digest in enumerate(key_digests):
        if hmac.compare_digest(digest, key_digest):
            matched = index
    return matched


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return (token.strip() or None) if scheme.lower() == b"bearer" else None
    return None


class BearerAuthMiddleware:
    """A request bearing one of the keys passes, and a named key's name is left to the routes as
    `request.state.api_key_name`. Any other request passes as anonymous unless `required`; then it gets 401
    (OpenAI's `authentication_error`, `WWW-Authenticate: Bearer`). Paths in `open_paths` pass without a key.
    Runs before any body is read."""

    def __init__(
        self,
        app: ASGIApp,
        key_digests: tuple[bytes, ...],
        key_names: tuple[str | None, ...],
        open_paths: frozenset[str],
        *,
        required: bool = True,
    ) -> None:
        self.app = app
        self.key_digests = key_digests
        self.key_names = key_names
        self.open_paths = open_paths
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        matched = None if token is None else matched_key(token, self.key_digests)
        if matched is not None:
            scope.setdefault("state", {})["api_key_name"] = self.key_names[matched]
            await self.app(scope, receive, send)
            return
        if not self.required:
            await self.app(scope, receive, send)
            return
        error = (
            UnauthorizedError("no API key: send it as `Authorization: Bearer <key>`", code="missing_api_key")
            if token is None
            else UnauthorizedError("the API key is not valid", code="invalid_api_key")
        )
        await JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)(scope, receive, send)
