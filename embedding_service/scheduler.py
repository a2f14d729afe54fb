"""Which queued texts form the next encoder batch: the fair order of lanes and of the flows within them,
virtual time, and length grouping. Pure and synchronous (no asyncio, threads or metrics): the batcher
drives it, and its rules are tested in-process on random workloads (tests/embedding_service/test_sharing_rules.py).

Fair order. Start-time fair queuing over tokens, on two levels. Among lanes: a lane's next text starts,
in virtual time, where the lane's previous text finished (or at the virtual time now, for a lane that
was idle) and finishes `tokens / weight` later. Within a lane, its flows (one per `user` of the
unauthenticated callers; one for a key's lane) share it the same way, each with weight 1, on the lane's
own virtual clock, except that a flow that was idle starts at the end of the lane's current round (where
its latest busy flow starts): inventing `user` names never puts a caller ahead of those already waiting.
Texts go in start order; a flow's texts keep their arrival order. A lane that was idle goes first, so a
text sent beside a flood of 2,000 is in the very next window, at its front or tied with it.

A batch always takes the front of the fair order. Only texts whose start is within `lead` of the front's
(`max_batch_tokens`, in virtual time: tokens at weight 1) may join it: the window, at most `group_window`
texts. Each text taken is charged to its lane and flow, and the virtual time moves to the front's start,
never further: a text taken from deep in the window must not cost other lanes the credit they have.

Weights, the bound (tested): while two lanes i and j both have texts queued, the tokens each is given,
T_i and T_j, satisfy |T_i / w_i - T_j / w_j| <= 2 * lead + L / w_i + L / w_j, L being the longest text.
(For a backlogged lane, max(finish, virtual time) only grows by what it is given, and is never more than
lead + L / w ahead of the virtual time.)

Length grouping (`group_window` > 0): the batch is the front text and the window's texts nearest to it
in length, as many as pay: of every number of them, the one that computes the most real tokens per
padded token, each call costing `CALL_OVERHEAD_TOKENS` more. With `group_window` 0 a batch is the fair
order's prefix that fits the budgets. Waiting: the front is in every batch, so a text at the front runs
in the next batch; only texts within `lead` behind it can overtake it, and each that does is charged,
which moves its lane's later texts back. With one caller, the oldest text is always the front. Within a
lane, a busy flow's front text is overtaken by at most one text of each other flow per round."""

import heapq
import math
from collections.abc import Iterator

from embedding_service.buckets import Buckets
from embedding_service.queue_types import Lane, QueuedText

# What one encoder call costs beyond its padded tokens, in tokens: the backends' fixed cost per call
# (MiniLM on 2 cores: ~1.3 ms with OpenVINO, ~10 tokens) and the batcher's own work per batch. Grouping
# weighs it against padding, so that it never splits texts into batches too small to pay for themselves.
CALL_OVERHEAD_TOKENS = 32

# (start in virtual time, start on the lane's own clock, text)
_Tagged = tuple[float, float, QueuedText]


class Scheduler:
    def __init__(self, buckets: Buckets, *, max_batch_tokens: int, group_window: int) -> None:
        if buckets.seq_lengths[-1] > max_batch_tokens:
            raise ValueError(f"max_batch_tokens {max_batch_tokens} cannot hold one text of {buckets.seq_lengths[-1]}")
        self._buckets = buckets
        self._max_batch_size = buckets.batch_sizes[-1]
        self._max_batch_tokens = max_batch_tokens
        self._group_window = group_window
        self.lead = float(max_batch_tokens)
        self.virtual = 0.0  # the start of the front text of the last batch taken
        self.waiting = 0  # texts queued
        self._busy: dict[Lane, None] = {}  # lanes with texts queued, in the order they got them

    def add(self, text: QueuedText) -> None:
        flow = text.flow
        lane = flow.lane
        if flow not in lane.busy:  # a flow that was idle starts at the end of its lane's current round
            flow.finish = max(flow.finish, lane.virtual, *(max(f.finish, lane.virtual) for f in lane.busy))
        flow.queue[text.arrival] = text
        lane.busy[flow] = None
        lane.waiting += 1
        self._busy[lane] = None
        self.waiting += 1

    def remove(self, text: QueuedText) -> None:
        """A queued text leaves without running (its callers left, or its room was taken back)."""
        del text.flow.queue[text.arrival]
        self._left(text)

    def take(self) -> list[QueuedText]:
        """Chooses the next batch, in fair order, takes it out of the queues and charges it."""
        window = self._window()
        if not window:
            return []
        texts = [text for _, _, text in window]
        chosen = {id(text) for text in (self._grouped(texts) if self._group_window else self._in_order(texts))}
        fronts: dict[Lane, float] = {}  # each lane's first text in the window: its own front
        batch: list[QueuedText] = []
        for _, local, text in window:
            lane, flow = text.lane, text.flow
            fronts.setdefault(lane, local)
            if id(text) not in chosen:
                continue
            tokens = len(text.ids)
            lane.finish = max(lane.finish, self.virtual) + tokens / lane.weight
            flow.finish = max(flow.finish, lane.virtual) + tokens
            del flow.queue[text.arrival]
            self._left(text)
            batch.append(text)
        self.virtual = window[0][0]
        for lane in {text.lane for text in batch}:
            lane.virtual = fronts[lane]
        return batch

    def queued(self) -> Iterator[QueuedText]:
        for lane in self._busy:
            for flow in lane.busy:
                yield from flow.queue.values()

    def oldest(self) -> float:
        """When the longest-waiting queued text was queued (`perf_counter`); inf when none is."""
        fronts = (next(iter(flow.queue.values())) for lane in self._busy for flow in lane.busy)
        return min((text.enqueued for text in fronts), default=math.inf)

    def padded(self, texts: int, longest: int) -> int:
        return self._buckets.batch_size(texts) * self._buckets.seq_length(longest)

    def _left(self, text: QueuedText) -> None:
        flow = text.flow
        lane = flow.lane
        lane.waiting -= 1
        self.waiting -= 1
        if not flow.queue:
            del lane.busy[flow]
            if not lane.busy:
                del self._busy[lane]

    def _window(self) -> list[_Tagged]:
        """The fair order's texts that start within `lead` of its front, at most `group_window` (or a batch)."""
        size = self._group_window or self._max_batch_size
        heads: list[tuple[float, int, float, QueuedText, Iterator[tuple[float, QueuedText]]]] = []
        for order, lane in enumerate(self._busy):
            texts = self._lane_order(lane)
            local, text = next(texts)
            heads.append((max(lane.finish, self.virtual), order, local, text, texts))
        if not heads:
            return []
        heapq.heapify(heads)
        last = heads[0][0] + self.lead
        window: list[_Tagged] = []
        while heads and len(window) < size:
            start, order, local, text, texts = heads[0]
            if start > last:
                break
            window.append((start, local, text))
            following = next(texts, None)
            if following is None:
                heapq.heappop(heads)
            else:
                heapq.heapreplace(heads, (start + len(text.ids) / text.lane.weight, order, *following, texts))
        return window

    def _lane_order(self, lane: Lane) -> Iterator[tuple[float, QueuedText]]:
        """The lane's queued texts in fair order among its flows, with their starts on the lane's clock,
        as far as `lead` past its front."""
        heads: list[tuple[float, int, QueuedText, Iterator[QueuedText]]] = []
        for order, flow in enumerate(lane.busy):
            texts = iter(flow.queue.values())
            heads.append((max(flow.finish, lane.virtual), order, next(texts), texts))
        heapq.heapify(heads)
        last = heads[0][0] + self.lead
        while heads and heads[0][0] <= last:
            start, order, text, texts = heads[0]
            yield start, text
            following = next(texts, None)
            if following is None:
                heapq.heappop(heads)
            else:
                heapq.heapreplace(heads, (start + len(text.ids), order, following, texts))

    def _fits(self, texts: int, longest: int) -> bool:
        return texts <= self._max_batch_size and self.padded(texts, longest) <= self._max_batch_tokens

    def _in_order(self, window: list[QueuedText]) -> list[QueuedText]:
        """The window's prefix that fits the budgets."""
        batch: list[QueuedText] = []
        longest = 0
        for text in window:
            longest = max(longest, len(text.ids))
            if batch and not self._fits(len(batch) + 1, longest):
                break
            batch.append(text)
        return batch

    def _grouped(self, window: list[QueuedText]) -> list[QueuedText]:
        """The front text, then the texts nearest to it in length, as many as compute the most real tokens
        per padded one."""
        front, anchor = window[0], len(window[0].ids)
        nearest = sorted(window[1:], key=lambda text: abs(len(text.ids) - anchor))  # stable: ties in fair order
        real = longest = anchor
        best, best_score = 0, real / (self.padded(1, longest) + CALL_OVERHEAD_TOKENS)
        for count, text in enumerate(nearest, start=1):
            longest = max(longest, len(text.ids))
            if not self._fits(1 + count, longest):
                break
            real += len(text.ids)
            score = real / (self.padded(1 + count, longest) + CALL_OVERHEAD_TOKENS)
            if score >= best_score:
                best, best_score = count, score
        return [front, *nearest[:best]]
