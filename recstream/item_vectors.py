"""Records of ``<prefix>.item-vectors``: one item's BERT vector, as every worker reads it.

Several workers in one group (``RECSTREAM_STATE_STORE=kafka``) encode each item once, on the
worker that owns its partition of the items topic, and share the vector through this compacted
topic (streams/catalogue_sync.py). Key = ``item_id`` (UTF-8), value = compact JSON::

    {"v": 1, "item_id": "i9", "text_hash": "<sha1 of Item.text>", "model": "<encoder model id>",
     "dim": 384, "vector": "<base64 of the little-endian float32 values>"}

A null value (a tombstone) says the item was deleted; compaction then drops its vector.
:func:`decode_item_vector` checks everything a reader relies on and raises
:class:`InvalidItemVector` (with a short ``code``) for anything else, so a reader can count and
skip a bad record instead of installing garbage or crashing.

>>> import numpy as np
>>> iv = ItemVector("i9", "ab" * 20, "m1", np.array([0.6, 0.8], dtype=np.float32))
>>> key, value = encode_item_vector(iv)
>>> key, len(value)
(b'i9', 122)
>>> back = decode_item_vector(key, value)
>>> back.item_id, back.dim, back.vector.tolist()
('i9', 2, [0.6000000238418579, 0.800000011920929])
>>> decode_item_vector(b"i9", None) is None  # a tombstone: the item was deleted
True
>>> decode_item_vector(b"i9", value.replace(b'"dim":2', b'"dim":3'))
Traceback (most recent call last):
...
recstream.item_vectors.InvalidItemVector: bad_shape: 'vector' holds 2 float32 values, 'dim' says 3
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "InvalidItemVector",
    "ItemVector",
    "decode_item_vector",
    "encode_item_vector",
    "item_vector_tombstone",
]

FORMAT_VERSION = 1
MAX_DIM = 65_536  # BERT-family hidden sizes are 128..4096: anything larger is not a vector
MAX_ID_CHARS = 512
_TEXT_HASH = re.compile(r"[0-9a-f]{40}")  # Item.text_hash: SHA-1 hex
_LE_FLOAT32 = np.dtype("<f4")


class InvalidItemVector(ValueError):
    """A record of the item-vectors topic that cannot be installed; ``code`` says why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True, eq=False)
class ItemVector:
    """One item's content vector and what it was computed from."""

    item_id: str
    text_hash: str  # Item.text_hash of the text encoded: a vector of older text is stale
    model: str  # ItemEncoder.model_id ("" when unknown): vectors of two models never mix
    vector: np.ndarray  # float32, shape (dim,)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


def encode_item_vector(iv: ItemVector) -> tuple[bytes, bytes]:
    """``(key, value)`` of the record for ``iv``; raises :class:`InvalidItemVector` for a vector
    no reader would accept (so a bad one never reaches the topic)."""
    vector = np.ascontiguousarray(iv.vector, dtype=_LE_FLOAT32)
    _check_vector(vector)
    _check_fields(iv.item_id, iv.text_hash, iv.model)
    body = {
        "v": FORMAT_VERSION,
        "item_id": iv.item_id,
        "text_hash": iv.text_hash,
        "model": iv.model,
        "dim": int(vector.shape[0]),
        "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
    }
    return iv.item_id.encode(), json.dumps(body, separators=(",", ":")).encode()


def item_vector_tombstone(item_id: str) -> tuple[bytes, None]:
    """``(key, None)``: the record that deletes ``item_id``'s vector."""
    return item_id.encode(), None


def decode_item_vector(key: bytes | None, value: bytes | None) -> ItemVector | None:
    """The vector of a record, or None for a tombstone (``key`` names the deleted item).

    Raises :class:`InvalidItemVector` for anything a reader must not install: not JSON, an
    unknown format version, missing or mistyped fields, a key that is not the item id, a
    ``dim`` out of range, a vector whose size is not ``dim`` float32 values, NaN or infinity.
    """
    if value is None:
        if key is None:
            raise InvalidItemVector("tombstone", "tombstone without a key")
        _key_id(key)
        return None
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidItemVector(
            "not_json", f"value is not JSON ({exc.__class__.__name__})"
        ) from None
    if not isinstance(body, dict):
        raise InvalidItemVector("not_object", "value is not a JSON object")
    if body.get("v") != FORMAT_VERSION:
        raise InvalidItemVector("version", f"format version {body.get('v')!r} is not 1")
    item_id, text_hash, model = (_field(body, n, str) for n in ("item_id", "text_hash", "model"))
    _check_fields(item_id, text_hash, model)
    if key is not None and _key_id(key) != item_id:
        raise InvalidItemVector("key_mismatch", "the key is not the record's item_id")
    dim = _field(body, "dim", int)
    if isinstance(dim, bool) or not 1 <= dim <= MAX_DIM:
        raise InvalidItemVector("bad_dim", f"'dim' must be 1..{MAX_DIM}, got {dim!r}")
    encoded = _field(body, "vector", str)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidItemVector("bad_vector", "'vector' is not base64") from None
    if len(raw) % 4:
        raise InvalidItemVector("bad_shape", f"'vector' is {len(raw)} bytes, not float32 values")
    if len(raw) // 4 != dim:
        raise InvalidItemVector(
            "bad_shape", f"'vector' holds {len(raw) // 4} float32 values, 'dim' says {dim}"
        )
    vector = np.frombuffer(raw, dtype=_LE_FLOAT32).astype(np.float32)  # native order, writable
    _check_vector(vector)
    return ItemVector(item_id, text_hash, model, vector)


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        got = "missing" if value is None else type(value).__name__
        raise InvalidItemVector("bad_field", f"{name!r} must be {kind.__name__}, got {got}")
    return value


def _check_fields(item_id: str, text_hash: str, model: str) -> None:
    if not item_id or len(item_id) > MAX_ID_CHARS:
        raise InvalidItemVector("bad_field", f"'item_id' must be 1..{MAX_ID_CHARS} characters")
    if not _TEXT_HASH.fullmatch(text_hash):
        raise InvalidItemVector("bad_field", "'text_hash' is not a SHA-1 hex digest")
    if len(model) > MAX_ID_CHARS:
        raise InvalidItemVector("bad_field", "'model' is too long")


def _check_vector(vector: np.ndarray) -> None:
    if vector.ndim != 1 or not 1 <= vector.shape[0] <= MAX_DIM:
        shape = vector.shape
        raise InvalidItemVector("bad_shape", f"one row of 1..{MAX_DIM} values, got shape {shape}")
    if not np.isfinite(vector).all():
        raise InvalidItemVector("not_finite", "the vector holds NaN or infinity")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidItemVector("zero_vector", "the vector is all zeros")


def _key_id(key: bytes) -> str:
    try:
        item_id = bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidItemVector("bad_key", "the key is not UTF-8") from None
    if not item_id:
        raise InvalidItemVector("bad_key", "the key is empty")
    return item_id
