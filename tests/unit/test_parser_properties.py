"""Property-based tests (hypothesis) of the event and item parsers: whatever the bytes, the answer
is a valid message or an :class:`InvalidMessage` with a known code, never another exception; and
whatever is accepted can be used everywhere downstream (UTF-8, JSON, Redis keys, hashing)."""

from __future__ import annotations

import json
import math
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recstream.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    Event,
    InvalidMessage,
    Item,
    parse_event,
    parse_item,
)

CODES = {"bad_json", "not_utf8", "oversized", "missing_field", "bad_field", "unknown_type"}
# Any text at all, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
FIELDS = ("event_id", "user_id", "item_id", "type", "ts", "context", "title", "description",
          "categories", "tags", "deleted")  # fmt: skip
# Objects with the fields the parsers read, each holding any JSON value (or a plausible one).
PLAUSIBLE = {
    "user_id": st.text(string.ascii_letters, min_size=1, max_size=8),
    "item_id": st.text(string.ascii_letters, min_size=1, max_size=8),
    "type": st.sampled_from(EVENT_TYPES),
    "ts": st.floats(min_value=0, max_value=2e9),
}
MESSAGES = st.fixed_dictionaries(
    {},
    optional={name: PLAUSIBLE.get(name, JSON_VALUES) | JSON_VALUES for name in FIELDS},
)


def _dumps(obj: object) -> bytes:
    # ensure_ascii: a lone surrogate becomes the escape \udXXX, as a hostile producer sends it.
    return json.dumps(obj, allow_nan=True).encode()


def _usable_event(event: Event) -> None:
    for value in (event.event_id, event.user_id, event.item_id):
        assert 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()
        value.encode("utf-8")  # Redis keys, Kafka keys
    assert event.type in EVENT_TYPES and math.isfinite(event.ts) and event.ts >= 0
    assert parse_event(event.to_json()) == event  # what the worker writes, it reads back
    json.dumps(event.context, ensure_ascii=False).encode("utf-8")


def _usable_item(item: Item) -> None:
    assert 0 < len(item.item_id) <= MAX_ID_LENGTH and item.item_id.isprintable()
    assert item.text_hash and item.text.encode("utf-8") is not None
    assert parse_item(item.to_json()) == item


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"[" * 5000)
@example(b'{"ts": 1' + b"0" * 5000 + b"}")
def test_any_bytes_parse_or_are_rejected_with_a_code(raw: bytes) -> None:
    for parse, check in ((parse_event, _usable_event), (parse_item, _usable_item)):
        try:
            check(parse(raw))
        except InvalidMessage as exc:
            assert exc.code in CODES and exc.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
@example({"user_id": "u\ud800", "item_id": "i", "type": "view"})
@example({"user_id": "u", "item_id": "i", "type": "view", "ts": 10**400})
@example({"user_id": "u", "item_id": "i", "type": "view", "context": {"a": [[[[[[1]]]]]]}})
def test_any_json_event_is_valid_and_usable_or_rejected_with_a_code(obj: dict) -> None:
    try:
        event = parse_event(_dumps(obj))
    except InvalidMessage as exc:
        assert exc.code in CODES and exc.reason
    else:
        _usable_event(event)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
@example({"item_id": "i", "title": "x\udc00"})
@example({"item_id": "i", "tags": ["\ud800"]})
def test_any_json_item_is_valid_and_usable_or_rejected_with_a_code(obj: dict) -> None:
    try:
        item = parse_item(_dumps(obj))
    except InvalidMessage as exc:
        assert exc.code in CODES and exc.reason
    else:
        _usable_item(item)


PRINTABLE_IDS = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029"),
    min_size=1,
    max_size=MAX_ID_LENGTH,
).filter(str.isprintable)


@settings(max_examples=300)
@given(
    user=PRINTABLE_IDS,
    item=PRINTABLE_IDS,
    type_=st.sampled_from(EVENT_TYPES),
    ts=st.floats(min_value=0, max_value=1e12),
    session=st.none() | PRINTABLE_IDS,
)
def test_every_well_formed_event_is_accepted_unchanged(
    user: str, item: str, type_: str, ts: float, session: str | None
) -> None:
    body: dict = {"user_id": user, "item_id": item, "type": type_, "ts": ts}
    if session is not None:
        body["context"] = {"session_id": session, "device": "mobile"}
    event = parse_event(_dumps(body))
    assert (event.user_id, event.item_id, event.type, event.ts) == (user, item, type_, ts)
    _usable_event(event)
