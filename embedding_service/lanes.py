"""Lanes: whose texts the encoder is running. A request's lane comes from authentication only, and the
scheduler and the queue room share the encoder between lanes by weight (embedding_service.scheduler,
embedding_service.room).

A request bearing a named key (an API key `name:key`, or a lane key such as the orchestrator's) is in the
key's lane, which has a single flow. Every other request is in the shared `anonymous` lane: OpenAI's `user`
names its flow there, and the flows share the lane's weight, queue room and quota. So `user` can never
select a configured lane or another caller's key; inventing names only splits the anonymous lane's share.

Lanes are the configured ones (keys' names, weights, quotas, `anonymous`), kept for ever. Flows of the
anonymous lane are bounded: past `max_lanes` live ones, idle flows (nothing queued, no room held) unused
for `idle_s` are dropped, then the least recently used idle one; while every flow is busy, new names share
the overflow flow (`other`, which no `user` can name). Metrics carry the lane's name, so their cardinality
is bounded by the settings. A key may not be named `anonymous` or `other` (the settings refuse it)."""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from embedding_service.queue_types import Flow, Lane, TokenBucket

ANONYMOUS = "anonymous"
OTHER = "other"  # the name of the anonymous flow that new names share while every other flow is busy
DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True)
class LanePolicy:
    enabled: bool = True  # false: every request in one flow of the anonymous lane, one FIFO queue
    weights: Mapping[str, float] = field(default_factory=dict)
    quotas: Mapping[str, float] = field(default_factory=dict)  # tokens per second
    named: frozenset[str] = frozenset()  # the keys' names: each key's caller has its lane
    max_lanes: int = 256  # live flows of the anonymous lane
    idle_s: float = 60.0


class Lanes:
    def __init__(self, policy: LanePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._lanes = {name: self._new(name) for name in sorted({*policy.weights, *policy.quotas, *policy.named})}
        self.anonymous = self._lanes.setdefault(ANONYMOUS, self._new(ANONYMOUS))
        self._users: OrderedDict[str, Flow] = OrderedDict()  # the anonymous lane's flows, least recently used first

    @property
    def enabled(self) -> bool:
        return self._policy.enabled

    def __len__(self) -> int:
        """Flows alive: one per configured lane, and the anonymous lane's."""
        return len(self._lanes) - 1 + len(self._users)

    def flow(self, key: str | None, user: str | None = None) -> Flow:
        """The flow of a caller authenticated by the named key `key` (None: unauthenticated, or a key
        without a name) that says it is `user`."""
        now = self._clock()
        if not self._policy.enabled:
            key, user = None, None
        if key is not None:
            lane = self._lanes.get(key) or self._lanes.setdefault(key, self._new(key))
            flow = lane.flows.get("") or lane.flows.setdefault("", Flow("", lane))
        else:
            name = user or ""
            flow = self._users.get(name) or self._open(name, now)
            if name in self._users:
                self._users.move_to_end(name)
        flow.used_at = now
        return flow

    def _open(self, name: str, now: float) -> Flow:
        if len(self._users) >= self._policy.max_lanes:
            self._expire(now)
        if len(self._users) >= self._policy.max_lanes:
            return self.anonymous.flows.get(None) or self.anonymous.flows.setdefault(None, Flow(OTHER, self.anonymous))
        flow = Flow(name, self.anonymous)
        self._users[name] = self.anonymous.flows[name] = flow
        return flow

    def _expire(self, now: float) -> None:
        """Drops the idle flows unused for `idle_s`; if none is, the least recently used idle flow."""
        idle = [flow for flow in self._users.values() if flow.idle]
        stale = [flow for flow in idle if now - flow.used_at >= self._policy.idle_s] or idle[:1]
        for flow in stale:
            del self._users[flow.name]
            del self.anonymous.flows[flow.name]

    def _new(self, name: str) -> Lane:
        rate = self._policy.quotas.get(name)
        return Lane(
            name=name,
            weight=self._policy.weights.get(name, DEFAULT_WEIGHT),
            label=name,
            quota=TokenBucket(rate, self._clock) if rate else None,
        )
