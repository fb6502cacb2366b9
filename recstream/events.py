"""Event, Item and Recommendation types, parsed and validated from dict or bytes.

Every rejection raises :class:`InvalidMessage` with a stable short ``code`` (used as a metric
label and in the dead-letter record) and a precise human ``reason``.

>>> e = parse_event(b'{"user_id": "u1", "item_id": "i9", "type": "click", "ts": 10}')
>>> e.user_id, e.item_id, e.type, e.ts, e.event_id
('u1', 'i9', 'click', 10.0, 'd-b02c266b6e45a35d')
>>> parse_event(b'{"user_id": "u1", "type": "click"}')
Traceback (most recent call last):
...
recstream.events.InvalidMessage: missing_field: missing required field 'item_id'
>>> parse_event({"user_id": "u1", "item_id": "i9", "type": "like"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
recstream.events.InvalidMessage: unknown_type: unknown event type 'like' (expected one of ...)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_TYPES = ("view", "click", "purchase")
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 20_000
DEFAULT_MAX_BYTES = 64 * 1024
# ``context`` may nest (``{"geo": {"city": ...}}``), but not without end: a bounded depth keeps
# every later walk over it (pickling in a checkpoint, JSON) far from Python's recursion limit.
MAX_CONTEXT_DEPTH = 4
_ID_INT_BOUND = 10**MAX_ID_LENGTH  # an integer id needs fewer digits than an id has characters


class InvalidMessage(ValueError):
    """A message that cannot be processed; ``code`` is stable, ``reason`` is for humans."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    context: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ts: float = 0.0
    deleted: bool = False

    @property
    def text(self) -> str:
        """The text the encoder sees: title, description, categories and tags."""
        parts = [self.title.strip(), self.description.strip()]
        if self.categories:
            parts.append("Categories: " + ", ".join(self.categories) + ".")
        if self.tags:
            parts.append("Tags: " + ", ".join(self.tags) + ".")
        return " ".join(p for p in parts if p)

    @property
    def text_hash(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"], d["tags"] = list(self.categories), list(self.tags)
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        score = round(float(self.score), 6)
        return {"item_id": self.item_id, "score": score, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Recommendation:
    user_id: str
    items: tuple[ScoredItem, ...]
    trigger_event_id: str | None = None
    model_version: str = ""
    generated_at: float = 0.0
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": [i.to_dict() for i in self.items],
            "trigger_event_id": self.trigger_event_id,
            "model_version": self.model_version,
            "generated_at": self.generated_at,
            "latency_ms": self.latency_ms,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def decode_json_object(raw: bytes | str | dict, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Bytes/str/dict -> dict, rejecting oversized, non-UTF-8, malformed and non-object input."""
    if isinstance(raw, dict):
        return raw
    obj = decode_json_value(raw, max_bytes)
    if not isinstance(obj, dict):
        raise InvalidMessage("bad_json", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def decode_json_value(raw: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Bytes/str -> any JSON value, rejecting oversized, non-UTF-8 and malformed input."""
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidMessage("bad_json", f"expected bytes or an object, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > max_bytes:
        raise InvalidMessage("oversized", f"message is {len(raw)} bytes, limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            "not_utf8", f"value is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage("bad_json", f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:  # e.g. 10,000 nested arrays: Python's parser recurses per level
        raise InvalidMessage("bad_json", "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of over 4,300 digits (int_max_str_digits)
        raise InvalidMessage("bad_json", f"invalid JSON: {exc!s:.120}") from None
    return obj


def _preview(value: Any) -> str:
    """A short repr for error messages; never the repr of a whole (maybe hostile) container."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _ID_INT_BOUND:
        return "an integer too large"
    return f"{value!r:.60}"


def _id(obj: dict, name: str, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise InvalidMessage("missing_field", f"missing required field {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidMessage("bad_field", f"field {name!r} must be a string, got {_preview(value)}")
    if isinstance(value, int) and not -_ID_INT_BOUND < value < _ID_INT_BOUND:
        raise InvalidMessage("bad_field", f"field {name!r} is longer than {MAX_ID_LENGTH} chars")
    return check_id(str(value), name)


def check_id(value: str, name: str = "id") -> str:
    """``value`` if it is a usable id: 1..MAX_ID_LENGTH printable characters.

    Ids end up in Redis keys, Kafka keys, log lines and HTML: control characters (NUL, newline),
    lone UTF-16 surrogates (which no UTF-8 encoder accepts) and other unprintable characters
    are refused here, once, instead of failing wherever the id is used.

    >>> check_id("sku-42 (blue)")
    'sku-42 (blue)'
    >>> check_id("a\\nb", "user_id")
    Traceback (most recent call last):
    ...
    recstream.events.InvalidMessage: bad_field: field 'user_id' holds an unprintable character \
'\\n' at 1
    """
    if not value:
        raise InvalidMessage("missing_field", f"missing required field {name!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidMessage("bad_field", f"field {name!r} is longer than {MAX_ID_LENGTH} chars")
    if not value.isprintable():
        at = next(i for i, c in enumerate(value) if not c.isprintable())
        raise InvalidMessage(
            "bad_field", f"field {name!r} holds an unprintable character {value[at]!r} at {at}"
        )
    return value


def _text(value: str, name: str) -> str:
    """Free text may hold newlines and tabs, but must be encodable (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(
            "bad_field", f"field {name!r} holds a lone surrogate at {exc.start}"
        ) from None
    return value


def _ts(obj: dict, default: float | None) -> float:
    value = obj.get("ts")
    if value is None:
        if default is None:
            raise InvalidMessage("missing_field", "missing field 'ts' and no broker timestamp")
        return float(default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMessage("bad_field", f"field 'ts' must be a number, got {_preview(value)}")
    try:
        ts = float(value)  # an integer beyond ~1.8e308 raises OverflowError
    except OverflowError:
        ts = math.inf
    if not math.isfinite(ts) or ts < 0:
        raise InvalidMessage("bad_field", f"field 'ts' must be a finite time >= 0, got {ts!r}")
    return ts


def _context(obj: dict) -> dict[str, Any]:
    context = obj.get("context")
    if context is None:
        return {}
    if not isinstance(context, dict):  # [] or "" too: not an empty context, a wrong one
        raise InvalidMessage("bad_field", "field 'context' must be an object")
    if _depth(context, MAX_CONTEXT_DEPTH + 1) > MAX_CONTEXT_DEPTH:
        raise InvalidMessage(
            "bad_field", f"field 'context' nests deeper than {MAX_CONTEXT_DEPTH} levels"
        )
    _json_text(context, "context")
    session_id = context.get("session_id")
    if session_id is not None:
        if isinstance(session_id, bool) or not isinstance(session_id, str | int):
            raise InvalidMessage("bad_field", "field 'context.session_id' must be a string")
        context = {**context, "session_id": check_id(str(session_id), "context.session_id")}
    return context


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counted no further than ``limit``."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _json_text(value: Any, name: str) -> None:
    """Every string in a (depth-checked) JSON value is encodable."""
    if isinstance(value, str):
        _text(value, name)
    elif isinstance(value, dict):
        for key, child in value.items():
            _text(key, name)
            _json_text(child, name)
    elif isinstance(value, list):
        for child in value:
            _json_text(child, name)


def derive_event_id(user_id: str, item_id: str, type_: str, ts: float) -> str:
    """A deterministic id for events sent without one, so redelivered copies dedup."""
    digest = hashlib.blake2b(f"{user_id}\x1f{item_id}\x1f{type_}\x1f{ts!r}".encode(), digest_size=8)
    return "d-" + digest.hexdigest()


def parse_event(
    raw: bytes | str | dict,
    *,
    default_ts: float | None = 0.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event:
    """Validate one event; ``default_ts`` is the broker timestamp used when ``ts`` is absent."""
    obj = decode_json_object(raw, max_bytes)
    user_id = _id(obj, "user_id")
    item_id = _id(obj, "item_id")
    type_ = obj.get("type")
    if type_ is None:
        raise InvalidMessage("missing_field", "missing required field 'type'")
    if type_ not in EVENT_TYPES:
        raise InvalidMessage(
            "unknown_type",
            f"unknown event type {_preview(type_)} "
            f"(expected one of {', '.join(sorted(EVENT_TYPES))})",
        )
    ts = _ts(obj, default_ts)
    context = _context(obj)
    event_id = _id(obj, "event_id", required=False) or derive_event_id(user_id, item_id, type_, ts)
    return Event(event_id, user_id, item_id, type_, ts, context)


def _strings(obj: dict, name: str) -> tuple[str, ...]:
    value = obj.get(name) or []
    if isinstance(value, str):  # "a|b|c", the CSV form
        value = [v for v in value.split("|") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidMessage("bad_field", f"field {name!r} must be a list of strings")
    return tuple(_text(v.strip(), name) for v in value if v.strip())


def parse_item(raw: bytes | str | dict, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Item:
    """Validate one catalogue upsert (or deletion, with ``"deleted": true``)."""
    obj = decode_json_object(raw, max_bytes)
    item_id = _id(obj, "item_id")
    texts = {}
    for name in ("title", "description"):
        value = obj.get(name) or ""
        if not isinstance(value, str):
            raise InvalidMessage("bad_field", f"field {name!r} must be a string")
        if len(value) > MAX_TEXT_LENGTH:
            raise InvalidMessage("bad_field", f"field {name!r} is longer than {MAX_TEXT_LENGTH}")
        texts[name] = _text(value, name)
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        raise InvalidMessage("bad_field", "field 'deleted' must be true or false")
    return Item(
        item_id=item_id,
        title=texts["title"],
        description=texts["description"],
        categories=_strings(obj, "categories"),
        tags=_strings(obj, "tags"),
        ts=_ts(obj, 0.0),
        deleted=deleted,
    )
