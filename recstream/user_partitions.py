"""Users owned by partition: what a worker persists for each partition of the events topic.

Events are keyed by ``user_id``, so all of a user's events are in one partition of
``<prefix>.events`` and one worker of the group (the partition's owner) holds the user. With
``RECSTREAM_STATE_STORE=kafka`` each partition's user state lives in the same-numbered partition
of the compacted topic ``<prefix>.user-state``:

* ``u:<user_id>`` — one user: :meth:`~recstream.recommender.Recommender.export_user` plus the
  hashes of the user's recent event ids (dedup survives a move); a tombstone when the user was
  forgotten;
* ``f:<hash>`` — a forgotten user's ledger entry (:class:`recstream.forget.ForgottenUsers`: a
  hash and a time, no id), so a replayed old event of the user stays refused;
* ``p:<partition>`` — the partition's marker: the next events offset the records reflect and
  the events learned from the partition, all owners together.

The owner writes each flush (its partition's changed users, its item delta and the marker) in
**one Kafka transaction** (streams/partition_state.py), so a reader with
``isolation_level=read_committed`` sees a partition's users, marker and item deltas move
together or not at all. A new owner fences the old one (same transactional id per partition),
reads the partition to its end and resumes the events at the marker: nothing lost, nothing
learned twice. Compaction keeps the latest record per key, so the topic holds one record per
user however long the stream runs.

This module is the pure part: which users changed in which partition, the record format, and
how a partition's records become state again. Values are JSON (zlib-compressed): a state topic
is input like any other, and unpickling it would run whatever someone wrote there.

>>> book = PartitionBook()
>>> book.own(3, position=None)
>>> book.learned(3, "u1", "e1", "view")
>>> sorted(book.dirty(3)), book.ledger(3).events
(['u1'], 1)
>>> marker = book.marker_record(3, position=17)
>>> marker[0], decode_value(marker[1])["position"]
(b'p:3', 17)
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "PartitionBook",
    "PartitionLedger",
    "RestoredPartition",
    "decode_value",
    "encode_value",
    "restore_partition",
]

FORMAT = 1
USER = b"u:"
FORGOTTEN = b"f:"
MARKER = b"p:"
RECENT_IDS = 64  # event-id hashes kept per user: a producer's retry comes within a few events


# -- values: plain data with numpy arrays, as compressed JSON ---------------------------------
def _plain(value: Any) -> Any:
    """JSON's ``default``: what it cannot write itself (called for those objects only, so a
    user's record costs one C-level pass, not a Python call per list element)."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {
            "__nd__": data.dtype.str,
            "shape": list(data.shape),
            "b64": base64.b64encode(data.tobytes()).decode(),
        }
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted(value, key=repr)}
    if isinstance(value, deque):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in a state record")


_DTYPES = {"<f4", "<f8", "<i4", "<i8", "<u8", "|b1", "<u4", "|u1"}


def _unplain(value: Any) -> Any:
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__nd__" in value:
        dtype = value["__nd__"]
        if dtype not in _DTYPES:
            raise ValueError(f"array of unsupported dtype {dtype!r}")
        raw = base64.b64decode(value["b64"], validate=True)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(value["shape"]).copy()
    if "__set__" in value:
        return {_hashable(_unplain(v)) for v in value["__set__"]}
    return {k: _unplain(v) for k, v in value.items()}


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def encode_value(value: Any) -> bytes:
    """Plain data (dicts with string keys, lists, sets, tuples, numbers, strings, numpy arrays)
    as bytes; tuples come back as lists.

    >>> v = {"a": np.arange(3, dtype=np.float32), "s": {1, 2}, "t": (1, "x")}
    >>> back = decode_value(encode_value(v))
    >>> back["a"].tolist(), back["s"], back["t"]
    ([0.0, 1.0, 2.0], {1, 2}, [1, 'x'])
    """
    raw = json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain).encode()
    return zlib.compress(raw, 1)


def decode_value(data: bytes, max_bytes: int = 64 << 20) -> Any:
    """The inverse of :func:`encode_value`; ``ValueError`` for anything else (bounded size)."""
    try:
        d = zlib.decompressobj()
        raw = d.decompress(data, max_bytes)
        if d.unconsumed_tail:
            raise ValueError(f"state record larger than {max_bytes} bytes")
        return _unplain(json.loads(raw))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ValueError(f"not a state record: {exc}") from None


# -- the owner's bookkeeping --------------------------------------------------------------
@dataclass
class PartitionLedger:
    """One owned partition: what changed since the last flush, and its running counts."""

    partition: int
    events: int = 0  # events learned from this partition, all owners together
    by_type: Counter = field(default_factory=Counter)
    dirty: set[str] = field(default_factory=set)  # users changed since the last flush
    dropped: set[str] = field(default_factory=set)  # users to tombstone (forgotten)
    forgotten: dict[str, float] = field(default_factory=dict)  # ledger entries to write
    users: set[str] = field(default_factory=set)  # every user of the partition in memory
    recent_ids: dict[str, deque] = field(default_factory=dict)  # user -> event-id hashes
    deltas: list[dict] = field(default_factory=list)  # item deltas since the last flush
    flushes: int = 0


class PartitionBook:
    """The partitions this worker owns and, for each, what the next flush must write."""

    def __init__(self) -> None:
        self._ledgers: dict[int, PartitionLedger] = {}

    def own(self, partition: int, position: int | None = None) -> None:
        """Start owning ``partition`` (empty; :meth:`adopt` after a restore)."""
        self._ledgers.setdefault(partition, PartitionLedger(partition))

    def adopt(self, restored: RestoredPartition) -> PartitionLedger:
        ledger = PartitionLedger(
            restored.partition, events=restored.events, by_type=Counter(restored.by_type)
        )
        ledger.users = set(restored.users)
        ledger.recent_ids = {
            u: deque(ids, maxlen=RECENT_IDS) for u, ids in restored.recent_ids.items()
        }
        self._ledgers[restored.partition] = ledger
        return ledger

    def release(self, partition: int) -> PartitionLedger | None:
        """Stop owning ``partition``; returns its ledger (its users leave memory)."""
        return self._ledgers.pop(partition, None)

    def owns(self, partition: int) -> bool:
        return partition in self._ledgers

    @property
    def partitions(self) -> list[int]:
        return sorted(self._ledgers)

    def ledger(self, partition: int) -> PartitionLedger:
        return self._ledgers[partition]

    def dirty(self, partition: int) -> set[str]:
        return self._ledgers[partition].dirty

    def learned(self, partition: int, user_id: str, id_hash: int | str, event_type: str) -> None:
        """One event learned: the user changed, the partition's counts moved."""
        ledger = self._ledgers[partition]
        ledger.events += 1
        ledger.by_type[event_type] += 1
        ledger.dirty.add(user_id)
        ledger.users.add(user_id)
        ledger.dropped.discard(user_id)
        ids = ledger.recent_ids.get(user_id)
        if ids is None:
            ids = ledger.recent_ids[user_id] = deque(maxlen=RECENT_IDS)
        ids.append(id_hash)

    def remember(self, partition: int, user_id: str, ids: Iterable[int | str]) -> None:
        """A user of the partition back in memory (unchanged: nothing to flush)."""
        ledger = self._ledgers[partition]
        ledger.users.add(user_id)
        ledger.recent_ids[user_id] = deque(ids, maxlen=RECENT_IDS)

    def forgot(self, partition: int, user_id: str, key_hash: str, at: float) -> None:
        ledger = self._ledgers[partition]
        ledger.dirty.discard(user_id)
        ledger.users.discard(user_id)
        ledger.recent_ids.pop(user_id, None)
        ledger.dropped.add(user_id)
        ledger.forgotten[key_hash] = at

    def add_delta(self, partition: int, delta: dict) -> None:
        self._ledgers[partition].deltas.append(delta)

    def has_changes(self, partition: int) -> bool:
        ledger = self._ledgers[partition]
        return bool(ledger.dirty or ledger.dropped or ledger.forgotten or ledger.deltas)

    def user_records(self, partition: int, export_user: Any) -> list[tuple[bytes, bytes | None]]:
        """The changed users' records (``export_user(user_id) -> dict | None``) and the
        tombstones of forgotten ones; call with the state unchanged until it returns."""
        ledger = self._ledgers[partition]
        out: list[tuple[bytes, bytes | None]] = []
        for user_id in sorted(ledger.dirty):
            data = export_user(user_id)
            if data is None:
                continue
            ids = list(ledger.recent_ids.get(user_id, ()))
            out.append((USER + user_id.encode(), encode_value({"user": data, "ids": ids})))
        out += [(USER + u.encode(), None) for u in sorted(ledger.dropped)]
        out += [
            (FORGOTTEN + h.encode(), encode_value({"at": at}))
            for h, at in sorted(ledger.forgotten.items())
        ]
        return out

    def marker_record(
        self, partition: int, position: int | None, forget_position: int | None = None
    ) -> tuple[bytes, bytes]:
        ledger = self._ledgers[partition]
        value = {
            "format": FORMAT,
            "partition": partition,
            "position": position,
            "forget_position": forget_position,
            "events": ledger.events,
            "by_type": dict(ledger.by_type),
        }
        return MARKER + str(partition).encode(), encode_value(value)

    def take_deltas(self, partition: int) -> list[dict]:
        ledger = self._ledgers[partition]
        deltas, ledger.deltas = ledger.deltas, []
        return deltas

    def flushed(self, partition: int) -> None:
        """The flush's transaction committed: start collecting the next one."""
        ledger = self._ledgers[partition]
        ledger.dirty.clear()
        ledger.dropped.clear()
        ledger.forgotten.clear()
        ledger.flushes += 1

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            str(p): {"events_processed": lg.events, "users": len(lg.users), "flushes": lg.flushes}
            for p, lg in sorted(self._ledgers.items())
        }


# -- a partition's records become state again ----------------------------------------------
@dataclass
class RestoredPartition:
    partition: int
    position: int | None = None  # next events offset; None: never flushed (read from start)
    forget_position: int | None = None  # next offset of the forget topic's partition
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    users: dict[str, dict] = field(default_factory=dict)  # user_id -> export_user data
    recent_ids: dict[str, list] = field(default_factory=dict)
    forgotten: dict[str, float] = field(default_factory=dict)  # user hash -> time
    bad_records: int = 0


def restore_partition(
    partition: int, records: Iterable[tuple[bytes | None, bytes | None]]
) -> RestoredPartition:
    """The state of ``partition`` from its records in log order (committed ones only: the
    reader uses ``read_committed``). The latest record per key wins, as after compaction; a
    tombstone removes the user. Unreadable records are counted and skipped.

    >>> recs = [(b"u:a", encode_value({"user": {"n": 1}, "ids": [5]})),
    ...         (b"u:b", encode_value({"user": {"n": 2}, "ids": []})),
    ...         (b"u:a", None),
    ...         (b"p:0", encode_value({"format": 1, "position": 9, "events": 3,
    ...                                "by_type": {"view": 3}}))]
    >>> r = restore_partition(0, recs)
    >>> sorted(r.users), r.position, r.events
    (['b'], 9, 3)
    """
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        if key is not None:
            latest[key] = value
    out = RestoredPartition(partition)
    for key, value in latest.items():
        if value is None:
            continue
        try:
            data = decode_value(value)
            if key.startswith(USER):
                user_id = key[len(USER) :].decode()
                out.users[user_id] = data["user"]
                out.recent_ids[user_id] = list(data.get("ids", ()))
            elif key.startswith(FORGOTTEN):
                out.forgotten[key[len(FORGOTTEN) :].decode()] = float(data["at"])
            elif key.startswith(MARKER):
                if data.get("format") != FORMAT:
                    raise ValueError(f"marker format {data.get('format')!r}")
                out.position = None if data["position"] is None else int(data["position"])
                forget = data.get("forget_position")
                out.forget_position = None if forget is None else int(forget)
                out.events = int(data["events"])
                out.by_type = {str(k): int(v) for k, v in data["by_type"].items()}
            else:
                raise ValueError(f"unknown key {key[:40]!r}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            out.bad_records += 1
    return out


def merge_counts(parts: Mapping[int, PartitionLedger]) -> Counter:
    total: Counter = Counter()
    for ledger in parts.values():
        total.update(ledger.by_type)
    return total
