"""Lanes: whose texts the encoder is running. Every request belongs to its caller's lane, and the batcher
shares the encoder and its queue between the lanes by weight (see embedding_service.batcher).

A lane is named by the caller's API key name, else by OpenAI's `user` field, else it is the shared
`anonymous` lane. Lanes named in the settings (a key's name, a weight or a quota) are kept for ever;
any other name gets a lane of weight 1 while it is in use. Such lanes are bounded: past `max_lanes` live ones, idle
lanes (nothing queued, no room held) older than `idle_s` are dropped, then the least recently used idle
one; when every lane is busy, the new name shares the `other` lane. So a client that invents a new
`user` per request costs at most `max_lanes` small objects, and its requests share one lane's weight.

Metrics carry the lane as a label only for configured lanes, `anonymous` and `other`; every other lane
is counted as `other`, so their cardinality is bounded by the settings, not by callers."""

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedding_service.batcher import _Pending
    from embedding_service.room import Reservation

ANONYMOUS = "anonymous"
OTHER = "other"
DEFAULT_WEIGHT = 1.0


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
    name: str
    weight: float
    label: str  # its name in metrics
    quota: TokenBucket | None = None
    queue: "deque[_Pending]" = field(default_factory=deque)  # arrival order; abandoned texts skipped lazily
    waiting: int = 0  # live texts in `queue`
    held: int = 0  # queue room its admitted requests hold
    reservations: "list[Reservation]" = field(default_factory=list)  # oldest first
    finish: float = 0.0  # virtual time at which its last taken text ends (start-time fair queuing)
    used_at: float = 0.0

    @property
    def idle(self) -> bool:
        return self.held == 0 and self.waiting == 0


@dataclass(frozen=True)
class LanePolicy:
    enabled: bool = True  # false: every request in the anonymous lane, one FIFO queue
    weights: Mapping[str, float] = field(default_factory=dict)
    quotas: Mapping[str, float] = field(default_factory=dict)  # tokens per second
    named: frozenset[str] = frozenset()  # lanes named by the settings otherwise: the API keys' names
    max_lanes: int = 256
    idle_s: float = 60.0


class Lanes:
    def __init__(self, policy: LanePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._configured = {*policy.weights, *policy.quotas, *policy.named, ANONYMOUS, OTHER}
        self._lanes: OrderedDict[str, Lane] = OrderedDict()  # least recently used first
        self._kept = {name: self._new(name) for name in sorted(self._configured)}

    @property
    def enabled(self) -> bool:
        return self._policy.enabled

    def __len__(self) -> int:
        """Lanes alive, the configured ones included."""
        return len(self._kept) + len(self._lanes)

    def lane(self, name: str | None) -> Lane:
        """The lane of a caller named `name` (None: anonymous)."""
        if not self._policy.enabled or not name:
            name = ANONYMOUS
        now = self._clock()
        lane = self._kept.get(name) or self._lanes.get(name) or self._open(name, now)
        if lane.name in self._lanes:
            self._lanes.move_to_end(lane.name)
        lane.used_at = now
        return lane

    def _open(self, name: str, now: float) -> Lane:
        if len(self) >= self._policy.max_lanes:
            self._expire(now)
        if len(self) >= self._policy.max_lanes:
            return self._kept[OTHER]
        lane = self._new(name)
        self._lanes[name] = lane
        return lane

    def _expire(self, now: float) -> None:
        """Drops the idle lanes unused for `idle_s`; if none is, the least recently used idle lane."""
        idle = [lane for lane in self._lanes.values() if lane.idle]
        stale = [lane for lane in idle if now - lane.used_at >= self._policy.idle_s] or idle[:1]
        for lane in stale:
            del self._lanes[lane.name]

    def _new(self, name: str) -> Lane:
        rate = self._policy.quotas.get(name)
        return Lane(
            name=name,
            weight=self._policy.weights.get(name, DEFAULT_WEIGHT),
            label=name if name in self._configured else OTHER,
            quota=TokenBucket(rate, self._clock) if rate else None,
        )
