"""Queue room, shared fairly by lanes: what `max_queue_texts` bounds, reserved per request before any work.

A lane's share is `max_queue_texts * w / (sum of the weights of the lanes holding room)`. While there is
room, anyone may use it. When the queue is full, a lane over its share is refused (429); a lane within its
share is admitted, and the room is taken back from the newest requests of the lanes most over their
shares, which get the 429 instead. So a lane within its share is never refused because another filled the
queue. A refusal's `Retry-After` is how long the lane's own backlog takes at its share of the encoder's
recent rate."""

import asyncio
import math
from typing import TYPE_CHECKING

from embedding_service.lanes import Lane
from embedding_service.metrics import ADMITTED_TEXTS, LANE_REFUSALS_TOTAL, REJECTED_TOTAL
from service_common.errors import OverloadedError, ServiceError, UnavailableError

if TYPE_CHECKING:
    from embedding_service.batcher import BatchedEmbedding

_MAX_RETRY_AFTER_S = 60
_RATE_SMOOTHING = 0.2  # weight of the latest batch in the encoder's rate estimate


class Reservation:
    """Room held for one request's texts in its lane, from before they are tokenized until it is answered.
    The room may take it back (`refused`) for a lane within its share; its callers then get that 429."""

    def __init__(self, room: "QueueRoom", lane: Lane, texts: int) -> None:
        self._room = room
        self.lane = lane
        self.texts = 0
        self.refused: OverloadedError | None = None
        self.callers: list[asyncio.Future[BatchedEmbedding]] = []  # what its request awaits now
        lane.reservations.append(self)
        try:
            self.grow(texts)
        except ServiceError:
            lane.reservations.remove(self)
            raise

    def grow(self, texts: int) -> None:
        """Holds room for `texts` more (a long text's extra windows); OverloadedError when there is none."""
        self._room.hold(self, texts)

    def release(self, texts: int) -> None:
        """Gives back room for texts that need no encoder slot of their own (cached, or already in flight)."""
        self._room.free(self, min(texts, self.texts))

    def charge(self, tokens: int) -> None:
        """Takes `tokens` from the lane's quota, if it has one; OverloadedError while the quota is in debt."""
        quota = self.lane.quota
        if quota is None:
            return
        if retry_after_s := quota.retry_after_s():
            LANE_REFUSALS_TOTAL.labels(self.lane.label, "quota").inc()
            raise OverloadedError(
                f"lane {self.lane.name!r} is past its quota of {quota.rate:g} tokens per second",
                retry_after_s=retry_after_s,
            )
        quota.take(tokens)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc: object) -> None:
        self._room.free(self, self.texts)
        if self in self.lane.reservations:
            self.lane.reservations.remove(self)


class QueueRoom:
    def __init__(self, max_queue_texts: int) -> None:
        self.max_queue_texts = max_queue_texts
        self.reserved = 0
        self.closing = False
        self._holding: set[Lane] = set()
        self._texts_per_s = 0.0

    def reserve(self, lane: Lane, texts: int) -> Reservation:
        return Reservation(self, lane, texts)

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
        lane = reservation.lane
        short = self.reserved + texts - self.max_queue_texts
        if short > 0:
            if lane.held + texts > self._share(lane, lane):
                REJECTED_TOTAL.labels("queue_full").inc(texts)
                raise self._refusal(lane, "queue_share", f"the encoder queue is full ({self.reserved} texts)")
            self._push_out(lane, short)
        self.reserved += texts
        lane.held += texts
        reservation.texts += texts
        self._holding.add(lane)
        ADMITTED_TEXTS.set(self.reserved)

    def free(self, reservation: Reservation, texts: int) -> None:
        lane = reservation.lane
        self.reserved -= texts
        lane.held -= texts
        reservation.texts -= texts
        if lane.held == 0:
            self._holding.discard(lane)
        ADMITTED_TEXTS.set(self.reserved)

    def _share(self, lane: Lane, joining: Lane) -> float:
        """`lane`'s share of the queue among the lanes holding room, `joining` counted among them."""
        weights = sum(holder.weight for holder in self._holding | {joining})
        return self.max_queue_texts * lane.weight / weights

    def _push_out(self, lane: Lane, short: int) -> None:
        """Takes back the newest reservations of the lanes most over their share until `short` texts of room
        are free for `lane`, which is within its own share. The shares sum to the queue, so while `lane` is
        within its share and the queue is full, some other lane is over its own."""
        while short > 0:
            over = [(holder.held - self._share(holder, lane), holder) for holder in self._holding if holder is not lane]
            excess, victim = max(over, key=lambda pair: pair[0], default=(0.0, lane))
            if excess <= 0:  # only by rounding: the shares sum to the queue
                raise self._refusal(lane, "queue_share", "the encoder queue is full")
            newest = next(held for held in reversed(victim.reservations) if held.texts)
            short -= newest.texts
            self._revoke(newest)

    def _revoke(self, reservation: Reservation) -> None:
        error = self._refusal(reservation.lane, "pushed_out", "the encoder queue is full and this lane over its share")
        reservation.refused = error
        for caller in reservation.callers:  # its request leaves the queue as any cancelled one does
            if not caller.done():
                caller.set_exception(error)
        self.free(reservation, reservation.texts)
        reservation.lane.reservations.remove(reservation)

    def _refusal(self, lane: Lane, reason: str, why: str) -> OverloadedError:
        """A 429 for `lane`, whose Retry-After is how long its own backlog takes at its share of the encoder."""
        LANE_REFUSALS_TOTAL.labels(lane.label, reason).inc()
        weights = sum(holder.weight for holder in self._holding | {lane})
        rate = self._texts_per_s * lane.weight / weights
        retry_after_s = min(_MAX_RETRY_AFTER_S, max(1, math.ceil(lane.held / rate))) if rate > 0 else 1
        return OverloadedError(
            f"{why}; lane {lane.name!r} holds {lane.held} texts of it; retry in {retry_after_s}s",
            retry_after_s=retry_after_s,
        )
