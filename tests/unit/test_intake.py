"""POST /events validation (recstream.intake): the Kafka path's rules and codes, all-or-nothing."""

from __future__ import annotations

import json

import pytest

from recstream.intake import MAX_EVENTS, IntakeError, parse_intake

GOOD = {"user_id": "u1", "item_id": "i9", "type": "view", "context": {"session_id": "s"}}


def test_one_event_or_an_array_keyed_by_user_and_sent_as_written() -> None:
    assert parse_intake(json.dumps(GOOD).encode()) == [
        (b"u1", json.dumps(GOOD, separators=(",", ":")).encode())
    ]
    batch = parse_intake(json.dumps([GOOD, {**GOOD, "user_id": "u2", "ts": 5}]).encode())
    assert [key for key, _ in batch] == [b"u1", b"u2"]
    assert json.loads(batch[1][1]) == {**GOOD, "user_id": "u2", "ts": 5}  # no derived fields


def test_a_request_is_refused_whole_with_every_reason_and_the_dlq_codes() -> None:
    body = json.dumps(
        [GOOD, {"user_id": "u1", "type": "like", "item_id": "i"}, {"type": "view"}, 7]
    )
    with pytest.raises(IntakeError) as info:
        parse_intake(body.encode())
    assert [(e["index"], e["code"]) for e in info.value.errors] == [
        (1, "unknown_type"), (2, "missing_field"), (3, "bad_json"),
    ]  # fmt: skip
    assert info.value.code == "unknown_type" and str(info.value).startswith("event 1: unknown_type")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "bad_json"),
        (b"[]", "bad_json"),
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "not_utf8"),
        (b"[" * 10_000 + b"]" * 10_000, "bad_json"),
        (json.dumps([GOOD] * (MAX_EVENTS + 1)).encode(), "oversized"),
        (json.dumps({**GOOD, "user_id": "a\u0000b"}).encode(), "bad_field"),
    ],
)
def test_hostile_bodies_get_a_code(body: bytes, code: str) -> None:
    with pytest.raises(IntakeError) as info:
        parse_intake(body)
    assert info.value.code == code


def test_bodies_and_events_are_bounded() -> None:
    with pytest.raises(IntakeError) as info:
        parse_intake(json.dumps([GOOD] * 10).encode(), max_body_bytes=100)
    assert info.value.code == "oversized" and info.value.errors[0]["index"] is None
    big = {**GOOD, "context": {"pad": "x" * 500}}
    with pytest.raises(IntakeError) as info:
        parse_intake(json.dumps([GOOD, big]).encode(), max_event_bytes=200)
    assert info.value.errors == [
        {"index": 1, "code": "oversized", "reason": info.value.errors[0]["reason"]}
    ]
