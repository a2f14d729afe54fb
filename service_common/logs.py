"""Logging set-up, done once in each service's __main__: JSON lines for machines (containers, files), plain
lines for a person at a terminal (`make run`); every line carries the request id, and the trace and span ids
(`-` outside a trace). Also keeps TensorFlow's C++ start-up banner off the terminal."""

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

from service_common import tracing

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# What TensorFlow's C++ side prints on stderr while it loads, whatever TF_CPP_MIN_LOG_LEVEL says (abseil
# writes everything logged before its set-up): the oneDNN notice and "Could not find cuda drivers".
_TF_BANNER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I0000 \S+ +\d+ (port\.cc|cudart_stub\.cc|cuda_executor\.cc|cpu_feature_guard\.cc):\d+\] .*)$"
)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id, record.span_id = tracing.ids()
        return True


class _JsonFormatter(logging.Formatter):
    # uvicorn adds `color_message` to its own lines: the message again, with terminal colour codes.
    _SKIP: ClassVar[set[str]] = set(vars(logging.makeLogRecord({}))) | {
        "message",
        "request_id",
        "trace_id",
        "span_id",
        "color_message",
    }

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Second resolution, formatted once a second: the access log writes a line per request."""
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(second))
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "trace_id": getattr(record, "trace_id", "-"),
            "span_id": getattr(record, "span_id", "-"),
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    """`12:04:31.207 INFO  orchestrator.heads  message  [request id]`: the request id only inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s  %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", "-")
        return line if request_id == "-" else f"{line}  [{request_id}]"


def configure_logging(level: str, as_json: bool | None) -> None:
    """`as_json` None: JSON unless stderr is a terminal."""
    if as_json is None:
        as_json = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(_JsonFormatter() if as_json else _TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Nothing we write names a thread or a process: a record need not look them up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # httpx logs every request at info; our access log already has one line per request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


@contextmanager
def tensorflow_banner_dropped() -> Iterator[None]:
    """Import TensorFlow inside: what its C++ side writes to stderr meanwhile is held back, and then
    written out but for the start-up banner (a failed import's own messages still show)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True) if not _TF_BANNER.match(line.rstrip())]
            if kept:
                os.write(2, b"".join(kept))
