"""The worker's pure bookkeeping: dedup window, offsets, online ranking, encode queue,
checkpoints, and the StreamProcessor's restore-and-continue guarantee."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from recstream.checkpoint import CheckpointStore
from recstream.datasets import synthetic_stream
from recstream.events import Event, Item
from recstream.online import (
    DedupWindow,
    EncodeQueue,
    LatencyWindow,
    OnlineRanking,
    Positions,
    RateMeter,
)
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender

# --- DedupWindow -------------------------------------------------------------------------------


def test_dedup_window_forgets_the_oldest_id_when_full() -> None:
    d = DedupWindow(capacity=3)
    assert [d.add(x) for x in ("a", "b", "c", "a")] == [True, True, True, False]
    assert d.add("d")  # evicts "a", the oldest
    assert "a" not in d and "b" in d and len(d) == 3
    assert d.add("a")


@pytest.mark.parametrize("n", [0, 2, 5, 12])
def test_dedup_window_pickles_partial_and_full_windows(n: int) -> None:
    d = DedupWindow(capacity=5)
    for i in range(n):
        d.add(f"e{i}")
    restored = pickle.loads(pickle.dumps(d))
    assert len(restored) == len(d) == min(n, 5)
    for i in range(n):
        assert (f"e{i}" in restored) == (f"e{i}" in d)
    # And it keeps evicting in the same order after the restore.
    assert restored.add("new") and d.add("new")
    assert [f"e{i}" in restored for i in range(n)] == [f"e{i}" in d for i in range(n)]


def test_partial_window_pickle_is_small() -> None:
    d = DedupWindow(capacity=1_000_000)
    d.add("only")
    assert len(pickle.dumps(d)) < 1000


def test_dedup_window_resized_keeps_the_newest() -> None:
    d = DedupWindow(capacity=4)
    for i in range(6):
        d.add(f"e{i}")  # holds e2..e5
    small = d.resized(2)
    assert "e5" in small and "e4" in small and "e3" not in small
    big = d.resized(10)
    assert all(f"e{i}" in big for i in range(2, 6)) and len(big) == 4


def test_dedup_window_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError):
        DedupWindow(0)


# --- Positions, latency, rate -------------------------------------------------------------------


def test_positions_skip_redeliveries_and_round_trip_json() -> None:
    p = Positions()
    assert p.accept("ev", 0, 0) and p.accept("ev", 0, 1) and p.accept("ev", 1, 7)
    assert not p.accept("ev", 0, 1) and not p.accept("ev", 0, 0)
    assert p.next_offset("ev", 0) == 2 and p.next_offset("ev", 1) == 8
    assert p.next_offset("ev", 2) is None
    data = json.loads(json.dumps(p.to_json()))
    assert data == {"ev": {"0": 2, "1": 8}}
    assert Positions.from_json(data).as_dict() == p.as_dict()


def test_latency_window_percentiles() -> None:
    w = LatencyWindow(size=100)
    assert w.percentiles_ms() == {"p50": None, "p99": None}
    for ms in range(1, 101):
        w.observe(ms / 1000)
    pct = w.percentiles_ms(50, 99)
    assert pct["p50"] == pytest.approx(50.5) and pct["p99"] == pytest.approx(99.01)
    for _ in range(100):
        w.observe(1.0)  # the window slides: old values are gone
    assert w.percentiles_ms(50)["p50"] == 1000.0 and w.count == 200


def test_rate_meter_counts_from_the_restored_total() -> None:
    t = [0.0]
    meter = RateMeter(total=1000, clock=lambda: t[0])
    t[0] = 2.0
    assert meter.rate(1100) == 50.0  # not (1100 / 2): the restored 1000 are not new


# --- online ranking ------------------------------------------------------------------------------


def test_online_ranking_is_test_then_learn_on_the_last_list() -> None:
    r = OnlineRanking(k=3)
    assert r.observe_purchase("u1", "a") is None  # never shown anything: not evaluated
    r.remember("u1", ["a", "b", "c", "d"])  # kept to k
    assert r.last("u1") == ("a", "b", "c")
    assert r.observe_purchase("u1", "a") == 1.0
    assert r.observe_purchase("u1", "d") == 0.0
    assert r.evaluated == 2 and r.hits == 1
    assert r.hit_rate == 0.5 and r.ndcg == 0.5


def test_online_ranking_keeps_at_most_max_users() -> None:
    r = OnlineRanking(k=2, max_users=2)
    r.remember("u1", ["a"])
    r.remember("u2", ["a"])
    r.remember("u1", ["b"])  # u1 becomes the most recent
    r.remember("u3", ["c"])  # evicts u2
    assert r.last("u2") is None and r.last("u1") == ("b",) and r.last("u3") == ("c",)


# --- encode queue --------------------------------------------------------------------------------


def test_encode_queue_drops_vectors_of_text_changed_in_flight() -> None:
    q = EncodeQueue()
    old, other = Item("a", title="old"), Item("b", title="b")
    q.put(old)
    q.put(other)
    batch = q.take(10)
    assert batch == [old, other] and q.waiting == 0
    q.put(Item("a", title="new"))  # changed while the batch was encoding
    q.discard("b")  # deleted while the batch was encoding
    assert q.complete(batch) == []  # neither vector is current
    assert [i.title for i in q.items()] == ["new"] and q.waiting == 1


def test_encode_queue_failed_batch_is_retried() -> None:
    q = EncodeQueue()
    q.put(Item("a", title="x"))
    batch = q.take(1)
    assert q.take(1) == []
    q.fail(batch)
    assert q.take(1) == batch
    assert q.complete(batch) == [0] and len(q) == 0


def test_encode_queue_waiting_count_matches_the_items_through_any_sequence() -> None:
    rng = np.random.default_rng(4)
    q = EncodeQueue()
    batches: list[list[Item]] = []
    for step in range(2_000):
        op = rng.integers(5)
        item_id = f"i{rng.integers(30)}"
        if op == 0:
            q.put(Item(item_id, title=f"t{step}"))
        elif op == 1:
            q.discard(item_id)
        elif op == 2:
            batches.append(q.take(int(rng.integers(1, 8))))
        elif batches:
            batch = batches.pop(int(rng.integers(len(batches))))
            q.complete(batch) if op == 3 else q.fail(batch)
        in_flight = sum(p.in_flight for p in q._pending.values())
        assert q.waiting == len(q) - in_flight, step


# --- checkpoint store ----------------------------------------------------------------------------


def _write(text: str):
    return lambda p: p.write_text(text)


def test_checkpoint_store_keeps_the_last_two(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(4):
        store.save({"m": _write(str(i))}, {"i": i})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-000000003", "ckpt-000000004"]
    latest = store.latest()
    assert latest is not None and latest.meta["i"] == 3 and latest.file("m").read_text() == "3"


def test_checkpoint_crash_mid_save_leaves_the_previous_one(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"m": _write("good")}, {"offsets": {"t": {"0": 10}}})

    def crash(path: Path) -> None:
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.save({"m": _write("new"), "s": crash}, {"offsets": {"t": {"0": 99}}})
    latest = store.latest()
    assert latest is not None and latest.meta["offsets"] == {"t": {"0": 10}}
    assert latest.file("m").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000001"]  # no temp dir left


def test_checkpoint_damaged_newest_falls_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"m": _write("1")}, {"n": 1})
    newest = store.save({"m": _write("2")}, {"n": 2})
    (newest / "offsets.json").write_text("{truncated")
    latest = store.latest()
    assert latest is not None and latest.meta["n"] == 1
    assert [c.meta["n"] for c in store.candidates()] == [1]


def test_checkpoint_discard_removes_everything(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "app")
    store.save({"m": _write("1")}, {})
    store.save({"m": _write("2")}, {})
    assert store.discard() == 2
    assert store.latest() is None and list(tmp_path.iterdir()) == [tmp_path / "app"]
    assert list((tmp_path / "app").iterdir()) == []


def test_checkpoints_are_private_and_a_forget_leaves_only_the_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "app", keep=2)
    for n in range(3):
        latest = store.save({"m": _write(str(n))}, {})
    assert (tmp_path / "app").stat().st_mode & 0o777 == 0o700
    assert latest.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in latest.iterdir())
    assert len(store.candidates()) == 2
    assert store.keep_only_latest() == 1
    assert [c.path for c in store.candidates()] == [latest]


# --- StreamProcessor -----------------------------------------------------------------------------


def _msgs(events: list[Event], partitions: int = 3) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) as Kafka would deliver them, partitioned by user."""
    offsets = [0] * partitions
    out = []
    for e in events:
        p = int(e.user_id.removeprefix("u")) % partitions
        out.append((p, offsets[p], e.to_json()))
        offsets[p] += 1
    return out


def _processor(items: list[Item]) -> StreamProcessor:
    rec = Recommender(seed=3)
    proc = StreamProcessor(rec, k=10, dedup_window=10_000)
    for n, item in enumerate(items):
        proc.handle_item(item.to_json(), topic="items", partition=0, offset=n)
    return proc


def _feed(proc: StreamProcessor, msgs) -> list:
    return [
        proc.handle_event(v, topic="events", partition=p, offset=o, timestamp=1.0)
        for p, o, v in msgs
    ]


def test_restart_from_checkpoint_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    items, events = synthetic_stream(n_users=30, n_items=60, n_events=900, seed=5)
    msgs = _msgs(events)
    # Reference: one uninterrupted processor.
    reference = _processor(items)
    _feed(reference, msgs)

    # Crash-and-restart: checkpoint at 400, process on to 600, "crash" (state lost), restore,
    # then Kafka redelivers from the group's committed offsets -- here from 300, i.e. *before*
    # the checkpoint -- so 300..400 must be skipped by offset and 400..600 re-learned once.
    first = _processor(items)
    _feed(first, msgs[:400])
    store = CheckpointStore(tmp_path)
    first.save_checkpoint(store)
    _feed(first, msgs[400:600])
    ckpt = store.latest()
    assert ckpt is not None
    restored = StreamProcessor.from_checkpoint(ckpt, Recommender.load, k=10, dedup_window=10_000)
    outcomes = _feed(restored, msgs[300:])

    assert sum(o.status == "replayed" for o in outcomes) == 100
    assert restored.events_processed == reference.events_processed == len(events)
    assert restored.counts.events_by_type == reference.counts.events_by_type
    assert restored.counts.duplicates == 0
    assert restored.recommender.n_events == len(events)
    # The restored state continues exactly where the reference is.
    for user in {e.user_id for e in events}:
        a = [s.item_id for s in restored.recommender.recommend(user, 10)]
        b = [s.item_id for s in reference.recommender.recommend(user, 10)]
        assert a == b, user
    assert restored.online.evaluated == reference.online.evaluated


def test_checkpoint_requeues_items_waiting_for_the_encoder(tmp_path: Path) -> None:
    proc = _processor([Item("a", title="alpha"), Item("b", title="beta")])
    batch = proc.take_encode_batch(1)  # "a" in flight, "b" waiting
    store = CheckpointStore(tmp_path)
    proc.save_checkpoint(store)
    ckpt = store.latest()
    assert ckpt is not None and ckpt.meta["offsets"] == {"items": {"0": 2}}
    restored = StreamProcessor.from_checkpoint(ckpt, Recommender.load)
    assert sorted(i.item_id for i in restored.encode_queue.items()) == ["a", "b"]
    # Vectors arriving in the old process for "a" change nothing in the restored one.
    ids, _ = proc.apply_vectors(batch, np.ones((1, 4), dtype=np.float32))
    assert ids == ["a"]


def test_processing_error_is_dead_lettered_not_raised() -> None:
    proc = _processor([])

    def broken(event: Event) -> None:
        raise KeyError("boom")

    proc.recommender.learn = broken  # type: ignore[method-assign]
    out = proc.handle_event(
        b'{"user_id":"u1","item_id":"i1","type":"view"}',
        topic="events",
        partition=0,
        offset=0,
        timestamp=5.0,
    )
    assert out.status == "dlq" and out.dlq is not None
    assert out.dlq["code"] == "processing_error" and "KeyError" in out.dlq["reason"]
    assert proc.snapshot()["dlq_by_reason"] == {"processing_error": 1}


def test_snapshot_has_the_documented_fields() -> None:
    items, events = synthetic_stream(n_users=10, n_items=30, n_events=300, seed=2)
    proc = _processor(items)
    _feed(proc, _msgs(events))
    snap = proc.snapshot()
    for key in (
        "events_processed",
        "events_per_s",
        "events_by_type",
        "dlq_total",
        "latency_ms",
        "online",
        "coverage",
        "catalogue_items",
        "duplicates",
    ):
        assert key in snap, key
    assert snap["events_processed"] == 300
    assert set(snap["online"]) == {"hr@10", "ndcg@10", "evaluated"}
    assert snap["online"]["evaluated"] > 0 and 0 <= snap["online"]["hr@10"] <= 1
    assert 0 < snap["coverage"] <= 1 and snap["catalogue_items"] == 30
    json.dumps(snap)  # serialisable as is


# --- StreamProcessor.handle_events: batches ---------------------------------------------------


def _event_json(user: str, item: str, type_: str = "view", event_id: str = "") -> bytes:
    return Event(event_id or f"{user}-{item}", user, item, type_, ts=1.0).to_json()


def test_a_batch_learns_every_event_and_gives_each_user_one_list_after_their_last() -> None:
    proc = _processor([Item(f"i{n}", title=f"item {n}") for n in range(12)])
    values = [
        _event_json("u1", "i1"),
        _event_json("u2", "i2"),
        _event_json("u1", "i3", "purchase"),
        b"{not json",
        _event_json("u1", "i1"),  # same event_id as the first: a duplicate
        _event_json("u3", "i4", "purchase"),
    ]
    messages = [KafkaMessage(v, "events", 0, 10 + n, timestamp=1.0) for n, v in enumerate(values)]
    outcomes = proc.handle_events(messages)

    assert [o.status for o in outcomes] == ["ok", "ok", "ok", "dlq", "duplicate", "ok"]
    assert [o.recommendation is not None for o in outcomes] == [0, 1, 1, 0, 0, 1]
    assert [o.recommendation.trigger_event_id for o in outcomes if o.recommendation] == [
        "u2-i2",
        "u1-i3",
        "u3-i4",
    ]
    # u1's list was scored after u1's purchase of i3: purchased items are excluded.
    u1_list = outcomes[2].recommendation
    assert u1_list is not None and "i3" not in [s.item_id for s in u1_list.items]
    assert proc.recommender.n_events == 4
    assert proc.counts.recommendations == 3
    assert proc.events_processed == 4 and proc.counts.duplicates == 1
    assert proc.positions.next_offset("events", 0) == 16
    assert outcomes[3].dlq is not None and outcomes[3].dlq["offset"] == 13


def test_batches_and_single_events_leave_the_same_model() -> None:
    items, events = synthetic_stream(n_users=25, n_items=50, n_events=600, seed=11)
    msgs = _msgs(events)
    one_by_one = _processor(items)
    _feed(one_by_one, msgs)
    batched = _processor(items)
    as_messages = [KafkaMessage(v, "events", p, o, timestamp=1.0) for p, o, v in msgs]
    for start in range(0, len(as_messages), 64):
        batched.handle_events(as_messages[start : start + 64])

    assert batched.events_processed == one_by_one.events_processed == len(events)
    assert batched.positions.as_dict() == one_by_one.positions.as_dict()
    assert batched.counts.recommendations < one_by_one.counts.recommendations == len(events)
    for user in sorted({e.user_id for e in events}):
        a = [s.item_id for s in batched.recommender.recommend(user, 10)]
        b = [s.item_id for s in one_by_one.recommender.recommend(user, 10)]
        assert a == b, user


def test_a_failed_recommendation_dead_letters_only_that_users_event() -> None:
    proc = _processor([Item(f"i{n}", title=f"item {n}") for n in range(5)])
    recommend = proc.recommender.recommend

    def broken_for_u2(user_id: str, k: int = 10) -> list:
        if user_id == "u2":
            raise ValueError("boom")
        return recommend(user_id, k)

    proc.recommender.recommend = broken_for_u2  # type: ignore[method-assign]
    values = [_event_json("u1", "i1"), _event_json("u2", "i2"), _event_json("u3", "i3")]
    outcomes = proc.handle_events(
        [KafkaMessage(v, "events", 0, n, timestamp=1.0) for n, v in enumerate(values)]
    )
    assert [o.status for o in outcomes] == ["ok", "dlq", "ok"]
    assert outcomes[1].dlq is not None and outcomes[1].dlq["code"] == "processing_error"
    assert "ValueError: boom" in outcomes[1].dlq["reason"] and outcomes[1].dlq["offset"] == 1
    assert outcomes[0].recommendation is not None and outcomes[2].recommendation is not None
