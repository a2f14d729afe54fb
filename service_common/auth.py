"""Who may call a service: optional bearer-key auth on every route but the ops ones, and CORS, which is off
unless origins are configured. Both are added by `service_app`, so every service gets them the same way."""

import hashlib
import hmac

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service_common.errors import UnauthorizedError
from service_common.ops import OPS_PATHS
from service_common.settings import ServiceSettings


def add_access_control(app: FastAPI, settings: ServiceSettings) -> None:
    """Call before adding the request-context middleware, so that refusals still get a request id and a log line.
    CORS sits outside auth: preflights carry no key, and a browser can only read a 401 that has CORS headers."""
    if settings.api_key_digests:
        open_paths = frozenset() if settings.auth_ops_routes else OPS_PATHS
        app.add_middleware(
            BearerAuthMiddleware,
            key_digests=settings.api_key_digests,
            key_names=settings.api_key_names,
            open_paths=open_paths,
        )
    if origins := settings.cors_origin_list:
        app.add_middleware(
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
            expose_headers=["X-Request-ID", "Retry-After", "Server-Timing", "traceresponse"],
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
    """Answers 401 (OpenAI's `authentication_error`, `WWW-Authenticate: Bearer`) unless the request carries one
    of the keys; paths in `open_paths` pass without one. Runs before any route reads the body. A named key's
    name is left to the routes as `request.state.api_key_name`."""

    def __init__(
        self,
        app: ASGIApp,
        key_digests: tuple[bytes, ...],
        key_names: tuple[str | None, ...],
        open_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.key_digests = key_digests
        self.key_names = key_names
        self.open_paths = open_paths

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
        error = (
            UnauthorizedError("no API key: send it as `Authorization: Bearer <key>`", code="missing_api_key")
            if token is None
            else UnauthorizedError("the API key is not valid", code="invalid_api_key")
        )
        await JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)(scope, receive, send)
