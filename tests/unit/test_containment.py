"""StreamProcessor containment (issue 9): no message stops the stream or leaves a partial update,
tombstones delete, and a systemic failure halts instead of dead-lettering the whole stream."""

from __future__ import annotations

import json

import pytest

from recstream.dead_letters import MAX_DEAD_LETTER_KEY_BYTES, dead_letter_key
from recstream.events import Event, Item
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender


def _processor(n_items: int = 5, **kwargs) -> StreamProcessor:
    proc = StreamProcessor(Recommender(seed=1), k=5, dedup_window=1000, **kwargs)
    for n in range(n_items):
        proc.handle_item(
            Item(f"i{n}", title=f"item {n}").to_json(), topic="items", partition=0, offset=n
        )
    return proc


def _event(user: str, item: str, type_: str = "view", event_id: str | None = None) -> bytes:
    body = {"user_id": user, "item_id": item, "type": type_, "ts": 1.0}
    if event_id:
        body["event_id"] = event_id
    return json.dumps(body).encode()


def _handle(proc: StreamProcessor, value: bytes | None, offset: int, key: bytes | None = None):
    return proc.handle_events([KafkaMessage(value, "events", 0, offset, timestamp=1.0, key=key)])[0]


def test_a_failed_learn_leaves_no_bookkeeping_and_the_event_can_be_replayed() -> None:
    # The stream's bookkeeping (dedup, counts, online evaluation) only: what a model bug leaves
    # inside the model is the model's (README, "No message stops the worker").
    proc = _processor()
    proc.handle_events([KafkaMessage(_event("u1", "i1"), "events", 0, 0, 1.0)])  # a list shown
    learn = proc.recommender.learn
    proc.recommender.learn = lambda event: (_ for _ in ()).throw(RuntimeError("model bug"))  # type: ignore[method-assign]
    out = _handle(proc, _event("u1", "i1", "purchase", "e-buy"), 1)
    assert out.status == "dlq" and out.dlq is not None and out.dlq["code"] == "processing_error"
    # Nothing of it stayed: not counted, not scored online, its id not remembered as seen ...
    assert proc.events_processed == 1 and proc.online.evaluated == 0
    assert "e-buy" not in proc.dedup
    # ... so replaying the dead letter once the bug is fixed learns it (not a "duplicate").
    proc.recommender.learn = learn  # type: ignore[method-assign]
    replay = _handle(proc, _event("u1", "i1", "purchase", "e-buy"), 2)
    assert replay.status == "ok" and proc.online.evaluated == 1


def test_a_parser_bug_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    import recstream.pipeline as pipeline

    def broken(*args, **kwargs):
        raise AttributeError("parser bug")

    monkeypatch.setattr(pipeline, "parse_event", broken)
    out = _handle(_processor(), _event("u1", "i1"), 0)
    assert out.status == "dlq" and out.dlq is not None
    assert out.dlq["code"] == "processing_error" and "AttributeError" in out.dlq["reason"]


def test_tombstones_delete_items_and_are_dead_lettered_on_events() -> None:
    proc = _processor(n_items=2)
    assert {r.item_id for r in proc.recommender.recommend("x", 5)} == {"i0", "i1"}
    out = proc.handle_item(None, topic="items", partition=0, offset=10, key=b"i1")
    assert out.status == "deleted" and out.item is not None and out.item.item_id == "i1"
    assert {r.item_id for r in proc.recommender.recommend("x", 5)} == {"i0"}
    keyless = proc.handle_item(None, topic="items", partition=0, offset=11, key=None)
    assert keyless.status == "dlq" and keyless.dlq is not None
    assert keyless.dlq["code"] == "tombstone"
    bad_key = proc.handle_item(None, topic="items", partition=0, offset=12, key=b"a\nb")
    assert bad_key.status == "dlq" and bad_key.dlq is not None
    event = _handle(proc, None, 0, key=b"u1")
    assert event.status == "dlq" and event.dlq is not None and event.dlq["code"] == "tombstone"
    assert proc.snapshot()["dlq_by_reason"] == {"tombstone": 2, "bad_field": 1}


def test_dead_letters_of_huge_keys_and_values_are_bounded() -> None:
    proc = _processor(max_event_bytes=1 << 30)  # even a misconfigured limit is capped
    key = b"k" * (1 << 20)
    value = b"\x00" * (2 << 20)  # every byte becomes 6 in JSON: \u0000
    out = _handle(proc, value, 0, key=key)
    assert out.status == "dlq" and out.dlq is not None
    record = json.dumps(out.dlq).encode()
    assert len(record) < 512 * 1024 and out.dlq["raw_truncated"] and out.dlq["key_truncated"]
    assert out.dlq["key_bytes"] == len(key) and out.dlq["raw_bytes"] == len(value)
    assert dead_letter_key(key) == key[:MAX_DEAD_LETTER_KEY_BYTES]
    assert dead_letter_key(b"u1") == b"u1" and dead_letter_key(None) is None


def test_consecutive_processing_errors_halt_the_processor_and_keep_its_position() -> None:
    proc = _processor(max_consecutive_errors=3)
    proc.recommender.learn = lambda event: (_ for _ in ()).throw(RuntimeError("incompatible"))  # type: ignore[method-assign]
    # Invalid input is not a processing error: it never counts towards a halt.
    for offset in range(5):
        assert _handle(proc, b"{not json", offset).status == "dlq"
    assert proc.consecutive_errors == 0 and proc.halted is None
    statuses = [_handle(proc, _event("u1", "i1", event_id=f"e{n}"), 5 + n).status for n in range(5)]
    assert statuses == ["dlq", "dlq", "dlq", "halted", "halted"]
    assert proc.halted is not None and "3 consecutive processing errors" in proc.halted
    assert "incompatible" in proc.halted
    # The halted messages were not applied: the position is right after the last dead letter.
    assert proc.positions.next_offset("events", 0) == 8
    assert proc.handle_item(b'{"item_id": "x"}', topic="items", partition=0, offset=99).status == (
        "halted"
    )


def test_a_success_resets_the_count() -> None:
    proc = _processor(max_consecutive_errors=2)
    learn = proc.recommender.learn
    failing = {"u-bad"}

    def sometimes(event: Event) -> None:
        if event.user_id in failing:
            raise RuntimeError("bad user state")
        learn(event)

    proc.recommender.learn = sometimes  # type: ignore[method-assign]
    users = ["u-bad", "u1", "u-bad", "u2", "u-bad"]
    outs = [_handle(proc, _event(u, "i1", event_id=f"e{n}"), n) for n, u in enumerate(users)]
    assert [o.status for o in outs] == ["dlq", "ok", "dlq", "ok", "dlq"]
    assert proc.halted is None and proc.consecutive_errors == 1
    assert _handle(proc, _event("u-bad", "i2", event_id="e5"), 5).status == "dlq"
    assert proc.halted is not None


def test_successes_on_another_topic_do_not_hide_a_failing_events_stream() -> None:
    proc = _processor(max_consecutive_errors=5)
    proc.recommender.learn = lambda event: (_ for _ in ()).throw(RuntimeError("bug"))  # type: ignore[method-assign]
    item = 100
    for n in range(5):
        proc.handle_item(Item(f"n{n}").to_json(), topic="items", partition=0, offset=item + n)
        assert _handle(proc, _event("u1", "i1", event_id=f"e{n}"), n).status == "dlq"
    assert proc.halted is not None and "on events" in proc.halted


def test_a_failing_forget_is_dead_lettered_and_still_guards_replays() -> None:
    proc = _processor()
    _handle(proc, _event("u1", "i1", event_id="e0"), 0)
    proc.recommender.forget_user = lambda user_id: (_ for _ in ()).throw(KeyError(user_id))  # type: ignore[method-assign]
    out = proc.handle_forget(
        b'{"user_id": "u1"}', topic="forget", partition=0, offset=0, timestamp=5.0
    )
    assert out.status == "dlq" and out.dlq is not None and out.dlq["code"] == "processing_error"
    late_replay = KafkaMessage(_event("u1", "i2", event_id="e1"), "events", 0, 1, timestamp=4.0)
    assert proc.handle_events([late_replay])[0].status == "forgotten"


def test_a_forget_request_from_the_future_is_capped_at_its_record_time() -> None:
    proc = _processor()
    proc.handle_forget(
        b'{"user_id": "u1", "ts": 1e15}', topic="forget", partition=0, offset=0, timestamp=5.0
    )
    later = KafkaMessage(_event("u1", "i2", event_id="e1"), "events", 0, 0, timestamp=6.0)
    assert proc.handle_events([later])[0].status == "ok"


def test_a_position_that_jumps_forward_is_recorded() -> None:
    """Offsets never read (the consumer skipped messages) are visible, not silent."""
    from recstream.pipeline import StreamProcessor
    from recstream.recommender import Recommender

    proc = StreamProcessor(Recommender())
    for offset in (0, 1, 5, 6):
        raw = b'{"user_id": "u1", "item_id": "i1", "type": "view", "event_id": "e%d"}' % offset
        out = proc.handle_event(raw, topic="t", partition=0, offset=offset, timestamp=1.0)
        assert out.status == "ok"
    assert proc.gaps == [("t", 0, 2, 5)]
