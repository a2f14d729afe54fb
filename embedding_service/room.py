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
other request awaits. Running texts keep theirs. The victims are chosen before anyone is failed: if those
over their shares cannot free enough, nobody is, and the newcomer is refused. Otherwise too the request is
refused (429 `overloaded`, counted as `queue_share`). So a caller within its share is never refused
because another filled the queue, as long as the room over the shares is not in the running batch. A
refusal's `Retry-After` is how long the lane's own backlog takes at its share of the encoder's recent rate.
A lane's quota is checked before its request reserves any room."""

import math
from collections.abc import Callable
from typing import Any

from embedding_service.metrics import ADMITTED_TEXTS, LANE_REFUSALS_TOTAL, MAX_QUEUE_TEXTS, REJECTED_TOTAL
from embedding_service.queue_types import Flow, Lane, QueuedText
from service_common.errors import OverloadedError, ServiceError, UnavailableError

_MAX_RETRY_AFTER_S = 60
_RATE_SMOOTHING = 0.2  # weight of the latest batch in the encoder's rate estimate


class Reservation:
    """Room held for one request's texts that are not queued yet, from before they are tokenized until it is
    answered. The room may take it back (`refused`); the request's callers then get that 429."""

    def __init__(self, room: "QueueRoom", flow: Flow, texts: int) -> None:
        self._room = room
        self.flow = flow
        self.lane = flow.lane
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
        MAX_QUEUE_TEXTS.set(max_queue_texts)
        self.reserved = 0
        self.closing = False
        self._pushed_out = pushed_out
        self._holding: set[Lane] = set()
        self._texts_per_s = 0.0

    def reserve(self, flow: Flow, texts: int) -> Reservation:
        """Room for a request's texts in `flow`, once its lane's quota lets it in (before any room is taken,
        so a refused request pushes nobody out)."""
        _check_quota(flow.lane)
        return Reservation(self, flow, texts)

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
                victims = self._victims(lane, short)
            elif flow.held + texts <= self._flow_share(flow, share):
                victims = self._victims(lane, short, flow)
            else:
                victims = None
            if victims is None:
                REJECTED_TOTAL.labels("queue_full").inc(texts)
                raise self._refusal(lane, "queue_share", f"the encoder queue is full ({self.reserved} texts)")
            for victim in victims:
                REJECTED_TOTAL.labels("queue_full").inc(victim.texts + len(victim.waiting))  # all its texts fail
                victim.refused = self._refusal(
                    victim.lane, "pushed_out", "the encoder queue is full and this lane over its share"
                )
                self.free(victim, victim.texts)
                self._pushed_out(victim, victim.refused)
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

    def _victims(self, lane: Lane, short: int, flow: Flow | None = None) -> list[Reservation] | None:
        """The requests to fail so that `short` texts of room are free for `lane`, within its share: the
        newest requests of the lanes most over their shares (of a lane, in its flow holding the most); with
        `flow` (within its part of a lane over its share), of `flow`'s sibling flows too. None, and nobody
        failed, when those over their shares cannot free enough (their room is in the running batch, or in
        texts other lanes' requests await too)."""
        candidates: list[tuple[Lane | Flow, float]] = [
            (other, self._share(other, lane)) for other in self._holding if other is not lane
        ]
        if flow is not None:
            part = self._flow_share(flow, self._share(lane, lane))
            candidates += [(sibling, part) for sibling in lane.flows.values() if sibling is not flow and sibling.held]
        lanes = [holder for holder, _ in candidates if isinstance(holder, Lane)]
        requests = _requests_by_flow([*lanes, lane] if flow is not None else lanes, flow)
        given: dict[int, int] = {}  # room each lane and flow would give back
        victims: list[Reservation] = []
        freed = 0
        while freed < short:
            over = [
                (holder.held - given.get(id(holder), 0) - share, holder)
                for holder, share in candidates
                if any(requests.get(id(f)) for f in _flows(holder))
            ]
            excess, victim = max(over, key=lambda pair: pair[0], default=(0.0, lane))
            if excess <= 0:
                return None
            taken = max(
                (f for f in _flows(victim) if requests.get(id(f))),
                key=lambda f: f.held - given.get(id(f), 0),
            )
            request, frees = requests[id(taken)].pop()
            victims.append(request)
            freed += frees
            for holder in {id(taken): taken, id(taken.lane): taken.lane}:
                given[holder] = given.get(holder, 0) + frees
        return victims

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


def _check_quota(lane: Lane) -> None:
    """OverloadedError while `lane`'s quota, if it has one, is in debt: before any room or work is taken."""
    quota = lane.quota
    if quota is not None and (retry_after_s := quota.retry_after_s()):
        LANE_REFUSALS_TOTAL.labels(lane.label, "quota").inc()
        raise OverloadedError(
            f"lane {lane.name!r} is past its quota of {quota.rate:g} tokens per second",
            retry_after_s=retry_after_s,
            code="quota_exceeded",
        )


def _flows(holder: Lane | Flow) -> list[Flow]:
    return list(holder.flows.values()) if isinstance(holder, Lane) else [holder]


def _requests_by_flow(lanes: list[Lane], skip: Flow | None) -> dict[int, list[tuple[Reservation, int]]]:
    """The requests of `lanes` (but `skip`'s) that failing would free room, by flow, oldest first, each with
    the room it frees: its texts not queued yet, and its queued texts that only it awaits."""
    found: dict[int, list[tuple[Reservation, int]]] = {}
    for lane in lanes:
        for request in lane.reservations:
            if request.refused is not None or request.flow is skip:
                continue
            mine = {id(caller) for _, caller in request.waiting}
            alone = {
                id(text)
                for text, _ in request.waiting
                if text.queued and all(id(caller) in mine for caller in text.callers)
            }
            if frees := request.texts + len(alone):
                found.setdefault(id(request.flow), []).append((request, frees))
    return found
