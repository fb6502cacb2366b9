"""Several workers in one process: users hashed over shards that exchange item-side deltas.

A group of workers consumes ``recstream.events`` keyed by ``user_id``, so each user's events
reach exactly one worker, which owns the user's state. The item side (co-visitation,
popularity, fresh-item marks, MF item factors) is learned by every worker from its own users and
exchanged as deltas keyed by item id (:mod:`recstream.deltas`). :class:`ShardedRecommender`
replays that in one process, so the quality of a group is known before deploying it
(``recstream evaluate DATA --shards N --sync-interval T``):

* ``N`` :class:`~recstream.recommender.Recommender` s with the same seed and configuration;
  every one receives every catalogue upsert and item vector (they read the items topic);
* an event goes to shard :func:`partition_for` ``(user_id, N)``: Kafka's default partitioner
  (murmur2 of the key's UTF-8 bytes, sign bit cleared, modulo N; aiokafka, which Faust uses,
  and the Java client agree), i.e. shard = partition, one partition per worker;
* every ``T`` events (counted over the whole stream) the shards exchange: each exports its
  delta, the deltas are combined (what the owner of an item does with the deltas it receives)
  and each shard merges the combination less its own part. Between exchanges a shard sees its
  own users' item-side changes at once and the other shards' at most ``T`` events late.

With one shard nothing is exchanged and the numbers are exactly the single model's (a unit test
and docs/evaluation/sharding.md check it).

>>> from recstream.events import Event, Item
>>> group = ShardedRecommender(shards=2, sync_interval=2)
>>> for i in "abc":
...     _ = group.upsert_item(Item(i))
>>> [partition_for(u, 2) for u in ("u1", "u5")]
[0, 1]
>>> for n, (u, i) in enumerate([("u5", "a"), ("u5", "b"), ("u1", "a")]):
...     group.learn(Event(f"e{n}", u, i, "purchase", float(n)))
>>> group.syncs, [r.item_id for r in group.recommend("u1", k=1)]  # u5's a-b pair reached u1
(1, ['b'])
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from recstream.deltas import combine, is_empty, nbytes, subtract
from recstream.events import Event, Item, ScoredItem
from recstream.recommender import Recommender, RecommenderConfig

__all__ = ["ShardedRecommender", "murmur2", "partition_for"]

_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (as the Java client computes it, a signed 32-bit int).

    >>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"abc")
    (-973932308, -790332482, 479470107)
    """
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _MASK
        k ^= k >> 24
        k = (k * m) & _MASK
        h = ((h * m) & _MASK) ^ k
    rest = length & 3
    if rest:
        h ^= int.from_bytes(data[tail:], "little")
        h = (h * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(user_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``user_id`` (UTF-8 bytes)."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


class ShardedRecommender:
    """``shards`` recommenders that own disjoint users and share item-side state (module doc).

    It has the interface :func:`recstream.evaluate.evaluate` drives (``upsert_item``,
    ``set_item_vectors``, ``learn``, ``recommend``), so the protocol is the same code path.

    Parameters
    ----------
    shards
        Number of workers (= partitions of the events topic).
    sync_interval
        Exchange item deltas after every ``sync_interval`` events of the whole stream.
    config, seed, exclude, allow_unknown_items
        For every shard's :class:`~recstream.recommender.Recommender`.
    """

    def __init__(
        self,
        shards: int,
        sync_interval: int,
        *,
        config: RecommenderConfig | None = None,
        seed: int = 42,
        exclude: str = "purchased",
        allow_unknown_items: bool = False,
    ) -> None:
        if shards < 1 or sync_interval < 1:
            raise ValueError("shards and sync_interval must be >= 1")
        self.shards = [
            Recommender(config, seed=seed, exclude=exclude, allow_unknown_items=allow_unknown_items)
            for _ in range(shards)
        ]
        for shard in self.shards:
            shard.track_item_deltas()
        self.config = self.shards[0].config
        self.sync_interval = sync_interval
        self.n_events = 0
        self.syncs = 0
        self.sync_seconds = 0.0
        self._delta_items = 0  # item entries exported, summed over shards and exchanges
        self._delta_pairs = 0  # co-visitation pairs exported, likewise
        self._delta_bytes = 0  # their size (recstream.deltas.nbytes), likewise
        self._owner: dict[str, int] = {}  # user -> shard, memoised (murmur2 is pure Python)

    @property
    def model_version(self) -> str:
        return f"{self.shards[0].model_version}-x{len(self.shards)}"

    def shard_of(self, user_id: str) -> int:
        shard = self._owner.get(user_id)
        if shard is None:
            shard = self._owner[user_id] = partition_for(user_id, len(self.shards))
        return shard

    # -- what every worker reads: the catalogue ---------------------------------------------
    def upsert_item(self, item: Item) -> bool:
        return any([shard.upsert_item(item) for shard in self.shards])

    def delete_item(self, item_id: str) -> None:
        for shard in self.shards:
            shard.delete_item(item_id)

    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        for shard in self.shards:
            shard.set_item_vectors(item_ids, vectors)

    # -- what one worker reads: its users' events -------------------------------------------
    def learn(self, event: Event) -> None:
        self.shards[self.shard_of(event.user_id)].learn(event)
        self.n_events += 1
        if self.n_events % self.sync_interval == 0:
            self.sync()

    def recommend(
        self, user_id: str, k: int = 10, *, exclude: str | None = None
    ) -> list[ScoredItem]:
        return self.shards[self.shard_of(user_id)].recommend(user_id, k, exclude=exclude)

    def forget_user(self, user_id: str) -> bool:
        return self.shards[self.shard_of(user_id)].forget_user(user_id)

    # -- the exchange -----------------------------------------------------------------------
    def sync(self) -> None:
        """Every shard exports its delta; each merges the combination less its own part."""
        start = time.perf_counter()
        deltas = [shard.item_delta() for shard in self.shards]
        self._delta_items += sum(len(d[c]["items"]) for d in deltas for c in ("covisit", "mf"))
        self._delta_pairs += sum(len(d["covisit"]["pair_w"]) for d in deltas)
        self._delta_bytes += sum(nbytes(d) for d in deltas)
        if len(self.shards) > 1:
            total = combine(deltas)
            for shard, own in zip(self.shards, deltas, strict=True):
                # (a shard whose users were idle sent nothing: it merges the total as it is)
                others = total if is_empty(own) else subtract(total, own)
                if not is_empty(others):
                    shard.apply_item_delta(others)
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - start

    def stats(self) -> dict[str, float | int]:
        """Exchange statistics for the evaluation's JSON."""
        syncs = max(self.syncs, 1)
        return {
            "shards": len(self.shards),
            "sync_interval": self.sync_interval,
            "syncs": self.syncs,
            "sync_seconds": self.sync_seconds,
            "delta_items_per_shard_sync": self._delta_items / syncs / len(self.shards),
            "delta_pairs_per_shard_sync": self._delta_pairs / syncs / len(self.shards),
            # what the workers send per event of the stream, all of them together
            "delta_bytes_per_event": self._delta_bytes / max(self.n_events, 1),
            "users_per_shard": [
                sum(1 for s in self._owner.values() if s == i) for i in range(len(self.shards))
            ],
        }
