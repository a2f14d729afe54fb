"""The harness's own helper servers, each a bare asyncio server on loopback:

- `null`: answers every request at once (GET: 200, anything else: 429), reading its body first. What the
  load client drives against it is its headroom; its CPU per request is the floor any asyncio server
  pays on this machine.
- `otlp`: an OTLP/HTTP trace sink. Every POST is answered 200 with an empty body (for /v1/traces, a valid
  ExportTraceServiceResponse), the exports' spans and traces counted; a GET answers the counts as JSON.

- `exec COMMAND...`: no server of its own: the process becomes COMMAND (another project's server, such as
  Infinity from its own venv), so that a stack starts it like ours and meters it by the same PID.

`python -m perf.harness.servers null|otlp PORT` or `python -m perf.harness.servers exec COMMAND...`"""

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stack.procs import LOOPBACK

NULL_REFUSAL = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
NULL_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
SINK_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"

# A request's head and body -> the whole answer to write.
Answer = Callable[[bytes, bytes], bytes]


@dataclass
class Received:
    export_requests: int = 0  # POST /v1/traces
    other_requests: int = 0  # POSTs elsewhere (another signal's exports), answered alike
    undecoded: int = 0
    body_bytes: int = 0
    spans: int = 0
    spans_by_name: Counter[str] = field(default_factory=Counter)  # "<service.name>: <span name>"
    trace_ids: set[bytes] = field(default_factory=set)

    def count(self, body: bytes) -> None:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.export_requests += 1
        self.body_bytes += len(body)
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            self.undecoded += 1
            return
        for resource in request.resource_spans:
            names = [a.value.string_value for a in resource.resource.attributes if a.key == "service.name"]
            for scope in resource.scope_spans:
                self.spans += len(scope.spans)
                self.spans_by_name.update(f"{names[0] if names else '-'}: {span.name}" for span in scope.spans)
                self.trace_ids.update(span.trace_id for span in scope.spans)

    def figures(self) -> dict[str, Any]:
        return {
            "export_requests": self.export_requests,
            "other_requests": self.other_requests,
            "undecoded": self.undecoded,
            "bytes": self.body_bytes,
            "spans": self.spans,
            "traces": len(self.trace_ids),
            "spans_by_name": dict(self.spans_by_name.most_common()),
        }

    def answer(self, head: bytes, body: bytes) -> bytes:
        if head.startswith(b"POST /v1/traces "):
            self.count(body)
            return SINK_OK
        if head.startswith(b"POST "):
            self.other_requests += 1
            return SINK_OK
        counts = orjson.dumps(self.figures())
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(counts), counts)


def null_answer(head: bytes, _: bytes) -> bytes:
    return NULL_OK if head.startswith(b"GET ") else NULL_REFUSAL


async def serve(port: int, answer: Answer) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)]) if at >= 0 else 0
                writer.write(answer(head, await reader.readexactly(length)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    if sys.argv[1] == "exec":
        os.execvp(sys.argv[2], sys.argv[2:])
    kind, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(serve(port, null_answer if kind == "null" else Received().answer))


if __name__ == "__main__":
    main()
