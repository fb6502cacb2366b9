"""Forgetting a user (recstream.forget): no trace of the id in the state or the next checkpoint,
and a replay of the user's older events after a crash does not bring them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recstream.checkpoint import CheckpointStore
from recstream.events import InvalidMessage, Item
from recstream.forget import ForgottenUsers, parse_forget
from recstream.mf import ImplicitMF
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender

SECRET = "user-to-forget-7f3a9c"


def _event(user: str, item: str, n: int, type_: str = "purchase") -> bytes:
    body = {"event_id": f"{user}-{n}", "user_id": user, "item_id": item, "type": type_}
    return json.dumps(body).encode()


def _stream(proc: StreamProcessor, start: int, users: list[str], ts: float) -> int:
    offset = start
    for n, user in enumerate(users):
        msg = KafkaMessage(_event(user, f"i{n % 7}", n), "events", 0, offset, timestamp=ts)
        proc.handle_events([msg])
        offset += 1
    return offset


def _processor() -> StreamProcessor:
    proc = StreamProcessor(Recommender(seed=2), k=5, dedup_window=1000)
    for n in range(7):
        proc.handle_item(Item(f"i{n}", f"item {n}").to_json(), topic="items", partition=0, offset=n)
    return proc


def test_no_trace_of_a_forgotten_user_in_the_state_or_the_next_checkpoint(tmp_path: Path) -> None:
    proc = _processor()
    _stream(proc, 0, [SECRET, "other", SECRET, "other", SECRET] * 4, ts=10.0)
    store = CheckpointStore(tmp_path)
    before = proc.save_checkpoint(store)
    assert any(SECRET.encode() in p.read_bytes() for p in before.iterdir())  # the test can fail

    out = proc.handle_forget(
        json.dumps({"user_id": SECRET}).encode(), topic="forget", partition=0, offset=0,
        timestamp=20.0, key=SECRET.encode(),
    )  # fmt: skip
    assert out.status == "forgotten" and out.user_id == SECRET
    rec = proc.recommender
    assert SECRET not in rec.users and rec.user_profile(SECRET) is None
    assert rec.mf.user_vector(SECRET) is None and proc.online.last(SECRET) is None
    assert rec.recommend("other", 5)  # everyone else is untouched
    after = proc.save_checkpoint(store)
    for path in after.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name
    assert store.keep_only_latest() == 1 and [c.path for c in store.candidates()] == [after]


def test_a_replay_after_a_crash_does_not_bring_the_user_back(tmp_path: Path) -> None:
    proc = _processor()
    store = CheckpointStore(tmp_path)
    proc.save_checkpoint(store)  # before any event of the user
    _stream(proc, 0, [SECRET, "other"] * 3, ts=10.0)
    forget = json.dumps({"user_id": SECRET}).encode()
    proc.handle_forget(forget, topic="forget", partition=0, offset=0, timestamp=20.0)
    proc.save_checkpoint(store)  # holds the ledger

    # Crash before that checkpoint: the older one comes back, and Kafka delivers the forget
    # request *before* the user's events (two topics: no order between them).
    old = store.candidates()[1]
    replay = StreamProcessor.from_checkpoint(old, Recommender.load, k=5, dedup_window=1000)
    replay.handle_forget(forget, topic="forget", partition=0, offset=0, timestamp=20.0)
    _stream(replay, 0, [SECRET, "other"] * 3, ts=10.0)
    assert SECRET not in replay.recommender.users and "other" in replay.recommender.users
    # A later event of the same id is a new user, learned.
    late = KafkaMessage(_event(SECRET, "i1", 99), "events", 0, 6, timestamp=30.0)
    assert replay.handle_events([late])[0].status == "ok" and SECRET in replay.recommender.users


def test_forget_requests_are_validated() -> None:
    assert parse_forget(b'{"user_id": "u1", "ts": 3}', default_ts=9.0).ts == 3.0
    for raw in (None, b"{}", b'{"user_id": 5}', b'{"user_id": "a\\u0000"}', b"[1]"):
        with pytest.raises(InvalidMessage):
            parse_forget(raw, default_ts=1.0)
    proc = _processor()
    out = proc.handle_forget(b"{}", topic="forget", partition=0, offset=0, timestamp=1.0)
    assert out.status == "dlq" and out.dlq is not None and out.dlq["code"] == "missing_field"


def test_the_ledger_holds_hashes_not_ids() -> None:
    import pickle

    ledger = ForgottenUsers()
    ledger.add(SECRET, 5.0)
    assert SECRET.encode() not in pickle.dumps(ledger) and len(ledger) == 1


def test_mf_forgetting_a_user_keeps_nothing_and_leaves_others_untouched() -> None:
    mf = ImplicitMF(n_factors=4, seed=1)
    mf.add_items("abc")
    mf.update("u1", 0, "purchase")
    mf.update("u2", 1, "purchase")
    u2 = mf.user_vector("u2").copy()
    assert mf.forget_user("u1") and not mf.forget_user("u1")
    mf.update("u3", 2, "purchase")  # may reuse the zeroed row: u2 untouched
    assert (mf.user_vector("u2") == u2).all() and mf.user_vector("u1") is None
