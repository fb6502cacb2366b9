"""Idle users leave memory and come back with their next event (several workers).

A worker that runs for months sees millions of users, most of whom return rarely. With
``RECSTREAM_USER_TTL_S`` a user whose last event is older than the TTL (in *stream* time: the
newest event time the worker has seen, so a replayed backlog ages users as it happened) is
written to a local :class:`IdleUserStore` and dropped from the model; their next event brings
them back first, exactly as they were. Only users whose state is already committed to
``<prefix>.user-state`` are evicted (not changed since the last flush), so the local store is a
cache of Kafka's copy, never the only one: a worker that loses its disk loses nothing.

The store is one SQLite file per worker slot (stdlib, no server; one writer, the worker), emptied
at start: the truth after a restart is the user-state topic.

>>> store = IdleUserStore(":memory:")
>>> store.put(3, "u1", b"state")
>>> "u1" in store.users(3), store.take(3, "u1"), store.take(3, "u1")
(True, b'state', None)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from recstream.user_partitions import PartitionBook, decode_value, encode_value

__all__ = ["IdleUserStore", "bring_back", "evict_idle"]


class IdleUserStore:
    """``(partition, user_id) -> record bytes`` in one SQLite file (or ``":memory:"``)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).unlink(missing_ok=True)  # a previous run's copy is stale: Kafka has it
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; durability is Kafka's job, speed is ours.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS users "
            "(partition INTEGER, user_id TEXT, record BLOB, PRIMARY KEY (partition, user_id))"
        )
        self._index: dict[int, set[str]] = {}  # who is here, without a query per event

    def put(self, partition: int, user_id: str, record: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?)", (partition, user_id, record)
        )
        self._index.setdefault(partition, set()).add(user_id)

    def users(self, partition: int) -> set[str]:
        return self._index.get(partition, set())

    def take(self, partition: int, user_id: str) -> bytes | None:
        """The user's record, removed from the store (None when not here)."""
        if user_id not in self._index.get(partition, ()):
            return None
        row = self._db.execute(
            "SELECT record FROM users WHERE partition = ? AND user_id = ?", (partition, user_id)
        ).fetchone()
        self._db.execute(
            "DELETE FROM users WHERE partition = ? AND user_id = ?", (partition, user_id)
        )
        self._index[partition].discard(user_id)
        return None if row is None else bytes(row[0])

    def drop_partition(self, partition: int) -> int:
        """The partition moved away: its idle users are the new owner's (from Kafka)."""
        self._db.execute("DELETE FROM users WHERE partition = ?", (partition,))
        return len(self._index.pop(partition, ()))

    def __len__(self) -> int:
        return sum(len(users) for users in self._index.values())

    def close(self) -> None:
        self._db.close()


def evict_idle(
    recommender: Any, book: PartitionBook, partition: int, store: IdleUserStore, before_ts: float
) -> int:
    """Move the partition's users idle since ``before_ts`` (event time) and unchanged since the
    last flush from the model to ``store``; returns how many."""
    ledger = book.ledger(partition)
    idle = set(recommender.idle_users(before_ts=before_ts)) & ledger.users
    moved = 0
    for user_id in sorted(idle - ledger.dirty):
        data = recommender.export_user(user_id)
        if data is None:
            continue
        ids = list(ledger.recent_ids.pop(user_id, ()))
        store.put(partition, user_id, encode_value({"user": data, "ids": ids}))
        recommender.drop_user(user_id)
        ledger.users.discard(user_id)
        moved += 1
    return moved


def bring_back(
    recommender: Any,
    book: PartitionBook,
    partition: int,
    user_ids: Iterable[str],
    store: IdleUserStore,
    restore_ids: Callable[[list], None],
) -> int:
    """Before a partition's events are learned: users of theirs who were evicted come back
    (with their recent event ids, for dedup); returns how many."""
    ledger = book.ledger(partition)
    parked = store.users(partition)
    back = 0
    for user_id in user_ids:
        if user_id in ledger.users or user_id not in parked:
            continue
        record = store.take(partition, user_id)
        if record is None:
            continue
        data = decode_value(record)
        recommender.import_user(user_id, data["user"])
        ids = list(data.get("ids", ()))
        restore_ids(ids)
        book.remember(partition, user_id, ids)
        back += 1
    return back
