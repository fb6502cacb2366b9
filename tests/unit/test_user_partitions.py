"""Users owned by partition (recstream.user_partitions): records, and state that comes back."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from recstream.events import Event, Item
from recstream.online import id_hash
from recstream.recommender import Recommender
from recstream.user_partitions import (
    PartitionBook,
    decode_value,
    encode_value,
    restore_partition,
)


def _model(order: str = "abcdefgh") -> Recommender:
    rec = Recommender(seed=7)
    for i in order:
        rec.upsert_item(Item(i, title=f"item {i}"))
    rec.track_item_deltas()
    return rec


STREAM = [
    ("u1", "a", "view"),
    ("u1", "b", "purchase"),
    ("u2", "a", "click"),
    ("u2", "c", "purchase"),
    ("u1", "d", "click"),
    ("u3", "b", "view"),
]


def test_a_partition_moves_to_another_worker_exactly():
    """Worker A learns a partition's users and flushes them; worker B, which learned the same
    item side through A's delta, restores them from the records alone and recommends the
    same lists, for every user."""
    a, b = _model(), _model()
    book = PartitionBook()
    book.own(0)
    for n, (user, item, kind) in enumerate(STREAM):
        a.learn(Event(f"e{n}", user, item, kind, float(n)))
        book.learned(0, user, id_hash(f"e{n}"), kind)
    book.add_delta(0, a.item_delta())
    records = book.user_records(0, a.export_user)
    records.append(book.marker_record(0, position=len(STREAM)))
    # through bytes, as on the topic
    records = [(k, None if v is None else bytes(v)) for k, v in records]

    for delta in book.take_deltas(0):
        b.apply_item_delta(decode_value(encode_value(delta)))
    restored = restore_partition(0, records)
    assert restored.position == len(STREAM) and restored.events == len(STREAM)
    assert restored.by_type == {"view": 2, "purchase": 2, "click": 2}
    assert sorted(restored.users) == ["u1", "u2", "u3"]
    for user_id, data in restored.users.items():
        b.import_user(user_id, data)
    for user in ("u1", "u2", "u3"):
        assert [r.item_id for r in a.recommend(user, 5)] == [
            r.item_id for r in b.recommend(user, 5)
        ]
    assert restored.recent_ids["u1"] == [id_hash("e0"), id_hash("e1"), id_hash("e4")]


def test_latest_record_wins_and_tombstones_remove():
    book = PartitionBook()
    book.own(2)
    book.learned(2, "u1", 1, "view")
    book.learned(2, "u2", 2, "view")
    first = book.user_records(2, lambda u: {"n": 1, "u": u})
    book.flushed(2)
    book.learned(2, "u1", 3, "click")
    book.forgot(2, "u2", "00ff", 12.5)
    second = book.user_records(2, lambda u: {"n": 2, "u": u})
    restored = restore_partition(2, first + second + [book.marker_record(2, 40)])
    assert restored.users == {"u1": {"n": 2, "u": "u1"}}
    assert restored.forgotten == {"00ff": 12.5}
    assert restored.position == 40 and restored.events == 3


def test_changes_are_taken_once_per_flush():
    book = PartitionBook()
    book.own(1)
    assert not book.has_changes(1)
    book.learned(1, "u1", 1, "view")
    assert book.has_changes(1)
    book.flushed(1)
    assert not book.has_changes(1) and book.ledger(1).events == 1
    assert book.summary() == {"1": {"events_processed": 1, "users": 1, "flushes": 1}}


def test_a_partition_never_flushed_has_no_position():
    assert restore_partition(0, []).position is None


def test_unreadable_records_are_counted_not_fatal():
    good = (b"u:a", encode_value({"user": {"x": 1}, "ids": []}))
    restored = restore_partition(
        0, [(b"u:b", b"garbage"), (b"zz", encode_value({})), good, (None, b"x")]
    )
    assert list(restored.users) == ["a"] and restored.bad_records == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"__nd__": "|O", "shape": [1], "b64": ""},  # object arrays would unpickle
        {"__nd__": "<f4", "shape": [3], "b64": "!!!"},
    ],
)
def test_decode_refuses_what_it_did_not_write(payload):
    import json
    import zlib

    with pytest.raises(ValueError):
        decode_value(zlib.compress(json.dumps(payload).encode()))


def test_decode_is_bounded():
    big = encode_value({"a": "x" * 10_000})
    with pytest.raises(ValueError, match="larger than"):
        decode_value(big, max_bytes=1000)


def test_values_keep_numpy_arrays_and_sets():
    value = {"f": np.array([[1.5, 2.0]], dtype=np.float32), "s": {3, 1}, "q": deque([1, 2])}
    back = decode_value(encode_value(value))
    assert back["f"].dtype == np.float32 and back["f"].shape == (1, 2)
    assert back["s"] == {1, 3} and back["q"] == [1, 2]


def test_what_json_cannot_hold_is_refused_not_mangled():
    with pytest.raises(TypeError):
        encode_value({"m": {(1, 2): "x"}})  # tuple keys
    with pytest.raises(TypeError, match="cannot store"):
        encode_value({"x": object()})
