"""Queue room, shared fairly by lanes: what `max_queue_texts` bounds. A request reserves room for its texts
before any work; once a text is queued, the room is the text's own, held until the text is answered or
dropped, whoever awaits it; a text answered from the cache or joining an identical one gives its room back
at once. So the room held is always the requests' texts not queued yet plus the texts queued or running.

A lane's share is `max_queue_texts * w / (sum of the weights of the lanes holding room)`, and within a lane
each flow holding room (a `user` of the anonymous lane) has an equal part of the lane's share. While there
is room, anyone may use it. When the queue is full, a request is admitted if its lane is within its share,
or its flow within its part; room is then taken back from the lane (or sibling flow) most over its own:
in its flow holding the most, its newest request fails with 429 `pushed_out` (a request is answered
whole), and all the room it held is free at once: its texts not queued yet, and its queued texts that no
other request awaits. Running texts keep theirs. Otherwise the request is refused (429 `overloaded`, counted as
`queue_share`). So a caller within its share is never refused because another filled the queue. A
refusal's `Retry-After` is how long the lane's own backlog takes at its share of the encoder's recent rate."""

import math
from collections.abc import Callable
from typing import Any

from embedding_service.metrics import ADMITTED_TEXTS, LANE_REFUSALS_TOTAL, REJECTED_TOTAL
from embedding_service.queue_types import Flow, Lane, QueuedText
from service_common.errors import OverloadedError, ServiceError, UnavailableError

_MAX_RETRY_AFTER_S = 60
_RATE_SMOOTHING = 0.2  # weight of the latest batch in the encoder's rate estimate


class Reservation:
    """Room held for one request's texts that are not queued yet, from before they are tokenized until it is
    answered. The room may take it back (`refused`); the request's callers then get that 429."""

    def __init__(self, room: "QueueRoom", flow: Flow, texts: int, arrival: int) -> None:
        self._room = room
        self.flow = flow
        self.lane = flow.lane
        self.arrival = arrival  # against queued texts, when room is taken back from the newest
        self.texts = 0
        self.refused: OverloadedError | None = None
        self.waiting: list[tuple[QueuedText, Any]] = []  # the texts its request awaits now, with its futures
        self.lane.reservations.append(self)
        try:
            self.grow(texts)
        except ServiceError:
            self.lane.reservations.remove(self)
            raise

    def grow(self, texts: int) -> None:
        """Holds room for `texts` more (a long text's extra windows); OverloadedError when there is none."""
        self._room.hold(self, texts)

    def release(self, texts: int) -> None:
        """Gives back room for texts that need no slot of their own (cached, or already queued)."""
        self._room.free(self, min(texts, self.texts))

    def check_quota(self) -> None:
        """OverloadedError while the lane's quota, if it has one, is in debt: before any work is done."""
        quota = self.lane.quota
        if quota is not None and (retry_after_s := quota.retry_after_s()):
            LANE_REFUSALS_TOTAL.labels(self.lane.label, "quota").inc()
            raise OverloadedError(
                f"lane {self.lane.name!r} is past its quota of {quota.rate:g} tokens per second",
                retry_after_s=retry_after_s,
                code="quota_exceeded",
            )

    def spend(self, tokens: int) -> None:
        """Charges the lane's quota, if it has one, with the tokens its texts ask the encoder for."""
        if self.lane.quota is not None:
            self.lane.quota.take(tokens)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc: object) -> None:
        self._room.free(self, self.texts)
        if self in self.lane.reservations:
            self.lane.reservations.remove(self)


PushedOut = Callable[[Reservation, OverloadedError], None]


class QueueRoom:
    def __init__(self, max_queue_texts: int, pushed_out: PushedOut) -> None:
        """`pushed_out` is told of each request whose room was taken back: it fails the request's callers and
        drops its queued texts that no other request awaits."""
        self.max_queue_texts = max_queue_texts
        self.reserved = 0
        self.closing = False
        self._pushed_out = pushed_out
        self._holding: set[Lane] = set()
        self._texts_per_s = 0.0

    def reserve(self, flow: Flow, texts: int, arrival: int) -> Reservation:
        return Reservation(self, flow, texts, arrival)

    def observe(self, texts: int, seconds: float) -> None:
        """One encoder call's rate, for the refusals' Retry-After."""
        rate = texts / max(seconds, 1e-6)
        self._texts_per_s = (
            rate if not self._texts_per_s else _RATE_SMOOTHING * rate + (1 - _RATE_SMOOTHING) * self._texts_per_s
        )

    def hold(self, reservation: Reservation, texts: int) -> None:
        if self.closing:
            raise UnavailableError("the service is shutting down", code="shutting_down")
        if reservation.refused is not None:
            raise reservation.refused
        lane, flow = reservation.lane, reservation.flow
        short = self.reserved + texts - self.max_queue_texts
        if short > 0:
            share = self._share(lane, lane)
            if lane.held + texts <= share:
                self._push_out(lane, short)
            elif flow.held + texts <= self._flow_share(flow, share):
                self._push_out(lane, short, flow)
            else:
                REJECTED_TOTAL.labels("queue_full").inc(texts)
                raise self._refusal(lane, "queue_share", f"the encoder queue is full ({self.reserved} texts)")
        self._add(flow, texts)
        reservation.texts += texts

    def free(self, reservation: Reservation, texts: int) -> None:
        reservation.texts -= texts
        self._add(reservation.flow, -texts)

    def queued(self, reservation: Reservation) -> None:
        """One of the request's texts is queued: its room is the text's own from now on."""
        reservation.texts -= 1

    def done(self, text: QueuedText) -> None:
        """A text no longer needs its room: answered, or dropped from the queue."""
        if text.holds_room:
            text.holds_room = False
            self._add(text.flow, -1)

    def _add(self, flow: Flow, texts: int) -> None:
        lane = flow.lane
        self.reserved += texts
        lane.held += texts
        flow.held += texts
        if lane.held:
            self._holding.add(lane)
        else:
            self._holding.discard(lane)
        ADMITTED_TEXTS.set(self.reserved)

    def _share(self, lane: Lane, joining: Lane) -> float:
        """`lane`'s share of the queue among the lanes holding room, `joining` counted among them."""
        weights = sum(holder.weight for holder in self._holding | {joining})
        return self.max_queue_texts * lane.weight / weights

    @staticmethod
    def _flow_share(flow: Flow, lane_share: float) -> float:
        """A flow's share of its lane's share, among the lane's flows holding room, `flow` counted among them."""
        return lane_share / len({id(f) for f in flow.lane.flows.values() if f.held} | {id(flow)})

    def _push_out(self, lane: Lane, short: int, flow: Flow | None = None) -> None:
        """Takes back room from the lanes most over their share until `short` texts of it are free for
        `lane`, which is within its share; or, with `flow` (within its share of a lane over its own), from
        the lanes and `flow`'s sibling flows most over theirs. The shares sum to the queue, so then some
        other lane or flow is over its own."""
        while short > 0:
            over: list[tuple[float, Lane | Flow]] = [
                (other.held - self._share(other, lane), other)
                for other in self._holding
                if other is not lane and _flows_to_take_from(other)
            ]
            if flow is not None:
                share = self._flow_share(flow, self._share(lane, lane))
                over += [
                    (sibling.held - share, sibling)
                    for sibling in lane.flows.values()
                    if sibling is not flow and _flows_to_take_from(sibling)
                ]
            excess, victim = max(over, key=lambda pair: pair[0], default=(0.0, lane))
            if excess <= 0:  # only by rounding, or while the room over the shares is in the running batch
                raise self._refusal(lane, "queue_share", "the encoder queue is full")
            short -= self._take_back(victim)

    def _take_back(self, victim: Lane | Flow) -> int:
        """Fails the newest request of `victim` (a lane: of its flow holding the most) that holds room it
        can give back, and frees that room. Returns the texts freed."""
        flow = victim if isinstance(victim, Flow) else max(_flows_to_take_from(victim), key=lambda flow: flow.held)
        lane = flow.lane
        request = max(
            (held for held in lane.reservations if held.flow is flow and _freeable(held)), key=lambda held: held.arrival
        )
        freed = _freeable(request)
        request.refused = self._refusal(lane, "pushed_out", "the encoder queue is full and this lane over its share")
        self.free(request, request.texts)
        self._pushed_out(request, request.refused)
        return freed

    def _refusal(self, lane: Lane, reason: str, why: str) -> OverloadedError:
        """A 429 for `lane`, whose Retry-After is how long its own backlog takes at its share of the encoder."""
        LANE_REFUSALS_TOTAL.labels(lane.label, reason).inc()
        weights = sum(holder.weight for holder in self._holding | {lane})
        rate = self._texts_per_s * lane.weight / weights
        retry_after_s = min(_MAX_RETRY_AFTER_S, max(1, math.ceil(lane.held / rate))) if rate > 0 else 1
        return OverloadedError(
            f"{why}; lane {lane.name!r} holds {lane.held} texts of it; retry in {retry_after_s}s",
            retry_after_s=retry_after_s,
            code="pushed_out" if reason == "pushed_out" else "overloaded",
        )


def _freeable(request: Reservation) -> int:
    """The room failing `request` would free: its texts not queued yet, and its queued texts no other
    request awaits."""
    alone = sum(1 for text, caller in request.waiting if text.queued and text.callers == [caller])
    return request.texts + alone


def _flows_to_take_from(victim: Lane | Flow) -> list[Flow]:
    """The flows of `victim` (a lane, or one flow) with a request whose room can be taken back."""
    lane, flows = (victim, list(victim.flows.values())) if isinstance(victim, Lane) else (victim.lane, [victim])
    freeable = {id(held.flow) for held in lane.reservations if _freeable(held)}
    return [flow for flow in flows if id(flow) in freeable]
