"""Hostile bodies against the real embedding service and orchestrator: each gets a 4xx naming the field (or a 200
where the input is odd but valid), never a 5xx or a hang; the process stays up and answers the next good request,
and its memory stays bounded."""

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Pipeline
from tests.security.hostile import CLIENT_TIMEOUT_S, MAX_RSS_GROWTH_MB, as_json, nested, post, rss_mb
from tests.servers import Server

pytestmark = pytest.mark.slow

TEN_MB = 10 * 1024 * 1024
# (case, body, content type, status, `param` of the error; None for a 200)
Case = tuple[str, bytes, str, int, str | None]


def common_cases(field: str) -> list[Case]:
    """What every service takes the same way; `field` is the texts field (`input`, `inputs`, `texts`).
    OpenAI's `input` also takes token ids: there, ints are ids and a list in a list is one text's ids."""
    j = "application/json"
    ids = field == "input"
    return [
        ("invalid-utf8", b'{"' + field.encode() + b'": ["caf\xe9"]}', j, 400, "body"),
        ("invalid-utf8-key", b'{"\xff\xfe": ["x"]}', j, 400, "body"),
        ("lone-surrogate", b'{"' + field.encode() + b'": ["a\\ud800b"]}', j, 400, f"{field}[0]"),
        ("nested-100k-field", b'{"' + field.encode() + b'": ' + nested(100_000) + b"}", j, 400, "body"),
        ("nested-100k-root", nested(100_000), j, 400, "body"),
        ("nested-100k-unclosed", b"[" * 100_000, j, 400, "body"),
        ("objects-nested-10k", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, j, 400, "body"),
        ("ten-mb", b'{"' + field.encode() + b'": ["' + b"a" * TEN_MB + b'"]}', j, 413, "body"),
        ("texts-100k", as_json({field: ["a"] * 100_000}), j, 400, field),
        ("empty-list", as_json({field: []}), j, 400, field),
        ("empty-text", as_json({field: ["ok", ""]}), j, 400, f"{field}[1]"),
        ("over-long-text", as_json({field: ["x" * 20_001]}), j, 400, f"{field}[0]"),
        ("long-single-token", as_json({field: ["x" * 20_000]}), j, 200, None),
        ("long-unicode-token", as_json({field: ["\U0001f600" * 20_000]}), j, 200, None),
        ("control-and-nul", as_json({field: ["a\x00b", "\x01\x1b[31m\x7f", "\u202e\u2028\ufeff\ufffe"]}), j, 200, None),
        ("whitespace-only", as_json({field: [" ", "\t\n\r", "\u3000\u00a0"]}), j, 200, None),
        ("number", as_json({field: 123}), j, 400, field),
        ("numbers", as_json({field: [1, 2]}), j, *((200, None) if ids else (400, f"{field}[0]"))),
        ("null", as_json({field: None}), j, 400, field),
        ("object", as_json({field: {"a": "b"}}), j, 400, field),
        ("nested-list", as_json({field: [["a"]]}), j, 400, f"{field}[0][0]" if ids else f"{field}[0]"),
        ("bool", as_json({field: True}), j, 400, field),
        # OpenAI's route ignores fields it does not know, as OpenAI-compatible servers do; ours refuse them.
        ("unknown-field", as_json({field: ["a"], "extra": 1}), j, *((200, None) if ids else (400, "extra"))),
        ("root-list", as_json(["a"]), j, 400, "body"),
        ("root-string", as_json("a"), j, 400, "body"),
        ("root-null", b"null", j, 400, "body"),
        ("empty-body", b"", j, 400, "body"),
        ("nan-literal", b'{"' + field.encode() + b'": NaN}', j, 400, field),
        ("huge-integer", b'{"' + field.encode() + b'": ' + b"9" * 5000 + b"}", j, 400, "body"),
        ("plain-text", b"hello", "text/plain", 400, "body"),
        ("form", b"a=b", "application/x-www-form-urlencoded", 400, "body"),
    ]


def token_id_cases() -> list[Case]:
    """OpenAI's token-id forms of `input`, broken every way: a 400 naming the item, never a 5xx."""
    j = "application/json"
    return [
        ("ids-negative", as_json({"input": [[5, -5]]}), j, 400, "input[0][1]"),
        ("ids-huge", as_json({"input": [[2**70]]}), j, 400, "input[0][0]"),
        ("ids-huge-flat", as_json({"input": [9 * 10**400]}), j, 400, "input[0]"),
        ("ids-foreign", as_json({"input": [[101, 100257, 102]]}), j, 400, "input[0][1]"),
        ("ids-float", as_json({"input": [1.5, 2]}), j, 400, "input[0]"),
        ("ids-float-nested", as_json({"input": [[2, 3.0]]}), j, 400, "input[0][1]"),
        ("ids-bool", as_json({"input": [[True]]}), j, 400, "input[0][0]"),
        ("ids-bool-flat", as_json({"input": [False, 2]}), j, 400, "input[0]"),
        ("ids-then-string", as_json({"input": [1, "a"]}), j, 400, "input[1]"),
        ("string-then-id", as_json({"input": ["a", 1]}), j, 400, "input[1]"),
        ("ids-then-int", as_json({"input": [[1], 2]}), j, 400, "input[1]"),
        ("ids-null", as_json({"input": [[1, None]]}), j, 400, "input[0][1]"),
        ("ids-empty", as_json({"input": [[]]}), j, 400, "input[0]"),
        ("ids-one-empty", as_json({"input": [[1000], []]}), j, 400, "input[1]"),
        ("ids-nested-deeper", as_json({"input": [[[1000]]]}), j, 400, "input[0][0]"),
        ("ids-over-long", as_json({"input": [[1000] * 300], "truncate": False}), j, 400, "input[0]"),
        ("ids-over-limit", as_json({"input": [[1000] * 20_001]}), j, 400, "input[0]"),
        ("ids-2049-arrays", as_json({"input": [[1000]] * 2049}), j, 400, "input"),
        # 2,048 arrays of 10,000 ids is ~100 MB of JSON: the body limit refuses it before it is read.
        ("ids-2048x10000", as_json({"input": [[1000] * 10_000] * 2048}), j, 413, "body"),
        ("ids-long-truncated", as_json({"input": [[1000] * 10_000]}), j, 200, None),
    ]


EMBEDDINGS_CASES: list[Case] = [
    *common_cases("input"),
    ("model-number", as_json({"input": "a", "model": 5}), "application/json", 400, "model"),
    ("model-huge", as_json({"input": "a", "model": "m" * 100_000}), "application/json", 404, "model"),
    ("encoding-hex", as_json({"input": "a", "encoding_format": "hex"}), "application/json", 400, "encoding_format"),
    ("dimensions-string", as_json({"input": "a", "dimensions": "x"}), "application/json", 400, "dimensions"),
    ("dimensions-negative", as_json({"input": "a", "dimensions": -1}), "application/json", 400, "dimensions"),
    ("dimensions-inf", b'{"input": "a", "dimensions": Infinity}', "application/json", 400, "dimensions"),
    ("dimensions-float", as_json({"input": "a", "dimensions": 1e300}), "application/json", 400, "dimensions"),
    ("truncate-string", as_json({"input": "a", "truncate": "maybe"}), "application/json", 400, "truncate"),
    ("user-long", as_json({"input": "a", "user": "u" * 1000}), "application/json", 400, "user"),
    *token_id_cases(),
]
EMBED_CASES: list[Case] = [
    *common_cases("inputs"),
    ("pooling-unknown", as_json({"inputs": "a", "pooling": "sum"}), "application/json", 400, "pooling"),
    ("normalize-list", as_json({"inputs": "a", "normalize": [True]}), "application/json", 400, "normalize"),
    ("token-level-long", as_json({"inputs": ["y" * 20_000] * 4, "pooling": "none"}), "application/json", 200, None),
]
CLASSIFY_CASES: list[Case] = [
    *common_cases("texts"),
    ("text-and-texts", as_json({"text": "a", "texts": ["b"]}), "application/json", 400, "texts"),
    ("neither", as_json({}), "application/json", 400, "texts"),
    ("text-list", as_json({"text": ["a"]}), "application/json", 400, "text"),
    ("text-lone-surrogate", b'{"text": "\\udfff"}', "application/json", 400, "text"),
    ("text-empty", as_json({"text": ""}), "application/json", 400, "text"),
    ("text-nul", as_json({"text": "\x00"}), "application/json", 200, None),
]


def check_corpus(server: Server, path: str, good: bytes, cases: list[Case]) -> None:
    url = server.url + path
    for _ in range(3):  # warm-up: the allocator's and the model's first use are not growth
        assert post(url, good).status_code == 200
    before = rss_mb(server.process.pid)
    failures = []
    for name, body, content_type, status, param in cases:
        response = post(url, body, content_type)
        error = response.json().get("error", {}) if response.status_code != 200 else {}
        if (response.status_code, error.get("param")) != (status, param):
            failures.append(f"{name}: {response.status_code} {response.text[:300]}")
        assert server.process.poll() is None, f"{name} killed the server"
        assert post(url, good).status_code == 200, f"the server no longer answers after {name}"
    growth = rss_mb(server.process.pid) - before
    assert not failures, "\n".join(failures)
    assert growth < MAX_RSS_GROWTH_MB, f"RSS grew {growth:.0f} MB over the corpus"


@pytest.mark.parametrize(
    ("path", "good", "cases"),
    [
        ("/v1/embeddings", as_json({"input": ["good text"]}), EMBEDDINGS_CASES),
        ("/embed", as_json({"inputs": ["good text"]}), EMBED_CASES),
    ],
    ids=["v1-embeddings", "embed"],
)
def test_embedding_service_survives_hostile_bodies(
    embedding_server: Server, path: str, good: bytes, cases: list[Case]
) -> None:
    check_corpus(embedding_server, path, good, cases)


def test_orchestrator_survives_hostile_bodies(pipeline: Pipeline) -> None:
    check_corpus(pipeline.orchestrator, "/classify", as_json({"texts": ["good text"]}), CLASSIFY_CASES)


def chunks(total: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked), so the limit is enforced while it streams in."""
    yield b'{"input": ["'
    for _ in range(total // 65536):
        yield b"a" * 65536
    yield b'"]}'


@pytest.mark.parametrize("service", ["embedding", "orchestrator"])
def test_a_chunked_ten_mb_body_is_refused_while_it_streams(pipeline: Pipeline, service: str) -> None:
    server = pipeline.embedding if service == "embedding" else pipeline.orchestrator
    before = rss_mb(server.process.pid)
    try:
        response = httpx.post(
            server.url + ("/v1/embeddings" if service == "embedding" else "/classify"),
            content=chunks(TEN_MB),
            headers={"Content-Type": "application/json"},
            timeout=CLIENT_TIMEOUT_S,
        )
        assert response.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered 413 and closed while we were still sending: refused either way
    assert server.process.poll() is None
    assert rss_mb(server.process.pid) - before < MAX_RSS_GROWTH_MB
    assert httpx.get(server.url + "/healthz", timeout=CLIENT_TIMEOUT_S).status_code == 200
