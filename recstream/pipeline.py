"""The streaming worker's logic, free of Kafka, Faust and Redis: one message in, one outcome out.

:class:`StreamProcessor` wraps a :class:`~recstream.recommender.Recommender` with everything a
stream adds: offset positions (what the state reflects), validation with dead-letter records,
dedup by ``event_id``, the online hit rate, latency percentiles, counters, the encode queue and
checkpoint save/restore. The Faust agents in ``streams/`` only decode the Kafka message, call
:meth:`StreamProcessor.handle_event` / :meth:`~StreamProcessor.handle_item`, and send what comes
back; so every rule here is tested without a broker.

Every call that changes state does so synchronously, in full, before returning: the worker's
event loop can never interleave a checkpoint between "learned the event" and "moved the offset
past it", which is what makes a checkpoint's model and offsets agree.

The events path is here; the catalogue's (items, the encode queue) is in
:mod:`recstream.pipeline_catalogue`, checkpoints in :mod:`recstream.pipeline_checkpoint`, and the
message and outcome types in :mod:`recstream.pipeline_types` (all re-exported from here).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from recstream.dead_letters import dead_letter, dead_letter_key
from recstream.events import Event, InvalidMessage, Recommendation, parse_event
from recstream.forget import ForgottenUsers, parse_forget
from recstream.online import (
    DedupWindow,
    EncodeQueue,
    LatencyWindow,
    OnlineRanking,
    Positions,
    RateMeter,
)
from recstream.pipeline_catalogue import CatalogueInputs
from recstream.pipeline_checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    STATE_VERSION,
    ProcessorCheckpoints,
)
from recstream.pipeline_types import (
    Counters,
    EventOutcome,
    ForgetOutcome,
    ItemOutcome,
    KafkaMessage,
    MessageLike,
    RecommenderLike,
    message_position,
)

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "STATE_VERSION",
    "EventOutcome",
    "ForgetOutcome",
    "ItemOutcome",
    "KafkaMessage",
    "MessageLike",
    "RecommenderLike",
    "StreamProcessor",
    "dead_letter",
    "dead_letter_key",
]

log = logging.getLogger(__name__)

# Consecutive processing errors (exceptions while applying *valid* messages) after which the
# processor halts: that many in a row is a bug or an incompatible model, not bad input, and
# dead-lettering the whole stream would only move it to the DLQ.
DEFAULT_MAX_CONSECUTIVE_ERRORS = 100

# Checkpoints written before the split pickled the counters as recstream.pipeline._Counters.
_Counters = Counters


class StreamProcessor(CatalogueInputs, ProcessorCheckpoints):
    """See the module docstring. ``k``, ``dedup_window``, ``max_event_bytes`` from Settings."""

    def __init__(
        self,
        recommender: RecommenderLike,
        *,
        k: int = 10,
        dedup_window: int = 1_000_000,
        max_event_bytes: int = 64 * 1024,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        require_user_key: bool = False,
        clock=time.time,
    ) -> None:
        self.recommender = recommender
        # Several workers: each owns the users of its partitions, so an event must be keyed by
        # its user_id (else one user's events could reach two owners); others are dead-lettered.
        self.require_user_key = require_user_key
        self.k = k
        self.max_event_bytes = max_event_bytes
        self.max_consecutive_errors = max_consecutive_errors
        self.clock = clock
        # Processing errors in a row per input topic (a success on another topic must not hide
        # an events stream that fails throughout), and why the processor stopped once one
        # reached max_consecutive_errors (None: running).
        self._errors_in_a_row: Counter[str] = Counter()
        self.halted: str | None = None
        # (topic, partition, old position) of each partition found reading a new log from 0;
        # taken and reported by the worker (a WARNING and a metric)
        self.rewinds: list[tuple[str, int, int]] = []
        # (topic, partition, expected offset, offset read) of each jump forward: messages the
        # consumer skipped (or a transactional producer's markers); reported by the worker
        self.gaps: list[tuple[str, int, int, int]] = []
        self.forgotten = ForgottenUsers()
        self.dedup = DedupWindow(dedup_window)
        self.positions = Positions()
        self.online = OnlineRanking(k=k)
        self.latency = LatencyWindow()
        self.encode_queue = EncodeQueue()
        self.counts = Counters()
        self.recommended: set[str] = set()  # live items recommended at least once: coverage
        self._rate = RateMeter()
        # Bumped by every state change (offsets included): lets the worker skip checkpoints
        # of an idle stream.
        self.changes = 0

    # -- messages --------------------------------------------------------------------------
    def handle_event(
        self,
        raw: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp: float | None,
    ) -> EventOutcome:
        """One message of the events topic; ``timestamp`` is the Kafka record time (seconds)."""
        return self.handle_events([KafkaMessage(raw, topic, partition, offset, timestamp)])[0]

    def handle_events(self, messages: Sequence[MessageLike]) -> list[EventOutcome]:
        """A batch of event messages, in order: one outcome per message.

        Every event is validated, deduplicated and learned in order, as one at a time would be.
        Then each user with events in the batch gets **one** fresh list, scored after all of
        them: it is attached to the outcome of the user's last event (its ``trigger_event_id``);
        the user's earlier events in the batch are ``ok`` without a list of their own. A list
        for an earlier event would be superseded before anyone could read it, and scoring is
        most of an event's cost, so a worker behind its stream catches up faster; when events
        arrive one by one the batches hold one event and every event gets its list.

        The same as :meth:`learn_events` and then :meth:`recommend_after` for each index it
        names, which is how a worker hands each list over as soon as it is scored.
        """
        outcomes, listed = self.learn_events(messages)
        for index in listed:
            outcomes[index] = self.recommend_after(messages[index], outcomes[index])
        return outcomes

    def learn_events(self, messages: Sequence[MessageLike]) -> tuple[list[EventOutcome], list[int]]:
        """The first half of :meth:`handle_events`: every message validated and learned in
        order, and the indexes of the outcomes that get a list (each user's last learned event,
        in stream order), still without it."""
        now = self.clock()
        outcomes: list[EventOutcome] = []
        last_of_user: dict[str, int] = {}  # user -> index of their last learned event
        for message in messages:
            outcome = self._learn_message(message, now)
            if outcome.status == "ok" and outcome.event is not None:
                last_of_user.pop(outcome.event.user_id, None)  # re-insert: keeps stream order
                last_of_user[outcome.event.user_id] = len(outcomes)
            outcomes.append(outcome)
        return outcomes, list(last_of_user.values())

    def recommend_after(self, message: MessageLike, learned: EventOutcome) -> EventOutcome:
        """The list of ``learned``'s user (an ``ok`` outcome of :meth:`learn_events`) on the
        model as it is now: ``learned`` with its list, or its dead letter when scoring fails."""
        event, now = learned.event, learned.received_at
        assert event is not None
        try:
            return self._recommend(event, message.timestamp, now)
        except Exception as exc:  # see _learn_message: dead-lettered, not raised
            # The event itself was learned; only its list failed. Its dead letter lets an
            # operator see (and count) lists that never went out.
            log.exception("recommending after event %s failed", event.event_id)
            key = getattr(message, "key", None)
            dlq = self._processing_error(message.value, exc, message_position(message), key)
            return EventOutcome("dlq", event, dlq=dlq, received_at=now)

    def _learn_message(self, message: MessageLike, now: float) -> EventOutcome:
        raw, topic = message.value, message.topic
        partition, offset = message.partition, message.offset
        skip = self._admit(topic, partition, offset)
        if skip is not None:
            return EventOutcome(skip, received_at=now)
        where = message_position(message)
        key = getattr(message, "key", None)
        if raw is None:
            # A tombstone deletes a key of a compacted topic; events are never deleted so.
            error = InvalidMessage("tombstone", "null value (tombstone) on the events topic")
            return EventOutcome(
                "dlq", dlq=self._dead_letter(raw, error, where, key), received_at=now
            )
        try:
            # Everything is validated here, before any state changes: an event that fails
            # leaves no partial update behind.
            event = parse_event(raw, default_ts=message.timestamp, max_bytes=self.max_event_bytes)
        except InvalidMessage as exc:
            dlq = self._dead_letter(raw, exc, where, key)
            return EventOutcome("dlq", dlq=dlq, received_at=now)
        except Exception as exc:  # a parser bug: contained like any processing error
            log.exception("parsing the event at %s failed", where)
            return EventOutcome("dlq", dlq=self._processing_error(raw, exc, where, key))
        if self.require_user_key and key != event.user_id.encode():
            error = InvalidMessage(
                "bad_key",
                "the record's key must be the event's user_id (several workers own users by "
                "partition)",
            )
            return EventOutcome(
                "dlq", dlq=self._dead_letter(raw, error, where, key), received_at=now
            )
        if event.event_id in self.dedup:
            self.counts.duplicates += 1
            return EventOutcome("duplicate", event=event, received_at=now)
        if self.forgotten.covers(event.user_id, message.timestamp):
            # Replayed after a crash, from before the user asked to be forgotten: not learned.
            return EventOutcome("forgotten", received_at=now)
        try:
            self.recommender.learn(event)
        except Exception as exc:
            # A bug or an incompatible model must not stop the stream, nor silently drop the
            # event: it is dead-lettered (replayable once fixed: its id is not remembered as
            # seen), logged and counted.
            log.exception("processing event %s failed", event.event_id)
            dlq = self._processing_error(raw, exc, where, key)
            return EventOutcome("dlq", event, dlq=dlq, received_at=now)
        self.dedup.add(event.event_id)
        if event.type == "purchase":
            # Test, then learn: scored against the list this user was shown before the purchase
            # (remembered when it was published; the model update above does not change it).
            self.online.observe_purchase(event.user_id, event.item_id)
        self._errors_in_a_row[topic] = 0
        self.counts.events_by_type[event.type] += 1
        return EventOutcome("ok", event, received_at=now)

    def _processing_error(
        self, raw: bytes | None, exc: BaseException, where: dict, key: bytes | None = None
    ) -> dict:
        """The dead letter of a valid message whose processing raised (a bug, a bad model);
        halts the processor after ``max_consecutive_errors`` of them in a row."""
        error = InvalidMessage("processing_error", f"{type(exc).__name__}: {exc!s:.300}")
        topic = where["topic"]
        self._errors_in_a_row[topic] += 1
        in_a_row = self._errors_in_a_row[topic]
        if in_a_row >= self.max_consecutive_errors and self.halted is None:
            self.halted = (
                f"{in_a_row} consecutive processing errors on {topic}, the last: {error.reason}"
            )
            log.critical("processor halted: %s", self.halted)
        return self._dead_letter(raw, error, where, key)

    def _dead_letter(
        self, raw: bytes | None, error: InvalidMessage, where: dict, key: bytes | None = None
    ) -> dict:
        self.counts.dlq_by_reason[error.code] += 1
        return dead_letter(
            raw, error, **where, max_raw_bytes=self.max_event_bytes, now=self.clock(), key=key
        )

    def _recommend(self, event: Event, timestamp: float | None, now: float) -> EventOutcome:
        items = tuple(self.recommender.recommend(event.user_id, self.k))
        ids = [s.item_id for s in items]
        self.online.remember(event.user_id, ids)
        self.recommended.update(ids)
        self.counts.recommendations += 1
        generated_at = self.clock()
        # Latency from the record's broker/producer timestamp: the time the event entered
        # Kafka. The event's own ``ts`` is business time and may be years old in a replay.
        since = timestamp if timestamp is not None else now
        recommendation = Recommendation(
            user_id=event.user_id,
            items=items,
            trigger_event_id=event.event_id,
            model_version=self.recommender.model_version,
            generated_at=round(generated_at, 6),
            latency_ms=round(max(0.0, generated_at - since) * 1000.0, 3),
        )
        profile = self.recommender.user_profile(event.user_id)
        return EventOutcome("ok", event, recommendation, profile, received_at=now)

    def _admit(
        self, topic: str, partition: int, offset: int
    ) -> Literal["halted", "replayed"] | None:
        """Every input message's first step: None when it is to be applied (its position is
        taken and the state counts as changed), else why not. A halted processor takes no
        position, so a restart resumes right there."""
        if self.halted is not None:
            return "halted"
        if not self._accept(topic, partition, offset):
            self.counts.replayed += 1
            return "replayed"
        self.changes += 1
        return None

    def _accept(self, topic: str, partition: int, offset: int) -> bool:
        """Positions.accept, except that offset 0 below a position means a new log.

        A message below the position is a redelivery, already reflected, and skipped. But the
        consumer also jumps back when the log it reads was replaced (a topic deleted and
        re-created: its position is out of range, so the consumer resets to the start), and a
        re-created log starts at offset 0. Skipping there would skip every new message below
        the old position, silently: instead the partition is read from 0 again, the jump is
        recorded in ``rewinds`` for the worker to report (:mod:`recstream.offsets`), and
        events seen before are still caught as duplicates by their ids.
        """
        expected = self.positions.next_offset(topic, partition)
        if self.positions.accept(topic, partition, offset):
            if expected is not None and offset > expected:
                self.gaps.append((topic, partition, expected, offset))
            return True
        if offset != 0:
            return False
        old = self.positions.next_offset(topic, partition)
        self.rewinds.append((topic, partition, old or 0))
        self.positions.reset(topic, partition, 0)
        return self.positions.accept(topic, partition, offset)

    def handle_forget(
        self,
        raw: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp: float | None,
        key: bytes | None = None,
    ) -> ForgetOutcome:
        """One request of the forget topic: the user leaves every per-user state at once."""
        skip = self._admit(topic, partition, offset)
        if skip is not None:
            return ForgetOutcome(skip)
        where = {"topic": topic, "partition": partition, "offset": offset}
        try:
            request = parse_forget(raw, default_ts=timestamp)
        except InvalidMessage as exc:
            return ForgetOutcome("dlq", dlq=self._dead_letter(raw, exc, where, key))
        # The ledger first: should the model raise half-way, a replay of the user's older
        # events is still refused, and the dead letter says the request needs a retry.
        # The request's time is never later than its record's: a body "ts" far in the future
        # would otherwise swallow every later event of the user.
        at = request.ts if timestamp is None else min(request.ts, timestamp)
        self.forgotten.add(request.user_id, at)
        try:
            self.recommender.forget_user(request.user_id)
            self.online.forget(request.user_id)
        except Exception as exc:
            log.exception("forget request at %s failed", where)
            return ForgetOutcome("dlq", dlq=self._processing_error(raw, exc, where, key))
        self._errors_in_a_row[topic] = 0
        return ForgetOutcome("forgotten", user_id=request.user_id)

    @property
    def consecutive_errors(self) -> int:
        """The longest current run of processing errors on one input topic."""
        return max(self._errors_in_a_row.values(), default=0)

    def reset_position(self, topic: str, partition: int, offset: int) -> None:
        """Read the partition from ``offset`` on (:mod:`recstream.offsets`); the model keeps
        what it learned."""
        self.positions.reset(topic, partition, offset)
        self.changes += 1

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)

    # -- reporting -------------------------------------------------------------------------
    @property
    def events_processed(self) -> int:
        return self.counts.events

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The metrics-topic JSON: throughput, latency, online accuracy, coverage, counts."""
        c = self.counts
        stats = self.recommender.stats()
        catalogue = int(stats.get("n_active_items", 0))
        hr, ndcg = self.online.hit_rate, self.online.ndcg
        return {
            "ts": round(self.clock(), 3),
            "model_version": self.recommender.model_version,
            "events_processed": c.events,
            "events_per_s": self._rate.rate(c.events),
            "events_by_type": dict(c.events_by_type),
            "duplicates": c.duplicates,
            "replayed_skipped": c.replayed,
            "dlq_total": sum(c.dlq_by_reason.values()),
            "dlq_by_reason": dict(c.dlq_by_reason),
            "recommendations": c.recommendations,
            "latency_ms": self.latency.percentiles_ms(50, 99),
            "online": {
                f"hr@{self.k}": None if hr is None else round(hr, 4),
                f"ndcg@{self.k}": None if ndcg is None else round(ndcg, 4),
                "evaluated": self.online.evaluated,
            },
            "coverage": round(len(self.recommended) / catalogue, 4) if catalogue else None,
            "catalogue_items": catalogue,
            # published while the worker runs and still new; lists the new-item slot changed
            "new_items": int(stats.get("new_items", 0)),
            "slot_lists": int(stats.get("slot_lists", 0)),
            "users": int(stats.get("n_users", 0)),
            "item_vectors": int(stats.get("n_vectors", 0)),
            "items": {
                "upserted": c.items_upserted,
                "deleted": c.items_deleted,
                "encoded": c.items_encoded,
                "encode_queue": len(self.encode_queue),
            },
            **extra,
        }
