"""The coalescer's rules, in-process over a deterministic stand-in for the two hops (pure logic; the real
hops are exercised end to end in test_classify.py and test_faults.py)."""

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from orchestrator.clients.embedding import Embedded, EmbeddingRefusedError
from orchestrator.coalescer import Coalescer
from orchestrator.limits import CALL_OVERHEAD_BYTES, EmbeddingLimits
from orchestrator.pipeline import Classified, EncoderMovedError
from service_common.deadline import Deadline
from service_common.errors import (
    BadGatewayError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    ServiceError,
    UnavailableError,
)


class Hops:
    """Embeds a text as [len(text)], scores it as [len, -len]; records every call's texts. Refuses the text
    "refused" as the embedding service would (naming it `input[i]`), and a call holding "no merging"
    with another text as a whole. Every head takes encoder "e1" unless `encoders` routes it elsewhere;
    a head in `moves` answers for another encoder than the one it was routed to by the time it is scored.
    A text starting with "long" is over the encoder's max length, and for encoder "e2" only if it also has
    more than 12 characters; encoder "e2" refuses the text "refused by e2"."""

    def __init__(self, delay_s: float = 0.0, limits: EmbeddingLimits | None = None) -> None:
        self.delay_s = delay_s
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: Exception | None = None
        self.endpoints = self  # the pipeline's embedding services, for their limits
        self.limits = limits
        self.scored: list[tuple[str, list[float]]] = []  # every head call: the head and its texts' lengths
        self.failing_heads: set[str] = set()
        self.encoders: dict[str, str] = {}  # head -> the encoder it is routed to (default "e1")
        self.embedded_for: list[str] = []  # every embedding call's encoder
        self.moves: dict[str, list[str]] = {}  # head -> the encoders it answers for, one per score call
        self.failing_encoders: set[str] = set()
        self.routing = asyncio.Event()  # cleared: requests wait while being routed
        self.routing.set()

    def serving(self, encoder: str) -> "Hops":
        return self

    async def route(self, head: str, param: str, deadline: Deadline) -> str:
        await self.routing.wait()
        if head == "unroutable":
            raise BadGatewayError(f"{param}: head {head!r} takes no served encoder", code="encoder_mismatch")
        return self.encoders.get(head, "e1")

    async def embed(self, texts: list[str], deadline: Deadline, *, chunk: bool, encoder: str) -> Embedded:
        self.calls.append(list(texts))
        self.embedded_for.append(encoder)
        if encoder in self.failing_encoders:
            raise OverloadedError(f"the embedding service for {encoder} is overloaded")
        await self.release.wait()
        await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        if "no merging" in texts and len(texts) > 1:
            raise EmbeddingRefusedError("body exceeds 10 bytes", status_code=413, param="body", code="body_too_large")
        for index, text in enumerate(texts):
            if text == "refused" or (text == "refused by e2" and encoder == "e2"):
                param = f"input[{index}]"
                raise EmbeddingRefusedError(f"{param} is refused", status_code=400, param=param, code="refused")
        lengths = np.array([[len(t)] for t in texts], np.float32)
        long = [i for i, t in enumerate(texts) if t.startswith("long") and (encoder != "e2" or len(t) > 12)]
        return Embedded(lengths, encoder, [] if chunk else long, [(i, 2) for i in long] if chunk else [])

    async def score(self, head: str, vectors: np.ndarray, made: Embedded, deadline: Deadline) -> Classified:
        encoder = made.encoder
        self.scored.append((head, vectors[:, 0].tolist()))
        if head in self.failing_heads:
            raise UnavailableError(f"the head {head} is unavailable", code="head_unavailable")
        takes = self.moves[head].pop(0) if self.moves.get(head) else encoder
        if takes != encoder:
            raise EncoderMovedError(head, encoder, takes)
        probabilities = np.concatenate([vectors, -vectors], axis=1)
        return Classified(head, probabilities, ["len", "neg"], 7, encoder)


@dataclass(frozen=True)
class One:
    """A one-head answer, flattened for the assertions."""

    probabilities: np.ndarray
    labels: list[str]
    version: int
    truncated: list[int]
    chunked: list[tuple[int, int]]


async def classify(merged: Coalescer, texts: list[str], deadline: Deadline, field: str, *, chunk: bool = False) -> One:
    answer = await merged.classify(texts, deadline, field, ("h",), chunk=chunk)
    result = answer["h"]
    if isinstance(result, ServiceError):
        raise result
    return One(result.probabilities, result.labels, result.version, result.truncated, result.chunked)


def coalescer(hops: Hops, max_batch_texts: int = 8, max_in_flight: int = 1, max_queue_texts: int = 64) -> Coalescer:
    return Coalescer(
        hops,  # type: ignore[arg-type]
        max_batch_texts=max_batch_texts,
        max_in_flight=max_in_flight,
        max_queue_texts=max_queue_texts,
    )


async def test_a_lone_request_goes_at_once_and_gets_its_own_rows() -> None:
    hops = Hops()
    result = await classify(coalescer(hops), ["ab", "long text"], Deadline(5), "texts")
    assert hops.calls == [["ab", "long text"]]
    assert result.probabilities[:, 0].tolist() == [2, 9]
    assert result.truncated == [1]
    assert (result.labels, result.version) == (["len", "neg"], 7)


async def test_requests_arriving_while_a_call_is_out_share_the_next_one_in_order() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops, max_batch_texts=3)
    first = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(classify(merged, [t], Deadline(5), "text")) for t in ("bb", "long ccc", "dddd", "e")]
    await asyncio.sleep(0.01)
    hops.release.set()
    results = await asyncio.gather(first, *later)
    assert hops.calls == [["a"], ["bb", "long ccc", "dddd"], ["e"]]  # at most 3 texts a call; order kept
    assert [r.probabilities[0, 0] for r in results] == [1, 2, 8, 4, 1]
    assert [r.truncated for r in results] == [[], [], [0], [], []]  # indices are each request's own


async def test_a_refused_text_fails_only_its_own_request() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    good = asyncio.create_task(classify(merged, ["fine", "also fine"], Deadline(5), "texts"))
    bad = asyncio.create_task(classify(merged, ["ok", "refused"], Deadline(5), "texts"))
    hops.release.set()
    await blocker
    assert (await good).probabilities[:, 0].tolist() == [4, 9]
    with pytest.raises(InvalidRequestError) as refused:
        await bad
    assert refused.value.param == "texts[1]"  # its own index, not the merged call's
    assert refused.value.message == "texts[1] is refused"


async def test_a_refused_text_costs_one_more_call_for_the_others_not_one_each() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    sent = [asyncio.create_task(classify(merged, [t], Deadline(5), "text")) for t in ("a", "bb", "refused", "dddd")]
    await asyncio.sleep(0.01)
    hops.release.set()
    await blocker
    results = await asyncio.gather(*sent, return_exceptions=True)
    assert hops.calls == [["x"], ["a", "bb", "refused", "dddd"], ["a", "bb", "dddd"]]
    assert isinstance(results[2], InvalidRequestError) and results[2].param == "text"
    assert results[2].status_code == 400
    assert [r.probabilities[0, 0] for r in results if isinstance(r, One)] == [1, 2, 4]


async def test_a_merged_call_refused_as_a_whole_is_split_and_each_half_answered() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    sent = [asyncio.create_task(classify(merged, [t], Deadline(5), "text")) for t in ("no merging", "b", "c", "d")]
    await asyncio.sleep(0.01)
    hops.release.set()
    await blocker
    results = await asyncio.gather(*sent)
    assert hops.calls[1:] == [["no merging", "b", "c", "d"], ["no merging", "b"], ["no merging"], ["b"], ["c", "d"]]
    assert [r.probabilities[0, 0] for r in results] == [10, 1, 1, 1]


LIMITS = EmbeddingLimits(max_texts_per_request=3, max_chars_per_text=10, max_body_bytes=CALL_OVERHEAD_BYTES + 18)


@pytest.mark.parametrize(
    ("texts", "field", "error", "param"),
    [
        (["a", "b", "c", "d"], "texts", InvalidRequestError, "texts"),
        (["ok", "eleven char"], "texts", InvalidRequestError, "texts[1]"),
        (["eleven char"], "text", InvalidRequestError, "text"),
        (['"' * 9, "x"], "texts", PayloadTooLargeError, "texts"),  # 9 quotes escape to 18 bytes, 26 in all
    ],
)
async def test_the_embedding_services_limits_refuse_a_request_before_it_queues(
    texts: list[str], field: str, error: type[InvalidRequestError], param: str
) -> None:
    hops = Hops(limits=LIMITS)
    with pytest.raises(error) as refused:
        await classify(coalescer(hops), texts, Deadline(5), field)
    assert type(refused.value) is error and refused.value.param == param
    assert hops.calls == []


async def test_merged_calls_stay_within_the_embedding_services_texts_and_bytes() -> None:
    hops = Hops(limits=LIMITS)
    hops.release.clear()
    merged = coalescer(hops, max_batch_texts=8)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    sent = ["a", "b", "c", "d", "0123456789", "e"]  # ["0123456789"] is 14 bytes: alone within 18
    results = [asyncio.create_task(classify(merged, [t], Deadline(5), "text")) for t in sent]
    await asyncio.sleep(0.01)
    hops.release.set()
    await asyncio.gather(blocker, *results)
    assert hops.calls[1:] == [["a", "b", "c"], ["d"], ["0123456789"], ["e"]]


async def test_a_hop_failure_reaches_every_request_of_the_call() -> None:
    hops = Hops()
    hops.fail_with = UnavailableError("the head at x is unavailable", code="head_unavailable")
    merged = coalescer(hops)
    results = await asyncio.gather(*(classify(merged, [t], Deadline(5), "text") for t in "abc"), return_exceptions=True)
    assert all(isinstance(r, UnavailableError) and r.code == "head_unavailable" for r in results)


async def test_a_full_queue_refuses_at_once_and_frees_as_it_drains() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops, max_queue_texts=4)
    running = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(classify(merged, ["b", "c", "d"], Deadline(5), "texts"))
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError):
        await classify(merged, ["e", "f"], Deadline(5), "texts")
    hops.release.set()
    await asyncio.gather(running, queued)
    assert (await classify(merged, ["e", "f"], Deadline(5), "texts")).probabilities.shape == (2, 2)


async def test_a_request_past_its_deadline_gets_504_naming_where_it_waited_and_is_dropped() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    stuck = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError) as in_queue:
        await classify(merged, ["b"], Deadline(0.05), "text")
    assert in_queue.value.code == "queue_timeout"
    hops.release.set()
    await stuck
    assert ["b"] not in hops.calls  # the expired request never cost a hop call
    slow = Hops(delay_s=0.2)
    with pytest.raises(DeadlineExceededError) as embedding:
        await classify(coalescer(slow), ["c"], Deadline(0.05), "text")
    assert embedding.value.code == "embedding_timeout"


async def test_shutdown_lets_queued_and_running_requests_finish_within_the_grace() -> None:
    hops = Hops(delay_s=0.05)
    hops.release.clear()
    merged = coalescer(hops)
    running = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(classify(merged, ["b"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    hops.release.set()
    await merged.aclose(grace_s=5)
    assert (await running).probabilities[0, 0] == 1
    assert (await queued).probabilities[0, 0] == 1


async def test_shutdown_answers_503_to_what_is_unfinished_after_the_grace() -> None:
    hops = Hops()
    hops.release.clear()  # a hop that never answers
    merged = coalescer(hops)
    running = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(classify(merged, ["b"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    await merged.aclose(grace_s=0.05)
    for task in (running, queued):
        with pytest.raises(UnavailableError) as cut_off:
            await task
        assert cut_off.value.code == "shutting_down"
    with pytest.raises(UnavailableError):
        await classify(merged, ["late"], Deadline(5), "text")


async def test_only_requests_that_agree_on_chunking_share_a_call() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    plain = asyncio.create_task(classify(merged, ["long a"], Deadline(5), "text"))
    whole = [asyncio.create_task(classify(merged, [t], Deadline(5), "text", chunk=True)) for t in ("b", "long c")]
    await asyncio.sleep(0.01)
    hops.release.set()
    await blocker
    alone, together = await plain, await asyncio.gather(*whole)
    assert hops.calls[1:] == [["long a"], ["b", "long c"]]
    assert (alone.truncated, alone.chunked) == ([0], [])
    assert [(r.truncated, r.chunked) for r in together] == [([], []), ([], [(0, 2)])]


async def test_requests_for_different_heads_share_one_embedding_call_and_one_call_per_head() -> None:
    hops = Hops()
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    asks = [("a", ("sentiment",)), ("bb", ("sentiment", "topic")), ("ccc", ("topic",))]
    sent = [asyncio.create_task(merged.classify([t], Deadline(5), "text", heads)) for t, heads in asks]
    await asyncio.sleep(0.01)
    hops.release.set()
    await blocker
    answers = await asyncio.gather(*sent)
    assert hops.calls[1:] == [["a", "bb", "ccc"]]  # one embedding call for the three
    assert hops.scored[1:] == [("sentiment", [1, 2]), ("topic", [2, 3])]  # one call per head, its rows only
    assert [list(a) for a in answers] == [["sentiment"], ["sentiment", "topic"], ["topic"]]
    got = [{h: r.probabilities[0, 0] for h, r in a.items() if isinstance(r, Classified)} for a in answers]
    assert got == [{"sentiment": 1}, {"sentiment": 2, "topic": 2}, {"topic": 3}]


async def test_a_failing_head_fails_only_its_own_part_of_each_answer() -> None:
    hops = Hops()
    hops.failing_heads = {"topic"}
    answer = await coalescer(hops).classify(["ab"], Deadline(5), "text", ("sentiment", "topic"))
    assert isinstance(answer["sentiment"], Classified)
    failed = answer["topic"]
    assert isinstance(failed, UnavailableError) and failed.code == "head_unavailable"


async def test_a_fan_out_over_two_encoders_embeds_once_per_encoder_and_feeds_each_head_its_own() -> None:
    hops = Hops()
    hops.encoders = {"sentiment": "e1", "topic": "e2", "intent": "e1"}
    answer = await coalescer(hops).classify(["ab", "c"], Deadline(5), "texts", ("sentiment", "topic", "intent"))
    assert sorted(hops.embedded_for) == ["e1", "e2"]  # one call per encoder, not one per head
    assert {h: r.encoder for h, r in answer.items() if isinstance(r, Classified)} == {
        "sentiment": "e1",
        "topic": "e2",
        "intent": "e1",
    }
    assert list(answer) == ["sentiment", "topic", "intent"]  # the order asked


async def test_requests_for_different_encoders_never_share_an_embedding_call() -> None:
    hops = Hops()
    hops.encoders = {"topic": "e2"}
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    sent = [
        asyncio.create_task(merged.classify([t], Deadline(5), "text", (h,))) for t, h in (("a", "h"), ("b", "topic"))
    ]
    await asyncio.sleep(0.01)
    hops.release.set()
    await asyncio.gather(blocker, *sent)
    assert list(zip(hops.calls[1:], hops.embedded_for[1:], strict=True)) == [(["a"], "e1"), (["b"], "e2")]


async def test_one_encoders_failure_fails_only_its_heads_in_a_fan_out_and_the_request_when_alone() -> None:
    hops = Hops()
    hops.encoders = {"topic": "e2"}
    hops.failing_encoders = {"e2"}
    answer = await coalescer(hops).classify(["ab"], Deadline(5), "text", ("sentiment", "topic"), fan_out=True)
    assert isinstance(answer["sentiment"], Classified)
    assert isinstance(answer["topic"], OverloadedError)
    with pytest.raises(OverloadedError):  # nothing to answer with: the request's own error (a 429 stays one)
        await coalescer(hops).classify(["ab"], Deadline(5), "text", ("topic",))


async def test_a_head_no_encoder_can_feed_fails_its_entry_in_a_fan_out_and_the_request_when_named_alone() -> None:
    hops = Hops()
    answer = await coalescer(hops).classify(["ab"], Deadline(5), "text", ("sentiment", "unroutable"), fan_out=True)
    assert isinstance(answer["sentiment"], Classified)
    refused = answer["unroutable"]
    assert isinstance(refused, BadGatewayError) and refused.code == "encoder_mismatch"
    with pytest.raises(BadGatewayError):
        await coalescer(hops).classify(["ab"], Deadline(5), "text", ("unroutable",))
    assert hops.embedded_for == ["e1"]  # the refused head cost no embedding call


async def test_a_head_that_moved_encoder_while_its_texts_were_embedded_gets_them_embedded_again_once() -> None:
    hops = Hops()
    hops.moves = {"h": ["e2"]}  # its new version (trained on e2) loaded under the call
    result = await classify(coalescer(hops), ["ab", "c"], Deadline(5), "texts")
    assert hops.embedded_for == ["e1", "e2"] and hops.calls == [["ab", "c"], ["ab", "c"]]
    assert result.probabilities[:, 0].tolist() == [2, 1]
    hops = Hops()
    hops.moves = {"h": ["e2", "e3"]}  # it moved again: never fed the vectors of another encoder
    with pytest.raises(BadGatewayError) as moved:
        await classify(coalescer(hops), ["ab"], Deadline(5), "text")
    assert moved.value.code == "encoder_mismatch" and "e3" in moved.value.message and "e2" in moved.value.message


async def test_a_moved_heads_texts_are_embedded_again_job_by_job_with_each_jobs_own_errors_and_long_texts() -> None:
    hops = Hops()
    hops.moves = {"h": ["e1", "e2"]}  # the blocker's batch scored before the move, the next one after it
    hops.release.clear()
    merged = coalescer(hops)
    blocker = asyncio.create_task(classify(merged, ["x"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    sent = [
        asyncio.create_task(classify(merged, texts, Deadline(5), "texts"))
        for texts in (["long ab"], ["ok", "refused by e2"], ["long text here"])
    ]
    await asyncio.sleep(0.01)
    hops.release.set()
    await blocker
    short, refused, long = await asyncio.gather(*sent, return_exceptions=True)
    assert hops.calls[1] == ["long ab", "ok", "refused by e2", "long text here"]  # one merged call on e1
    assert [(c, e) for c, e in zip(hops.calls[2:], hops.embedded_for[2:], strict=True)] == [
        (["long ab"], "e2"),
        (["ok", "refused by e2"], "e2"),
        (["long text here"], "e2"),
    ]  # then each job on its own, on e2
    assert isinstance(refused, InvalidRequestError) and refused.param == "texts[1]"  # its own name for it
    assert isinstance(short, One) and short.truncated == []  # e2 took it whole; e1 had cut it
    assert isinstance(long, One) and long.truncated == [0]


async def test_a_fan_out_reports_each_heads_long_texts_as_its_own_encoder_saw_them() -> None:
    hops = Hops()
    hops.encoders = {"topic": "e2"}
    answer = await coalescer(hops).classify(["long ab"], Deadline(5), "text", ("sentiment", "topic"), fan_out=True)
    sentiment, topic = answer["sentiment"], answer["topic"]
    assert isinstance(sentiment, Classified) and isinstance(topic, Classified)
    assert (sentiment.truncated, topic.truncated) == ([0], [])


async def test_a_request_routed_while_the_coalescer_closes_is_refused_not_run_after_it() -> None:
    hops = Hops()
    hops.routing.clear()
    merged = coalescer(hops)
    routing = asyncio.create_task(classify(merged, ["a"], Deadline(5), "text"))
    await asyncio.sleep(0.01)
    await merged.aclose(grace_s=0)
    hops.routing.set()
    with pytest.raises(UnavailableError) as refused:
        await routing
    assert refused.value.code == "shutting_down" and hops.calls == []
