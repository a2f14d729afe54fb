"""PooledHttpClient: keep-alive HTTP/1.1 connections to one server over asyncio streams.

The hops need little of HTTP: a request written in one piece, an answer read by its Content-Length (or
its chunks), the connection kept for the next call. httpx's per-call machinery (URL model, auth and
redirect layers, anyio, h11 events, two writes a request) cost the orchestrator about 0.7 ms of CPU per
call, twenty times this (issue 24)."""

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers


class ConnectError(Exception):
    """The server could not be reached: nothing was sent, so the call may be made again."""


class TransportError(Exception):
    """The connection failed after the request went out: reset, closed without an answer, or an answer
    that is not HTTP/1.x."""


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def header(self, name: str, default: str = "") -> str:
        """A header's value, by its name in any case."""
        return self.headers.get(name.lower(), default)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def reusable(self, now: float, expiry_s: float) -> bool:
        """Idle for less than `expiry_s`, and not closed by the server meanwhile."""
        return now - self.idle_since < expiry_s and not self.reader.at_eof() and not self.writer.is_closing()

    async def exchange(self, message: bytes) -> tuple[HttpResponse, bool]:
        """The answer to `message`, and whether the connection may carry another request."""
        self.writer.write(message)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status = int(rest[:3])
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"malformed header line {line[:40]!r}")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = await self._chunks()
        elif "content-length" in headers:
            content = await self.reader.readexactly(int(headers["content-length"]))
        elif status in (204, 304) or status < 200:
            content = b""
        else:  # delimited by the end of the connection
            content, keep = await self.reader.read(), False
        return HttpResponse(status, headers, content), keep

    async def _chunks(self) -> bytes:
        chunks = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


class PooledHttpClient:
    """Requests to the server at `url` (`http://` or `https://`, and an optional path prefix), on up to
    `max_connections` connections at once (more calls wait for one); an idle connection is dropped after
    `keepalive_expiry_s` (keep it below the server's own idle timeout). `headers` go on every request."""

    def __init__(
        self, url: str, *, max_connections: int, keepalive_expiry_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        every = {"Host": parts.netloc, **(headers or {})}
        self._every = "".join(f"{name}: {value}\r\n" for name, value in every.items()).encode("latin-1")
        self._expiry_s = keepalive_expiry_s
        self._idle: list[_Connection] = []  # the most recently used last
        self._slots = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, content: bytes = b""
    ) -> HttpResponse:
        """ConnectError when the server cannot be reached, TransportError when the exchange fails; no
        timeout of its own (the caller bounds the call)."""
        lines = [f"{method} {self._prefix}{path} HTTP/1.1\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in (headers or {}).items()]
        if content or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(content)}\r\n")
        message = "".join(lines).encode("latin-1") + self._every + b"\r\n" + content
        async with self._slots:
            connection = self._reuse() or await self._connect()
            try:
                response, keep = await connection.exchange(message)
            except BaseException as exc:  # a connection an answer was not read whole from is never reused
                connection.close()
                if isinstance(exc, OSError | EOFError | ValueError | asyncio.LimitOverrunError):
                    raise TransportError(_reason(exc)) from None
                raise
            if keep:
                connection.idle_since = asyncio.get_running_loop().time()
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _reuse(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(now, self._expiry_s):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl, limit=MAX_HEAD_BYTES)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {_reason(exc)}") from None
        return _Connection(reader, writer)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection without a whole answer"
    if isinstance(exc, asyncio.LimitOverrunError):
        return f"the answer's headers exceed {MAX_HEAD_BYTES} bytes"
    return str(exc) or type(exc).__name__
