"""What the lanes, the queue room and the scheduler share: a lane, its flows, a text waiting for the encoder
and a lane's quota. It imports none of them."""

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanContext

from embedding_service.tokenizer import Ids


class TokenBucket:
    """A quota of `rate` tokens per second, with one second of burst. A request is let in while the bucket
    is not in debt, and takes all of its tokens, which may put it in debt: one large request is never
    refused for ever, and the next one waits until the debt is paid, `ceil(debt / rate)` seconds."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._level = rate
        self._at = clock()

    def retry_after_s(self) -> int:
        """0 when a request may pass now, else the whole seconds until it may."""
        now = self._clock()
        self._level = min(self.rate, self._level + (now - self._at) * self.rate)
        self._at = now
        return 0 if self._level >= 0 else max(1, math.ceil(-self._level / self.rate))

    def take(self, tokens: int) -> None:
        self._level -= tokens


@dataclass(eq=False)
class Lane:
    """Whose texts share one weight, one share of the queue room and one quota: a key's caller, or every
    unauthenticated caller together (`anonymous`)."""

    name: str
    weight: float
    label: str  # its name in metrics
    quota: TokenBucket | None = None
    flows: "dict[str | None, Flow]" = field(default_factory=dict)  # its live flows; None: the overflow flow
    busy: "dict[Flow, None]" = field(default_factory=dict)  # flows with texts queued, in the order they got them
    waiting: int = 0  # texts queued in its flows
    held: int = 0  # queue room it holds: its requests' texts not yet queued, and its queued texts
    reservations: list[Any] = field(default_factory=list)  # its requests' room (room.Reservation), oldest first
    finish: float = 0.0  # virtual time at which its last taken text ends, among the lanes
    virtual: float = 0.0  # virtual time among its own flows


@dataclass(eq=False)
class Flow:
    """One caller's texts within a lane: OpenAI's `user` within `anonymous`, else the lane's single flow.
    The lane's flows share its weight fairly among themselves."""

    name: str
    lane: Lane
    queue: "OrderedDict[int, QueuedText]" = field(default_factory=OrderedDict)  # by arrival number
    finish: float = 0.0  # virtual time at which its last taken text ends, among its lane's flows
    held: int = 0  # of its lane's room
    used_at: float = field(default_factory=time.monotonic)

    @property
    def idle(self) -> bool:
        return self.held == 0 and not self.queue


@dataclass(eq=False)
class QueuedText:
    """One text for the encoder, and every caller awaiting it (identical texts in flight are computed once).
    Until it is answered or dropped it holds one text of its lane's queue room, whoever awaits it."""

    ids: Ids
    key: bytes
    flow: Flow
    arrival: int  # arrival number: its place in its flow, and against reservations when room is taken back
    token_vectors: bool  # a caller reads its token vectors
    trace: SpanContext | None = None  # the span of the request that queued it, when tracing is on
    callers: list[Any] = field(default_factory=list)  # asyncio futures of its callers
    enqueued: float = field(default_factory=time.perf_counter)
    holds_room: bool = True  # until it is answered or dropped

    @property
    def lane(self) -> Lane:
        return self.flow.lane

    @property
    def queued(self) -> bool:
        return self.flow.queue.get(self.arrival) is self
