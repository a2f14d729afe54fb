"""A scripted HTTP/1.1 server on loopback, for the orchestrator's HTTP clients: every request is recorded and
answered by a function of it, with a Reply, or by ending the connection without one (CLOSE, RESET)."""

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from stack.procs import LOOPBACK

CLOSE = "close"  # the connection ends, cleanly, without an answer
RESET = "reset"  # the connection is reset, without an answer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    content: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    framing: str = "length"  # "length" (Content-Length), "chunked", or "eof" (the connection's end)
    close_after: bool = False  # the server then ends the connection without saying so (an idle timeout's way)


Answer = Callable[[Received], Reply | str]


class Stub:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self.connections = 0  # accepted so far
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (request := await _read(reader)) is not None:
                self.received.append(request)
                reply = self.answer(request)
                if isinstance(reply, str):
                    if reply == RESET:
                        writer.get_extra_info("socket").setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    return
                writer.write(_encode(reply))
                await writer.drain()
                if reply.close_after or reply.framing == "eof" or reply.headers.get("Connection") == "close":
                    return
        finally:
            writer.close()


async def _read(reader: asyncio.StreamReader) -> Received | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    content = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method, path, headers, content)


def _encode(reply: Reply) -> bytes:
    headers = dict(reply.headers)
    body = reply.content
    if reply.framing == "length":
        headers["Content-Length"] = str(len(body))
    elif reply.framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        half = len(body) // 2
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]) if part)
        body += b"0\r\n\r\n"
    head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[Stub]:
    """The stub on a free loopback port (its `url`), until the block ends."""
    stub = Stub(answer)
    server = await asyncio.start_server(stub.serve, LOOPBACK, 0)
    stub.url = f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
    try:
        yield stub
    finally:
        server.close()
        await server.wait_closed()
