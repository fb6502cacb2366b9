"""The hostile messages that once stopped the worker (issue 9): each is now a clean rejection.

Every case here raised something other than :class:`InvalidMessage` before the fix (a
RecursionError, an OverflowError, a ValueError, a UnicodeEncodeError further down the line), which
the batch task turned into a crash on the same offset at every restart.
"""

from __future__ import annotations

import json

import pytest

from recstream.events import MAX_ID_LENGTH, InvalidMessage, check_id, parse_event, parse_item

BASE = '{"user_id": "u1", "item_id": "i1", "type": "view"'


def _event(**fields: object) -> bytes:
    return json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", **fields}).encode()


HOSTILE_EVENTS = {
    "10,000 nested arrays": (b'{"user_id": "u1", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    "nesting as the type": (BASE.replace('"view"', "[" * 900 + "]" * 900) + "}").encode(),
    "ts beyond float": (BASE + ', "ts": ' + "9" * 400 + "}").encode(),
    "ts of 5,000 digits": (BASE + ', "ts": ' + "9" * 5000 + "}").encode(),
    "user_id with a lone surrogate": b'{"user_id": "u\\ud800", "item_id": "i1", "type": "view"}',
    "item_id with a lone surrogate": b'{"user_id": "u1", "item_id": "\\udfff", "type": "view"}',
    "user_id with NUL": b'{"user_id": "u\\u0000", "item_id": "i1", "type": "view"}',
    "item_id with a newline": _event(item_id="i\n1"),
    "event_id with an escape": _event(event_id="e\x1b[31m"),
    "huge integer user_id": (BASE.replace('"u1"', "9" * 300) + "}").encode(),
    "context nested 50 deep": (BASE + ', "context": {"a": ' + "[" * 50 + "]" * 50 + "}}").encode(),
    "context with a lone surrogate": b'{"user_id": "u", "item_id": "i", "type": "view", '
    b'"context": {"k": "\\ud800"}}',
    "session_id an object": _event(context={"session_id": {"a": 1}}),
    "NaN ts": (BASE + ', "ts": NaN}').encode(),
    "Infinity ts": (BASE + ', "ts": -Infinity}').encode(),
}


@pytest.mark.parametrize("raw", HOSTILE_EVENTS.values(), ids=HOSTILE_EVENTS.keys())
def test_hostile_events_are_invalid_messages(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_event(raw)
    assert info.value.code in {"bad_json", "bad_field", "unknown_type"}
    assert len(info.value.reason) < 300  # a reason, never the hostile value itself


HOSTILE_ITEMS = {
    "10,000 nested arrays": b'{"item_id": "i1", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "ts beyond float": b'{"item_id": "i1", "ts": ' + b"9" * 400 + b"}",
    "ts of 5,000 digits": b'{"item_id": "i1", "ts": ' + b"9" * 5000 + b"}",
    "item_id with a lone surrogate": b'{"item_id": "i\\ud800", "title": "x"}',
    "title with a lone surrogate": b'{"item_id": "i1", "title": "x\\udc00"}',
    "tag with a lone surrogate": b'{"item_id": "i1", "tags": ["\\udc00"]}',
    "item_id with a tab": b'{"item_id": "a\\tb"}',
}


@pytest.mark.parametrize("raw", HOSTILE_ITEMS.values(), ids=HOSTILE_ITEMS.keys())
def test_hostile_items_are_invalid_messages(raw: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_item(raw)
    assert info.value.code in {"bad_json", "bad_field"}


def test_free_text_keeps_newlines_and_unicode() -> None:
    item = parse_item({"item_id": "ß-1 ☃", "title": "Line 1\nLine 2\t✓", "tags": ["日本"]})
    assert item.item_id == "ß-1 ☃" and item.title == "Line 1\nLine 2\t✓"
    assert item.text_hash  # encodable


def test_ids_are_bounded_and_printable() -> None:
    assert check_id("x" * MAX_ID_LENGTH) == "x" * MAX_ID_LENGTH
    with pytest.raises(InvalidMessage, match="longer"):
        check_id("x" * (MAX_ID_LENGTH + 1))
    with pytest.raises(InvalidMessage, match="unprintable"):
        check_id("\u200b")  # zero-width space: invisible in any list
    assert parse_event(_event(user_id="' OR 1=1 --")).user_id == "' OR 1=1 --"


def test_context_keeps_shallow_objects_and_a_session() -> None:
    event = parse_event(_event(context={"session_id": 7, "geo": {"city": "Köln"}}))
    assert event.context == {"session_id": "7", "geo": {"city": "Köln"}}
