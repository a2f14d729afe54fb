"""Log lines: JSON for machines, plain text for a person at a terminal, each with the request id; and
TensorFlow's C++ start-up banner kept off stderr while everything else written there still shows."""

import io
import json
import logging
import os
import time
from collections.abc import Iterator

import pytest

from service_common.logs import configure_logging, request_id_var, tensorflow_banner_dropped
from tests.conftest import Pipeline


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def logged(stream: io.StringIO, as_json: bool | None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("info", as_json)
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("tests.logs").info("POST %s %d", "/classify", 200, extra={"status": 200})
    finally:
        request_id_var.reset(token)
    return stream.getvalue()


@pytest.mark.usefixtures("restored_logging")
def test_a_terminal_gets_plain_lines_and_anything_else_json(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = logged(Terminal(), None, monkeypatch)
    assert "INFO" in plain and "POST /classify 200" in plain and plain.rstrip().endswith("[req-7]")
    line = json.loads(logged(io.StringIO(), None, monkeypatch))
    assert (line["msg"], line["request_id"], line["status"], line["trace_id"]) == (
        "POST /classify 200",
        "req-7",
        200,
        "-",
    )
    assert json.loads(logged(Terminal(), True, monkeypatch))["request_id"] == "req-7"  # asked for: JSON anyway


def test_the_tensorflow_banner_is_dropped_and_other_lines_kept(capfd: pytest.CaptureFixture[str]) -> None:
    banner = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796582597.585661   29347 port.cc:153] oneDNN custom operations are on. You may see ...\n"
        b"I0000 00:00:1796582597.603915   29347 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
    )
    with tensorflow_banner_dropped():
        os.write(2, banner + b"E0000 00:00:1796582597.7 29347 loader.cc:9] a real failure\n")
    assert capfd.readouterr().err == "E0000 00:00:1796582597.7 29347 loader.cc:9] a real failure\n"


@pytest.mark.slow
def test_the_probes_of_a_running_pipeline_leave_no_line_at_info(pipeline: Pipeline) -> None:
    """Every second the orchestrator reads the embedding service's /readyz and /v1/models: a line each at
    info would bury the requests in the log."""
    deadline = time.monotonic() + 10
    while pipeline.embedding.metric("http_request_duration_seconds_count") < 4:  # probes have been answered
        assert time.monotonic() < deadline
        time.sleep(0.2)
    lines = [json.loads(line) for line in pipeline.embedding.log.read_text().splitlines() if line.startswith("{")]
    probes = [line["msg"] for line in lines if line["msg"].startswith(("GET /readyz 200", "GET /v1/models 200"))]
    assert probes == []
