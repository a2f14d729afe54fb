"""Logging set-up, done once in each service's __main__; every line carries the request id, and the trace
and span ids (`-` outside a trace)."""

import json
import logging
import sys
from contextvars import ContextVar
from typing import ClassVar

from service_common import tracing

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id, record.span_id = tracing.ids()
        return True


class _JsonFormatter(logging.Formatter):
    _SKIP: ClassVar[set[str]] = set(vars(logging.makeLogRecord({}))) | {"message", "request_id", "trace_id", "span_id"}

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
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


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        _JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # httpx logs every request at info; our access log already has one line per request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
