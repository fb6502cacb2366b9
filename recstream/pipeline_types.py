"""What goes in and out of :class:`recstream.pipeline.StreamProcessor`: the Kafka message it reads,
the part of the model it drives, and the outcome of each message (the worker acts on these).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from recstream.events import (
    Event,
    InvalidMessage,
    Item,
    Recommendation,
    ScoredItem,
    check_id,
)

__all__ = [
    "Counters",
    "EventOutcome",
    "ForgetOutcome",
    "ItemOutcome",
    "KafkaMessage",
    "MessageLike",
    "RecommenderLike",
    "message_position",
    "tombstone_item",
]


class MessageLike(Protocol):
    """What the processor reads of a Kafka message (Faust's ``Message`` has these)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """A :class:`MessageLike` for callers without a Faust message (replays, tests)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None
    key: bytes | None = None


def message_position(message: MessageLike) -> dict[str, Any]:
    """Where a message is, as its dead-letter record says it."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


class RecommenderLike(Protocol):
    """The part of :class:`recstream.recommender.Recommender` the stream uses."""

    model_version: str
    allow_unknown_items: bool

    def upsert_item(self, item: Item) -> bool: ...
    def delete_item(self, item_id: str) -> None: ...
    def forget_user(self, user_id: str) -> bool: ...
    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None: ...
    def learn(self, event: Event) -> None: ...
    def recommend(self, user_id: str, k: int = 10) -> list[ScoredItem]: ...
    def user_profile(self, user_id: str) -> np.ndarray | None: ...
    def stats(self) -> dict: ...
    def save(self, path: str | Path) -> None: ...


def tombstone_item(key: bytes | None) -> Item:
    """The deletion a tombstone on the items topic stands for: the item its key names."""
    if key is None:
        raise InvalidMessage("tombstone", "null value (tombstone) without a key: no item to delete")
    try:
        item_id = bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("tombstone", "tombstone key is not UTF-8") from None
    return Item(check_id(item_id, "key"), deleted=True)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    # ok: learned (and ``recommendation`` set unless the user has a later event in the same
    # batch: see handle_events) · dlq: invalid · duplicate: event_id seen in the window ·
    # replayed: offset already reflected in the state (redelivery after a restart): skipped ·
    # halted: not applied, the processor has stopped (``StreamProcessor.halted``) ·
    # forgotten: an event of a forgotten user from before the request (recstream.forget) ·
    # moved: its partition belongs to another worker now (several workers: not applied here,
    # the new owner reads it from the partition's committed state on).
    status: Literal["ok", "dlq", "duplicate", "replayed", "halted", "forgotten", "moved"]
    event: Event | None = None
    recommendation: Recommendation | None = None
    profile: np.ndarray | None = None
    dlq: dict[str, Any] | None = None
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    status: Literal["upserted", "unchanged", "deleted", "dlq", "replayed", "halted"]
    item: Item | None = None
    dlq: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ForgetOutcome:
    status: Literal["forgotten", "dlq", "replayed", "halted"]
    user_id: str | None = None
    dlq: dict[str, Any] | None = None


@dataclass
class Counters:
    """What the processor has seen, by kind (checkpointed with the stream state)."""

    events_by_type: Counter = field(default_factory=Counter)
    dlq_by_reason: Counter = field(default_factory=Counter)
    duplicates: int = 0
    replayed: int = 0
    recommendations: int = 0
    items_upserted: int = 0
    items_deleted: int = 0
    items_encoded: int = 0

    @property
    def events(self) -> int:
        return sum(self.events_by_type.values())
