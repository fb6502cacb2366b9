"""Validation of events and items: every rejection has a precise, stable reason."""

import json

import pytest

from recstream.events import (
    InvalidMessage,
    Item,
    Recommendation,
    ScoredItem,
    derive_event_id,
    parse_event,
    parse_item,
)

GOOD = {"event_id": "e-1", "user_id": "u1", "item_id": "i9", "type": "purchase", "ts": 12.5}


def test_valid_event_round_trips_through_json():
    event = parse_event(json.dumps({**GOOD, "context": {"session_id": "s1"}}).encode())
    assert (event.event_id, event.user_id, event.item_id, event.type, event.ts) == (
        "e-1",
        "u1",
        "i9",
        "purchase",
        12.5,
    )
    assert event.context == {"session_id": "s1"}
    assert parse_event(event.to_json()) == event


def test_integer_ids_are_accepted_as_strings():
    event = parse_event({**GOOD, "user_id": 7, "item_id": 42})
    assert (event.user_id, event.item_id) == ("7", "42")


def test_missing_event_id_is_derived_deterministically():
    raw = {k: v for k, v in GOOD.items() if k != "event_id"}
    first, second = parse_event(raw), parse_event(dict(raw))
    assert first.event_id == second.event_id == derive_event_id("u1", "i9", "purchase", 12.5)
    assert parse_event({**raw, "ts": 13.0}).event_id != first.event_id


def test_missing_ts_takes_the_broker_timestamp():
    raw = {k: v for k, v in GOOD.items() if k != "ts"}
    assert parse_event(raw, default_ts=99.0).ts == 99.0
    with pytest.raises(InvalidMessage) as info:
        parse_event(raw, default_ts=None)
    assert info.value.code == "missing_field"


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"{not json", "bad_json", "invalid JSON"),
        (b"[1, 2]", "bad_json", "expected a JSON object, got list"),
        (b"\xff\xfe{}", "not_utf8", "not UTF-8"),
        (b'{"user_id": "u1", "type": "view"}', "missing_field", "'item_id'"),
        (b'{"item_id": "i1", "type": "view"}', "missing_field", "'user_id'"),
        (b'{"user_id": "u1", "item_id": "i1"}', "missing_field", "'type'"),
        (b'{"user_id": "u1", "item_id": "i1", "type": "like"}', "unknown_type", "'like'"),
        (b'{"user_id": "u1", "item_id": "i1", "type": "view", "ts": "noon"}', "bad_field", "'ts'"),
        (b'{"user_id": "u1", "item_id": "i1", "type": "view", "ts": -1}', "bad_field", "'ts'"),
        (b'{"user_id": ["u"], "item_id": "i1", "type": "view"}', "bad_field", "'user_id'"),
        (
            b'{"user_id": "u1", "item_id": "i1", "type": "view", "context": 3}',
            "bad_field",
            "context",
        ),
    ],
)
def test_rejections_carry_code_and_reason(raw, code, fragment):
    with pytest.raises(InvalidMessage) as info:
        parse_event(raw)
    assert info.value.code == code
    assert fragment in info.value.reason


def test_oversized_event_is_rejected_before_parsing():
    raw = json.dumps({**GOOD, "context": {"pad": "x" * 2000}}).encode()
    with pytest.raises(InvalidMessage) as info:
        parse_event(raw, max_bytes=1000)
    assert info.value.code == "oversized"
    assert str(len(raw)) in info.value.reason
    assert parse_event(raw, max_bytes=len(raw)).user_id == "u1"


def test_item_text_and_csv_style_lists():
    item = parse_item(
        {
            "item_id": 5,
            "title": "Alien",
            "description": "In space",
            "categories": "Horror|Sci-Fi",
            "tags": ["creepy", " "],
        }
    )
    assert item == Item("5", "Alien", "In space", ("Horror", "Sci-Fi"), ("creepy",))
    assert item.text == "Alien In space Categories: Horror, Sci-Fi. Tags: creepy."
    assert item.text_hash != Item("5", "Aliens").text_hash
    assert parse_item(item.to_json()) == item


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"title": "x"}, "missing_field"),
        ({"item_id": "i", "title": 3}, "bad_field"),
        ({"item_id": "i", "tags": [1]}, "bad_field"),
        ({"item_id": "i", "deleted": "yes"}, "bad_field"),
    ],
)
def test_bad_items(raw, code):
    with pytest.raises(InvalidMessage) as info:
        parse_item(raw)
    assert info.value.code == code


def test_recommendation_json_shape():
    rec = Recommendation(
        "u1",
        (ScoredItem("i3", 0.91234567, "viewed together with i9"),),
        "e-1",
        "hybrid-1",
        100.0,
        4.2,
    )
    assert json.loads(rec.to_json()) == {
        "user_id": "u1",
        "items": [{"item_id": "i3", "score": 0.912346, "reason": "viewed together with i9"}],
        "trigger_event_id": "e-1",
        "model_version": "hybrid-1",
        "generated_at": 100.0,
        "latency_ms": 4.2,
    }
