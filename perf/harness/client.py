"""The load client's HTTP: a minimal HTTP/1.1 keep-alive client over asyncio streams sending pre-encoded
requests. On 2 cores the load client shares the CPU with the servers, and httpx costs several times more
CPU per request, which the servers would lose and a benchmark would wrongly charge to them."""

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Request number -> the complete request bytes to send for it.
MakeRequest = Callable[[int], bytes]
IDLE_EXPIRY_S = 4.0  # a connection idle this long is not reused: uvicorn closes it after 5 s of keep-alive


def http_request(
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return head.encode("ascii") + b"\r\n" + body


class Connection:
    """One keep-alive connection; reopened after the server closes it, an error, or a long idle spell (a
    closed loop's connections wait for every opening request: the server may close them meanwhile)."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._used_at = 0.0

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Sends `request`, reads the whole response, returns its status code and body."""
        if time.monotonic() - self._used_at >= IDLE_EXPIRY_S:
            self.close()
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            headers = head.lower()
            length_at = headers.find(b"\r\ncontent-length:")
            if length_at < 0:
                raise ConnectionError("response without Content-Length")
            length = int(headers[length_at + 17 : headers.index(b"\r\n", length_at + 2)])
            body = await reader.readexactly(length)
            if b"\r\nconnection: close" in headers:
                self.close()
            self._used_at = time.monotonic()
            return int(head[9:12]), body
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass(frozen=True)
class Hop:
    """One HTTP exchange of a request: the port it goes to, and its bytes, built from the request's
    number and the previous hop's answer (b"" for the first hop)."""

    port: int
    build: Callable[[int, bytes], bytes]


Route = tuple[Hop, ...]  # a request's hops, in order: one for a server, more for a client-chained pipeline


def one_hop(port: int, make: MakeRequest) -> Route:
    return (Hop(port, lambda index, _: make(index)),)


class Lane:
    """A keep-alive connection for each hop of a route: what one client uses for one request at a time."""

    def __init__(self, host: str, route: Route) -> None:
        self._hops = [(Connection(host, hop.port), hop.build) for hop in route]

    async def send(self, index: int) -> tuple[int, bytes]:
        """Request `index` through every hop; the first non-200 answer ends it."""
        status, body = 200, b""
        for connection, build in self._hops:
            status, body = await connection.exchange(build(index, body))
            if status != 200:
                break
        return status, body

    def close(self) -> None:
        for connection, _ in self._hops:
            connection.close()


HEALTHZ = http_request("GET", "/healthz")
