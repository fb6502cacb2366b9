"""Item-vector records (recstream/item_vectors.py) and the group's vector policy
(recstream/vector_sync.py): what is installed, what waits, what an owner encodes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from recstream.events import Item
from recstream.item_vectors import (
    InvalidItemVector,
    ItemVector,
    decode_item_vector,
    encode_item_vector,
    item_vector_tombstone,
)
from recstream.recommender import Recommender
from recstream.vector_sync import VectorSync

HASH = "0123456789abcdef0123456789abcdef01234567"


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def record(item_id: str = "i1", **changes) -> dict:
    _, value = encode_item_vector(ItemVector(item_id, HASH, "m1", vec(0.6, 0.8, 0.0)))
    return {**json.loads(value), **changes}


def decode(body: dict, key: bytes | None = b"i1") -> ItemVector | None:
    return decode_item_vector(key, json.dumps(body).encode())


# -- records -----------------------------------------------------------------------------------
def test_round_trip_is_exact_float32_little_endian() -> None:
    v = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    key, value = encode_item_vector(ItemVector("sku-1 (blue)", HASH, "abc123", v))
    assert key == b"sku-1 (blue)"
    body = json.loads(value)
    assert body["dim"] == 384 and body["model"] == "abc123" and body["text_hash"] == HASH
    assert base64.b64decode(body["vector"]) == v.astype("<f4").tobytes()
    back = decode_item_vector(key, value)
    assert back is not None and back.item_id == "sku-1 (blue)" and back.dim == 384
    assert back.vector.dtype == np.float32 and np.array_equal(back.vector, v)
    back.vector[0] = 1.0  # a copy of its own: writable, the record untouched


def test_tombstone() -> None:
    key, value = item_vector_tombstone("i9")
    assert (key, value) == (b"i9", None)
    assert decode_item_vector(key, value) is None
    for bad_key, code in ((None, "tombstone"), (b"\xff", "bad_key"), (b"", "bad_key")):
        with pytest.raises(InvalidItemVector) as err:
            decode_item_vector(bad_key, None)
        assert err.value.code == code


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"dim": 4}, "bad_shape"),  # 3 values, dim says 4
        ({"dim": 0}, "bad_dim"),
        ({"dim": 10**6}, "bad_dim"),
        ({"dim": "3"}, "bad_field"),
        ({"dim": True}, "bad_dim"),
        ({"vector": "not base64!"}, "bad_vector"),
        ({"vector": base64.b64encode(b"\0" * 13).decode()}, "bad_shape"),
        ({"vector": base64.b64encode(vec(np.nan, 1, 0).tobytes()).decode()}, "not_finite"),
        ({"vector": base64.b64encode(vec(np.inf, 1, 0).tobytes()).decode()}, "not_finite"),
        ({"vector": base64.b64encode(vec(0, 0, 0).tobytes()).decode()}, "zero_vector"),
        ({"text_hash": "abc"}, "bad_field"),
        ({"item_id": ""}, "bad_field"),
        ({"item_id": "other"}, "key_mismatch"),
        ({"model": None}, "bad_field"),
        ({"v": 2}, "version"),
    ],
)
def test_invalid_records_say_why(body: dict, code: str) -> None:
    with pytest.raises(InvalidItemVector) as err:
        decode(record(**body))
    assert err.value.code == code and code in str(err.value)


def test_not_json_and_not_an_object() -> None:
    for value, code in ((b"\x00\xff", "not_json"), (b"{", "not_json"), (b"[1]", "not_object")):
        with pytest.raises(InvalidItemVector) as err:
            decode_item_vector(b"i1", value)
        assert err.value.code == code


def test_a_record_without_key_is_read_by_its_body() -> None:
    assert decode(record(), key=None).item_id == "i1"  # type: ignore[union-attr]


def test_encoding_refuses_what_no_reader_would_accept() -> None:
    with pytest.raises(InvalidItemVector, match="not_finite"):
        encode_item_vector(ItemVector("i1", HASH, "m", vec(np.nan, 1)))
    with pytest.raises(InvalidItemVector, match="bad_shape"):
        encode_item_vector(ItemVector("i1", HASH, "m", np.ones((2, 2), dtype=np.float32)))
    with pytest.raises(InvalidItemVector, match="text_hash"):
        encode_item_vector(ItemVector("i1", "nothex", "m", vec(1, 0)))


# -- the policy ----------------------------------------------------------------------------------
def item(item_id: str, title: str) -> Item:
    return Item(item_id, title=title)


def vector_of(it: Item, *values: float, model: str = "m1") -> tuple[bytes, bytes]:
    return encode_item_vector(ItemVector(it.item_id, it.text_hash, model, vec(*values)))


def upsert(it: Item) -> tuple[bytes, bytes]:
    return it.item_id.encode(), it.to_json()


def installed_vector(rec: Recommender, item_id: str) -> np.ndarray | None:
    return rec.index.vector(item_id)


@pytest.fixture
def sync() -> VectorSync:
    return VectorSync(Recommender(seed=1), model_id=lambda: "m1")


def test_vector_of_the_current_text_is_installed(sync: VectorSync) -> None:
    a = item("a", "Trail shoes")
    assert [i.item_id for i in sync.apply_items([upsert(a)])] == ["a"]
    assert sync.unencoded == {"a": a}
    assert sync.apply_vectors([vector_of(a, 1, 0)]) == {"installed": 1}
    assert np.allclose(installed_vector(sync.recommender, "a"), [1, 0])
    assert sync.counts["from_topic"] == 1 and not sync.unencoded
    # the same record again (a re-read): known, not counted twice
    assert sync.apply_vectors([vector_of(a, 1, 0)]) == {"known": 1}
    assert sync.counts["from_topic"] == 1


def test_vector_before_its_item_waits_for_it(sync: VectorSync) -> None:
    a = item("a", "Trail shoes")
    assert sync.apply_vectors([vector_of(a, 0, 1)]) == {"pending": 1}
    assert sync.recommender.stats()["n_vectors"] == 0 and "a" in sync.pending
    sync.apply_items([upsert(a)])
    assert np.allclose(installed_vector(sync.recommender, "a"), [0, 1]) and not sync.pending


def test_stale_vector_is_not_installed(sync: VectorSync) -> None:
    old, new = item("a", "Trail shoes"), item("a", "Trail shoes, waterproof")
    sync.apply_items([upsert(old), upsert(new)])
    assert sync.apply_vectors([vector_of(old, 1, 0)]) == {"pending": 1}  # old text: not now
    assert sync.recommender.stats()["n_vectors"] == 0
    assert sync.apply_vectors([vector_of(new, 0, 1)]) == {"installed": 1}
    assert np.allclose(installed_vector(sync.recommender, "a"), [0, 1]) and not sync.pending


def test_another_models_vectors_are_skipped(sync: VectorSync) -> None:
    a = item("a", "Trail shoes")
    sync.apply_items([upsert(a)])
    assert sync.apply_vectors([vector_of(a, 1, 0, model="m2")]) == {"other_model": 1}
    assert sync.recommender.stats()["n_vectors"] == 0 and sync.needs_encoding(a)
    anything = VectorSync(Recommender(seed=1))  # no encoder here: any model is taken
    anything.apply_items([upsert(a)])
    assert anything.apply_vectors([vector_of(a, 1, 0, model="m2")]) == {"installed": 1}


def test_invalid_records_are_counted_and_skipped(sync: VectorSync) -> None:
    a, b = item("a", "A"), item("b", "B")
    sync.apply_items([upsert(a), upsert(b)])
    bad = [(b"a", b"{nope"), (b"a", json.dumps(record("a", dim=7)).encode()), (None, None)]
    wrong_dim = vector_of(b, 1, 0, 0)  # 3 values where the index has 2
    out = sync.apply_vectors([vector_of(a, 1, 0), *bad, wrong_dim])
    assert out == {"installed": 1, "invalid": 4}
    assert sync.counts["invalid"] == 4 and sync.recommender.stats()["n_vectors"] == 1


def test_tombstone_forgets_and_deleted_items_leave_the_catalogue(sync: VectorSync) -> None:
    a = item("a", "A")
    sync.apply_items([upsert(a)])
    sync.apply_vectors([vector_of(a, 1, 0)])
    assert not sync.needs_encoding(a)
    sync.apply_vectors([item_vector_tombstone("a")])
    assert sync.needs_encoding(a) and "a" not in sync.installed
    gone = sync.apply_items([(b"a", None), (b"b", json.dumps({"item_id": "b", "deleted": True}))])
    assert [(i.item_id, i.deleted) for i in gone] == [("a", True), ("b", True)]
    assert "a" not in sync.catalogue and sync.recommender.stats()["n_active_items"] == 0


def test_invalid_catalogue_records_are_skipped_silently(sync: VectorSync) -> None:
    good = item("a", "A")
    out = sync.apply_items([(b"x", b"not json"), (None, None), (b"\xff", None), upsert(good)])
    assert [i.item_id for i in out] == ["a"] and sync.counts["items_invalid"] == 3


def test_owner_encodes_only_what_the_topic_lacks(sync: VectorSync) -> None:
    a, b, empty = item("a", "A"), item("b", "B"), Item("e")
    sync.apply_vectors([vector_of(a, 1, 0)])
    assert not sync.needs_encoding(a) and sync.needs_encoding(b)
    assert not sync.needs_encoding(empty)  # no text, nothing to encode
    assert not sync.needs_encoding(Item("b", title="B", deleted=True))
    assert sync.needs_encoding(item("a", "A, new text"))


def test_own_records_count_before_they_are_read_back(sync: VectorSync) -> None:
    a = item("a", "A")
    sync.apply_items([upsert(a)])
    [(key, value)] = sync.encoded([a], np.array([[1.0, 0.0]]), "m1")
    assert json.loads(value)["text_hash"] == a.text_hash and key == b"a"
    assert not sync.needs_encoding(a) and sync.counts["encoded"] == 1 and not sync.unencoded
    assert sync.apply_vectors([(key, value)]) == {"known": 1}  # read back: not "from topic"
    assert sync.counts["from_topic"] == 0 and "a" not in sync.own
    # deleted, then upserted again with the same text: the tombstone is the newest record,
    # even while an older vector of the item is still being read back
    assert sync.deleted("a") == (b"a", None)
    sync.apply_vectors([(key, value)])
    assert sync.needs_encoding(a)
    sync.apply_vectors([item_vector_tombstone("a")])
    assert sync.needs_encoding(a) and "a" not in sync.own
