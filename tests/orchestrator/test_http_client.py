"""The hops' HTTP/1.1 client against a scripted server: connections kept and reused, every way an answer may
be framed, connections the server ended never reused, the connection bound, and the failures it reports."""

import asyncio

import pytest

from orchestrator.clients.http_client import ConnectError, PooledHttpClient, TransportError
from stack.procs import LOOPBACK, free_port
from tests.http_stub import CLOSE, RESET, Received, Reply, serving

EXPIRY_S = 4.0


def client(url: str, *, max_connections: int = 8, expiry_s: float = EXPIRY_S) -> PooledHttpClient:
    return PooledHttpClient(
        url, max_connections=max_connections, keepalive_expiry_s=expiry_s, headers={"Authorization": "Bearer k"}
    )


def echo(request: Received) -> Reply:
    return Reply(200, request.content or request.path.encode(), {"X-Seen": request.headers["authorization"]})


async def test_calls_share_one_kept_connection_and_carry_the_fixed_headers() -> None:
    async with serving(echo) as server, client(server.url + "/prefix/") as http:
        for n in range(5):
            response = await http.request("POST", "/v1/x", headers={"X-N": str(n)}, content=b"body %d" % n)
            assert (response.status_code, response.content) == (200, b"body %d" % n)
            assert response.headers["x-seen"] == "Bearer k"
        assert (await http.request("GET", "/v1/y")).text == "/prefix/v1/y"
    assert server.connections == 1
    assert [r.path for r in server.received] == ["/prefix/v1/x"] * 5 + ["/prefix/v1/y"]
    first = server.received[0]
    assert first.headers["host"] == server.url.removeprefix("http://") and first.headers["x-n"] == "0"
    assert server.received[-1].headers.get("content-length") is None  # a GET without a body says nothing


@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
async def test_every_framing_of_an_answer_is_read_whole(framing: str) -> None:
    content = bytes(range(256)) * 300
    async with serving(lambda _: Reply(200, content, framing=framing)) as server, client(server.url) as http:
        for _ in range(2):
            assert (await http.request("GET", "/")).content == content
    assert server.connections == (2 if framing == "eof" else 1)  # an answer up to the end ends the connection


async def test_an_answer_that_says_close_is_not_reused() -> None:
    async with (
        serving(lambda _: Reply(503, b"{}", {"Connection": "close", "Retry-After": "2"})) as server,
        client(server.url) as http,
    ):
        for _ in range(2):
            response = await http.request("GET", "/")
            assert (response.status_code, response.headers["retry-after"]) == (503, "2")
    assert server.connections == 2


async def test_a_connection_idle_past_the_expiry_or_closed_by_the_server_is_not_reused() -> None:
    async with serving(echo) as server, client(server.url, expiry_s=0.2) as http:
        await http.request("GET", "/")
        await asyncio.sleep(0.3)
        await http.request("GET", "/")
        assert server.connections == 2
    closing = iter([Reply(200, close_after=True), Reply(200, b"again")])
    async with serving(lambda _: next(closing)) as server, client(server.url) as http:
        await http.request("GET", "/")
        await asyncio.sleep(0.05)  # the server's end of the connection arrives while it is idle
        assert (await http.request("GET", "/")).content == b"again"
    assert server.connections == 2


async def test_at_most_max_connections_are_open_and_other_calls_wait_for_one() -> None:
    async with serving(echo) as server, client(server.url, max_connections=2) as http:
        answers = await asyncio.gather(*(http.request("GET", f"/{n}") for n in range(10)))
    assert [a.text for a in answers] == [f"/{n}" for n in range(10)]
    assert server.connections == 2


@pytest.mark.parametrize("ending", [RESET, CLOSE])
async def test_a_connection_ended_without_an_answer_is_a_transport_error_and_dropped(ending: str) -> None:
    endings = iter([ending, Reply(200, b"ok")])
    async with serving(lambda _: next(endings)) as server, client(server.url) as http:
        with pytest.raises(TransportError):
            await http.request("POST", "/", content=b"x")
        assert (await http.request("POST", "/", content=b"x")).content == b"ok"
    assert server.connections == 2


async def test_nothing_listening_is_a_connect_error() -> None:
    async with client(f"http://{LOOPBACK}:{free_port()}") as http:
        with pytest.raises(ConnectError, match="cannot connect"):
            await http.request("GET", "/")


async def test_an_answer_that_is_not_http_is_a_transport_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, LOOPBACK, 0)
    url = f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}"
    try:
        async with client(url) as http:
            with pytest.raises(TransportError):
                await http.request("GET", "/")
    finally:
        server.close()
