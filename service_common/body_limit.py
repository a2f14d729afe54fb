"""Reads a request's body for the app, bounded in size and in time, once the caller has been let in."""

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_common.errors import PayloadTooLargeError, RequestTimeoutError
from service_common.middleware import send_error


class BodyLimitMiddleware:
    """Reads the whole body before the app runs, and replays it: past `max_body_bytes` it is 413 (at once when
    Content-Length says so), and a body not all in after `read_timeout_s` is 408, so a slow client holds
    no handler. Both close the connection: the rest of the body is not read. A client that leaves before
    its body is in gets no answer, and the app never runs."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await send_error(send, self._too_large(), close=True)
            return
        try:
            async with asyncio.timeout(self.read_timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            slow = RequestTimeoutError(
                f"the request body was not all received within {self.read_timeout_s:g} s",
                param="body",
                code="body_timeout",
            )
            await send_error(send, slow, close=True)
            return
        if isinstance(body, PayloadTooLargeError):
            await send_error(send, body, close=True)
        elif body is not None:
            await self.app(scope, _replaying(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | PayloadTooLargeError | None:
        """The body; an error when it is too large; None when the client left first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return self._too_large()
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body exceeds {self.max_body_bytes} bytes", param="body", code="body_too_large"
        )


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the body in one message, then the server's own (for a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
