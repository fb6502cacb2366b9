"""Small, pure bookkeeping for the streaming worker: dedup, offsets, latency, online accuracy.

None of these classes know about Kafka, Faust or Redis: the worker (``streams/``) feeds them
plain values, which keeps them unit-testable and lets the checkpoint pickle them as they are.

>>> d = DedupWindow(capacity=2)
>>> d.add("e1"), d.add("e1"), d.add("e2"), d.add("e3"), d.add("e1")
(True, False, True, True, True)
>>> p = Positions()
>>> p.accept("t", 0, 5), p.accept("t", 0, 5), p.accept("t", 0, 4), p.next_offset("t", 0)
(True, False, False, 6)
>>> r = OnlineRanking(k=3)
>>> r.observe_purchase("u1", "i1")  # no list shown to u1 yet: not evaluated
>>> r.remember("u1", ["i4", "i1", "i2"])
>>> round(r.observe_purchase("u1", "i1"), 3), r.hits, r.evaluated, round(r.ndcg, 3)
(0.631, 1, 1, 0.631)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from recstream.events import Item

__all__ = [
    "DedupWindow",
    "EncodeQueue",
    "LatencyWindow",
    "OnlineRanking",
    "Positions",
    "RateMeter",
]


def id_hash(event_id: str) -> int:
    """The 64-bit digest :class:`DedupWindow` remembers ``event_id`` by."""
    return _id_hash(event_id)


def _id_hash(event_id: str) -> int:
    # 64-bit digests instead of the strings: a million ids cost ~60 MB as Python ints in a set
    # (vs ~150 MB as strings) and 8 MB in a checkpoint. A false "duplicate" needs a 64-bit
    # collision inside the window: ~n²/2⁶⁵ ≈ 3e-8 for a million ids.
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


class DedupWindow:
    """The last ``capacity`` event ids; :meth:`add` says whether an id is new.

    Bounded memory: the oldest id is forgotten when the window is full, so a duplicate that
    arrives more than ``capacity`` events after its original is not caught (Kafka redeliveries
    come within a checkpoint interval, far below the default million).
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self._ring = np.zeros(capacity, dtype=np.uint64)  # insertion order, for eviction
        self._next = 0  # ring slot of the next insertion
        self._size = 0
        self._set: set[int] = set()

    def __len__(self) -> int:
        return self._size

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and _id_hash(event_id) in self._set

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; True when it was not in the window (process it)."""
        h = _id_hash(event_id)
        if h in self._set:
            return False
        self._insert(h)
        return True

    def add_hash(self, h: int) -> bool:
        """:meth:`add` for an id already hashed (:func:`id_hash`): restoring a moved user."""
        h = int(h)
        if h in self._set:
            return False
        self._insert(h)
        return True

    def _insert(self, h: int) -> None:
        if self._size == self.capacity:
            self._set.discard(int(self._ring[self._next]))
        else:
            self._size += 1
        self._ring[self._next] = h
        self._next = (self._next + 1) % self.capacity
        self._set.add(h)

    def resized(self, capacity: int) -> DedupWindow:
        """A window of ``capacity`` holding the newest ids of this one (a changed setting)."""
        out = DedupWindow(capacity)
        oldest_first = [(self._next - self._size + i) % self.capacity for i in range(self._size)]
        for slot in oldest_first[-capacity:]:
            out._insert(int(self._ring[slot]))
        return out

    def __getstate__(self) -> dict:
        # The set is rebuilt from the ring on load (pickling it too would double the size), and
        # a window that is not full yet saves only its filled slots, not a million zeros.
        return {
            "capacity": self.capacity,
            "ring": self._ring[: self._size].copy(),
            "next": self._next,
            "size": self._size,
        }

    def __setstate__(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self._ring = np.zeros(self.capacity, dtype=np.uint64)
        self._size = state["size"]
        self._ring[: self._size] = state["ring"][: self._size]
        self._next = state["next"]
        self._set = {int(h) for h in self._ring[: self._size]}


class Positions:
    """Next offset to process per (topic, partition): what the model state reflects.

    The worker calls :meth:`accept` for every message before touching any state. A message
    below the position was already reflected (a redelivery after a restart or rebalance) and
    is skipped; otherwise the position moves past it. Saved with the model in every checkpoint,
    these are the offsets a restarted worker resumes from.
    """

    def __init__(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        self._next: dict[tuple[str, int], int] = dict(offsets or {})

    def accept(self, topic: str, partition: int, offset: int) -> bool:
        key = (topic, partition)
        if offset < self._next.get(key, 0):
            return False
        self._next[key] = offset + 1
        return True

    def next_offset(self, topic: str, partition: int) -> int | None:
        return self._next.get((topic, partition))

    def reset(self, topic: str, partition: int, offset: int) -> None:
        """Resume the partition at ``offset`` (see :mod:`recstream.offsets`: a log that no
        longer matches the position)."""
        self._next[(topic, partition)] = offset

    def discard(self, topic: str, partition: int) -> None:
        """Forget the partition's position (it moved to another worker, or its state was
        reloaded without one: read from the log's start)."""
        self._next.pop((topic, partition), None)

    def as_dict(self) -> dict[tuple[str, int], int]:
        return dict(self._next)

    def to_json(self) -> dict[str, dict[str, int]]:
        """``{"topic": {"partition": next_offset}}`` (JSON keys are strings)."""
        out: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in sorted(self._next.items()):
            out.setdefault(topic, {})[str(partition)] = offset
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, int]]) -> Positions:
        return cls({(t, int(p)): int(o) for t, parts in data.items() for p, o in parts.items()})


class LatencyWindow:
    """The last ``size`` latencies (seconds), for percentiles in the metrics snapshot.

    A sliding window rather than a Prometheus histogram: the snapshot reports exact p50/p99 of
    recent traffic, while the histogram (bucketed, cumulative) is what Prometheus aggregates.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def observe(self, seconds: float) -> None:
        self._values.append(seconds)
        self.count += 1

    def percentiles_ms(self, *qs: float) -> dict[str, float | None]:
        """``{"p50": ..., "p99": ...}`` in milliseconds; ``None`` before any observation."""
        qs = qs or (50.0, 99.0)
        if not self._values:
            return {f"p{q:g}": None for q in qs}
        values = np.fromiter(self._values, dtype=np.float64)
        return {f"p{q:g}": round(float(np.percentile(values, q)) * 1000.0, 3) for q in qs}


class OnlineRanking:
    """Prequential hr@K / ndcg@K on live purchases, against the list the user was last shown.

    Test-then-learn on the served lists: when a user purchases an item, the evaluation asks
    whether that item was in the last recommendation list published for the user (before the
    purchase is learned). This measures what the live system actually showed, so it differs
    from the offline protocol of ``recstream evaluate`` (which re-ranks unseen items). Users
    with no list yet are not evaluated. At most ``max_users`` lists are kept (LRU).
    """

    def __init__(self, k: int = 10, max_users: int = 200_000) -> None:
        self.k = k
        self.max_users = max_users
        self._last: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.evaluated = 0
        self.hits = 0
        self.ndcg_sum = 0.0

    def observe_purchase(self, user_id: str, item_id: str) -> float | None:
        """Score one purchase; returns its NDCG (0 for a miss), or ``None`` if not evaluated."""
        shown = self._last.get(user_id)
        if shown is None:
            return None
        self.evaluated += 1
        try:
            rank = shown.index(item_id)
        except ValueError:
            return 0.0
        self.hits += 1
        gain = 1.0 / math.log2(rank + 2)
        self.ndcg_sum += gain
        return gain

    def remember(self, user_id: str, item_ids: Iterable[str]) -> None:
        self._last[user_id] = tuple(item_ids)[: self.k]
        self._last.move_to_end(user_id)
        while len(self._last) > self.max_users:
            self._last.popitem(last=False)

    def last(self, user_id: str) -> tuple[str, ...] | None:
        return self._last.get(user_id)

    def forget(self, user_id: str) -> None:
        """Drop the user's last list (the hit counts are anonymous totals)."""
        self._last.pop(user_id, None)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.evaluated if self.evaluated else None

    @property
    def ndcg(self) -> float | None:
        return self.ndcg_sum / self.evaluated if self.evaluated else None


@dataclass
class _Pending:
    item: Item
    in_flight: bool = False


@dataclass
class EncodeQueue:
    """Catalogue items waiting for (or in) a BERT encode batch, keyed by item id.

    A newer version of an item replaces the queued one; vectors computed from text that has
    changed (or an item deleted) while the batch was in flight are dropped by :meth:`complete`,
    so a slow encoder never overwrites a fresh vector with a stale one.
    """

    _pending: dict[str, _Pending] = field(default_factory=dict)
    # Counted, not summed: the items agent asks for ``waiting`` after every upsert, and a
    # catalogue load of n items must not cost n² on the event loop.
    _in_flight: int = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def waiting(self) -> int:
        """Queued and not yet handed to the encoder."""
        return len(self._pending) - self._in_flight

    def put(self, item: Item) -> None:
        self.discard(item.item_id)
        self._pending[item.item_id] = _Pending(item)

    def discard(self, item_id: str) -> None:
        p = self._pending.pop(item_id, None)
        if p is not None and p.in_flight:
            self._in_flight -= 1

    def take(self, n: int) -> list[Item]:
        """Up to ``n`` waiting items, oldest first, marked in flight."""
        batch = []
        for p in self._pending.values():
            if len(batch) >= n:
                break
            if not p.in_flight:
                p.in_flight = True
                self._in_flight += 1
                batch.append(p.item)
        return batch

    def complete(self, batch: list[Item]) -> list[int]:
        """Forget the encoded ``batch``; returns the positions in it whose vectors are current."""
        keep = []
        for i, item in enumerate(batch):
            p = self._pending.get(item.item_id)
            if p is not None and p.in_flight and p.item.text_hash == item.text_hash:
                self.discard(item.item_id)
                keep.append(i)
        return keep

    def fail(self, batch: list[Item]) -> None:
        """Put a failed batch back in the queue (still-current items only)."""
        for item in batch:
            p = self._pending.get(item.item_id)
            if p is not None and p.in_flight and p.item.text_hash == item.text_hash:
                p.in_flight = False
                self._in_flight -= 1

    def items(self) -> list[Item]:
        """Everything queued or in flight (what a checkpoint must re-queue after a restart)."""
        return [p.item for p in self._pending.values()]


class RateMeter:
    """Events per second between two :meth:`rate` calls (one per metrics snapshot)."""

    def __init__(self, total: int = 0, clock=time.monotonic) -> None:
        # ``total`` is the count restored from a checkpoint, so the first rate is not inflated.
        self._clock = clock
        self._t = clock()
        self._n = total

    def rate(self, total: int) -> float:
        now = self._clock()
        elapsed = now - self._t
        rate = (total - self._n) / elapsed if elapsed > 0 else 0.0
        self._t, self._n = now, total
        return round(rate, 3)
