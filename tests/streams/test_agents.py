"""The Faust agents in ``agent.test_context()`` (no broker, no Redis): routing and message shapes.

The runtime is the real one around a real Recommender; only its two exits are replaced: Kafka
sends are recorded by a fake ``publish`` and Redis writes by a recording sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recstream.checkpoint import CheckpointStore
from recstream.config import Settings
from recstream.events import Item
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender
from streams import runtime
from streams.agents import process_events, process_items
from streams.app import settings as app_settings


class RecordingRedis:
    """Stands in for RedisSink: these tests check what the agents hand to it, not Redis."""

    def __init__(self) -> None:
        self.recs: dict[str, bytes] = {}
        self.profiles: dict[str, np.ndarray | None] = {}
        self.deleted: list[str] = []
        self.errors = 0

    async def put_recommendation(self, user_id: str, body: bytes, profile: Any) -> None:
        self.recs[user_id] = body
        self.profiles[user_id] = profile

    async def write_item_vectors(self, ids: Any, vectors: Any, hashes: Any) -> bool:
        return True

    async def delete_item(self, item_id: str) -> bool:
        self.deleted.append(item_id)
        return True

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return 0


class CountingEncoder:
    """Stands in for the BERT encoder in scheduling tests: records each batch it is given."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return np.ones((len(texts), 8), dtype=np.float32)

    def stats(self) -> dict:
        return {}


class Harness:
    def __init__(self, batch_max: int = 1, **settings: Any) -> None:
        # batch_max=1: every event is its own batch, so each gets its list (the default batches
        # whatever has arrived, which in test_context depends on scheduling).
        self.settings: Settings = app_settings.replace(batch_max=batch_max, **settings)
        self.sent: list[tuple[str, bytes | None, dict]] = []
        self.redis = RecordingRedis()
        recommender = Recommender(seed=1)
        for i in range(20):
            recommender.upsert_item(Item(f"i{i}", title=f"item {i}"))
        self.processor = StreamProcessor(recommender, k=5, dedup_window=1000, max_event_bytes=2048)

        async def publish(topic: str, key: bytes | None, value: bytes) -> None:
            self.sent.append((topic, key, json.loads(value)))

        self.encoder = CountingEncoder()
        self.runtime = runtime.Runtime(
            self.settings,
            self.processor,
            publish=publish,
            redis=self.redis,  # type: ignore[arg-type]
            encoder=self.encoder,
        )

    def on(self, name: str) -> list[tuple[bytes | None, dict]]:
        topic = self.settings.topic(name)
        return [(k, v) for t, k, v in self.sent if t == topic]


@pytest.fixture
def harness() -> Any:
    h = Harness()
    runtime.install(h.runtime)
    yield h
    runtime.install(None)


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=30))


@contextlib.asynccontextmanager
async def events_agent(harness: Harness) -> AsyncIterator[Any]:
    """The events agent in test_context, with the worker's batch task behind it; on exit,
    waits until every event put is processed."""
    batches = asyncio.create_task(harness.runtime.process_event_batches())
    try:
        async with process_events.test_context() as agent:
            yield agent
            await harness.runtime.drain_events()
    finally:
        batches.cancel()


def event(user: str, item: str, type_: str = "view", event_id: str | None = None) -> bytes:
    body: dict[str, Any] = {"user_id": user, "item_id": item, "type": type_, "ts": 100.0}
    if event_id:
        body["event_id"] = event_id
    return json.dumps(body).encode()


def test_valid_event_publishes_recommendation_with_interface_shape(harness: Harness) -> None:
    async def scenario() -> None:
        async with events_agent(harness) as agent:
            await agent.put(event("u1", "i3", "purchase", "e-1"), key=b"u1", partition=0)

    t0 = time.time()
    run(scenario)
    recs = harness.on("recommendations")
    assert len(recs) == 1
    key, rec = recs[0]
    assert key == b"u1"
    assert set(rec) == {
        "user_id",
        "items",
        "trigger_event_id",
        "model_version",
        "generated_at",
        "latency_ms",
    }
    assert rec["user_id"] == "u1" and rec["trigger_event_id"] == "e-1"
    assert rec["model_version"] == harness.processor.recommender.model_version
    assert rec["generated_at"] >= t0 and rec["latency_ms"] >= 0
    assert len(rec["items"]) == 5
    for it in rec["items"]:
        assert set(it) == {"item_id", "score", "reason"} and it["reason"]
    assert "i3" not in [it["item_id"] for it in rec["items"]]  # purchased: excluded
    # The same JSON went to Redis, byte for byte.
    assert json.loads(harness.redis.recs["u1"]) == rec
    assert harness.on("events.dlq") == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "bad_json"),
        (b'{"user_id": "u1", "type": "view"}', "missing_field"),
        (b'{"user_id": "u1", "item_id": "i1", "type": "like"}', "unknown_type"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b'{"user_id": "u1", "item_id": "' + b"x" * 4000 + b'", "type": "view"}', "oversized"),
    ],
)
def test_invalid_event_goes_to_dlq_and_the_stream_goes_on(
    harness: Harness, raw: bytes, code: str
) -> None:
    async def scenario() -> None:
        async with events_agent(harness) as agent:
            await agent.put(event("u1", "i1"), key=b"u1", partition=0)
            await agent.put(raw, key=b"u1", partition=0)
            await agent.put(event("u2", "i2"), key=b"u2", partition=0)

    run(scenario)
    dlq = harness.on("events.dlq")
    assert len(dlq) == 1
    key, record = dlq[0]
    assert key == b"u1"
    assert record["code"] == code and record["reason"]
    assert record["topic"] == harness.settings.topic("events")
    assert record["partition"] == 0 and record["offset"] == 1
    if code == "not_utf8":
        assert record["raw_encoding"] == "base64"
    elif code == "oversized":
        assert record["raw_truncated"] and record["raw_bytes"] == len(raw)
    else:
        assert record["raw_encoding"] == "utf-8" and record["raw"] == raw.decode()
    # The good events on both sides of the bad one were processed.
    assert [v["user_id"] for _, v in harness.on("recommendations")] == ["u1", "u2"]
    snapshot = harness.processor.snapshot()
    assert snapshot["dlq_by_reason"] == {code: 1}
    assert snapshot["events_processed"] == 2


def test_duplicate_event_id_is_learned_once(harness: Harness) -> None:
    async def scenario() -> None:
        async with events_agent(harness) as agent:
            for _ in range(3):  # the producer retried: same event_id, new offsets
                await agent.put(event("u1", "i4", "click", "e-dup"), key=b"u1", partition=0)
            await agent.put(event("u1", "i5", "click", "e-other"), key=b"u1", partition=0)

    run(scenario)
    recs = harness.on("recommendations")
    assert [r["trigger_event_id"] for _, r in recs] == ["e-dup", "e-other"]
    assert harness.processor.counts.duplicates == 2
    assert harness.processor.recommender.n_events == 2


def test_redelivered_offset_is_skipped(harness: Harness) -> None:
    # As after a restart from a checkpoint: offsets below the saved position are not re-learned.
    topic = harness.settings.topic("events")
    harness.processor.positions.accept(topic, 0, 2)  # reflects @0..@2

    async def scenario() -> None:
        async with events_agent(harness) as agent:
            for n in range(4):  # test_context numbers the offsets from 0
                await agent.put(event("u1", f"i{n}", event_id=f"e-{n}"), key=b"u1", partition=0)

    # The first message at @0 is a jump back to a log's start: a re-created topic, read again
    # (StreamProcessor._accept). Redelivered events are caught by their ids instead.
    for n in range(3):
        harness.processor.dedup.add(f"e-{n}")
    run(scenario)
    assert [r["trigger_event_id"] for _, r in harness.on("recommendations")] == ["e-3"]
    assert harness.processor.counts.duplicates == 3 and harness.processor.events_processed == 1
    assert harness.runtime.metrics.offset_resets.labels(reason="topic_recreated")._value.get() == 1


def test_redelivery_below_the_position_is_skipped_by_offset() -> None:
    from recstream.pipeline import KafkaMessage

    h = Harness()
    topic = h.settings.topic("events")
    first = h.processor.handle_events([KafkaMessage(event("u1", "i1"), topic, 0, 5, 1.0)])
    again = h.processor.handle_events([KafkaMessage(event("u1", "i1"), topic, 0, 5, 1.0)])
    assert first[0].status == "ok" and again[0].status == "replayed"
    assert h.processor.counts.replayed == 1


def test_events_waiting_together_are_one_batch_with_one_list_per_user() -> None:
    h = Harness(batch_max=16)
    topic = h.settings.topic("events")
    sent = [
        ("u1", "i1", "view"),
        ("u2", "i2", "view"),
        ("u1", "i3", "purchase"),
        ("u3", "i4", "click"),
    ]
    now = time.time()
    values = [event(u, i, t, f"e{n}") for n, (u, i, t) in enumerate(sent)]
    values.insert(2, b"{not json")
    keys = [b"u1", b"u2", b"u9", b"u1", b"u3"]
    messages = [
        KafkaMessage(v, topic, 0, offset, timestamp=now, key=k)
        for offset, (v, k) in enumerate(zip(values, keys, strict=True))
    ]

    async def scenario() -> None:
        for message in messages:  # all queued before the batch task runs: one batch
            h.runtime.inbox.put_nowait(message)
        batches = asyncio.create_task(h.runtime.process_event_batches())
        await h.runtime.drain_events()
        batches.cancel()

    run(scenario)
    recs = h.on("recommendations")
    # One list per user, in the order of their last event, each after all their events.
    assert [(k, r["trigger_event_id"]) for k, r in recs] == [
        (b"u2", "e1"),
        (b"u1", "e2"),
        (b"u3", "e3"),
    ]
    u1 = next(r for k, r in recs if k == b"u1")
    assert "i3" not in [it["item_id"] for it in u1["items"]]  # purchased in the same batch
    assert set(h.redis.recs) == {"u1", "u2", "u3"}
    assert [r["code"] for _, r in h.on("events.dlq")] == ["bad_json"]
    assert h.processor.events_processed == 4
    # Every learned event's latency is observed, folded into a later list or not.
    latency_count = h.runtime.metrics.registry.get_sample_value(
        "recstream_event_to_recommendation_seconds_count"
    )
    assert latency_count == 4


def test_items_agent_upserts_queues_encoding_and_deletes(harness: Harness) -> None:
    async def scenario() -> None:
        async with process_items.test_context() as agent:
            new = {"item_id": "n1", "title": "Galaxy Robot", "description": "space opera"}
            await agent.put(json.dumps(new).encode(), key=b"n1", partition=0)
            await agent.put(json.dumps(new).encode(), key=b"n1", partition=0)  # unchanged
            await agent.put(b'{"title": "no id"}', key=None, partition=0)
            gone = {"item_id": "i0", "deleted": True}
            await agent.put(json.dumps(gone).encode(), key=b"i0", partition=0)
        async with events_agent(harness) as agent:
            await agent.put(event("u9", "i1"), key=b"u9", partition=0)

    run(scenario)
    queued = [i.item_id for i in harness.processor.encode_queue.items()]
    assert queued == ["n1"]  # queued once: the second upsert had the same text
    ((_, record),) = harness.on("events.dlq")
    assert record["code"] == "missing_field" and record["topic"] == harness.settings.topic("items")
    assert harness.redis.deleted == ["i0"]
    ((_, rec),) = harness.on("recommendations")
    assert "i0" not in [it["item_id"] for it in rec["items"]]


def test_encoder_takes_a_lone_new_item_at_once_then_waits_an_interval_unless_a_batch_fills() -> (
    None
):
    h = Harness(encoder_interval_s=600.0, encoder_max_queue=4)
    runtime.install(h.runtime)
    topic = h.settings.topic("items")

    def item(n: int) -> KafkaMessage:
        body = json.dumps({"item_id": f"new{n}", "title": f"brand new {n}"}).encode()
        return KafkaMessage(body, topic, 0, n, key=f"new{n}".encode())

    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        loop = asyncio.create_task(h.runtime.encoder_loop())
        try:
            await h.runtime.on_item(item(0))  # after a quiet spell: encoded at once
            await asyncio.wait_for(until(lambda: h.encoder.batches == [1]), 10)
            await h.runtime.on_item(item(1))  # right after a batch: waits for the interval...
            await asyncio.sleep(0.3)
            assert h.encoder.batches == [1] and h.processor.encode_queue.waiting == 1
            for n in range(2, 5):  # ...unless a full batch (4) is waiting
                await h.runtime.on_item(item(n))
            await asyncio.wait_for(until(lambda: h.encoder.batches == [1, 4]), 10)
        finally:
            loop.cancel()
        assert h.processor.counts.items_encoded == 5

    try:
        run(scenario)
    finally:
        runtime.install(None)


def test_checkpoint_is_written_by_a_forked_child_with_the_state_at_fork_time(
    tmp_path: Path,
) -> None:
    h = Harness()
    store = CheckpointStore(tmp_path)
    h.runtime.store = store
    topic = h.settings.topic("events")

    def batch(first: int, n: int) -> list[KafkaMessage]:
        return [
            KafkaMessage(event(f"u{i % 3}", f"i{i % 20}", event_id=f"e{i}"), topic, 0, i, key=b"u")
            for i in range(first, first + n)
        ]

    async def scenario() -> tuple[Path | None, Path | None]:
        await h.runtime.on_events(batch(0, 5))
        writing = asyncio.create_task(h.runtime.checkpoint())
        # the queued outputs are flushed first, then the fork; the loop is free right after
        while h.runtime._checkpoint_child is None and not writing.done():
            await asyncio.sleep(0)
        await h.runtime.on_events(batch(5, 3))  # while the child writes
        assert not writing.done()  # in process, the write would have held the lock till now
        forked = await writing
        final = await h.runtime.checkpoint(background=False)  # in process, as at shutdown
        return forked, final

    forked, final = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert forked is not None and final is not None and forked != final
    by_path = {c.path: c for c in store.candidates()}
    saved = StreamProcessor.from_checkpoint(by_path[forked], Recommender.load)
    assert saved.events_processed == 5  # the state at the fork, not the 8 processed by its end
    assert saved.positions.next_offset(topic, 0) == 5
    latest = StreamProcessor.from_checkpoint(store.latest(), Recommender.load)
    assert latest.events_processed == 8 and latest.positions.next_offset(topic, 0) == 8
    assert h.runtime.last_checkpoint is not None and "pause_s" in h.runtime.last_checkpoint


@pytest.mark.parametrize("state_store", ["local", "kafka"])
def test_lists_are_handed_over_while_the_rest_of_the_batch_is_scored(
    monkeypatch, state_store: str
) -> None:
    """recstream/handover.py: each list goes to the writers as soon as it is scored, with the
    loop given a turn every slice, not all of them after the batch's last list; in a group
    (``kafka``) too, over the owned partitions' events (streams/partition_state.py)."""
    from recstream.pipeline import KafkaMessage

    h = Harness(batch_max=32, handover_slice_ms=2.0, state_store=state_store)
    topic = h.settings.topic("events")
    users = [f"u{n}" for n in range(8)]
    messages = [
        KafkaMessage(
            event(u, f"i{n}", "view", f"e{n}"), topic, n % 2, n, time.time(), key=u.encode()
        )
        for n, u in enumerate(users)
    ]
    if state_store == "kafka":  # as streams/worker.py sets a group's worker up
        h.processor.recommender.track_item_deltas()
        h.runtime.book.own(0)
        h.runtime.book.own(1)
        assert h.runtime.group_mode
    score = h.processor.recommend_after

    def slow_score(message: Any, learned: Any) -> Any:
        time.sleep(0.003)  # longer than a hand-over slice (2 ms): a turn after each list
        return score(message, learned)

    monkeypatch.setattr(h.processor, "recommend_after", slow_score)
    seen_during: list[int] = []

    async def scenario() -> None:
        done = asyncio.Event()

        async def watch() -> None:  # runs whenever the batch gives the loop a turn
            while not done.is_set():
                seen_during.append(len(h.redis.recs))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        await h.runtime.on_events(messages)
        done.set()
        await watcher

    run(scenario)
    # the writers had lists to send before the batch ended, one more at each turn
    assert any(0 < n < len(users) for n in seen_during), seen_during
    assert sorted(set(seen_during)) == list(range(len(users) + 1))
    lists = {v["user_id"]: v["trigger_event_id"] for _, v in h.on("recommendations")}
    assert lists == {u: f"e{n}" for n, u in enumerate(users)}  # one list per user, as before
    assert len(h.redis.recs) == len(users)


def test_the_new_item_slot_shows_in_the_metrics() -> None:
    """recstream_new_items and recstream_new_item_slot_lists_total, from the model's counts."""
    from recstream.pipeline import KafkaMessage
    from recstream.recommender import RecommenderConfig

    harness = Harness()
    # fresh items ranked last: only the slot can show the new one
    rec = Recommender(RecommenderConfig(ranker="fixed", w_fresh=-5.0), seed=1)
    for i in range(20):
        rec.upsert_item(Item(f"i{i}", title=f"item {i}"))
    harness.processor.recommender = rec
    topic = harness.settings.topic("events")

    def messages(first: int, users: list[str]) -> list[Any]:
        return [
            KafkaMessage(
                event(u, f"i{n}", "view", f"e{first + n}"),
                topic,
                0,
                first + n,
                time.time(),
                key=u.encode(),
            )
            for n, u in enumerate(users)
        ]

    async def scenario() -> None:
        await harness.runtime.on_events(messages(0, ["u1", "u2"]))
        rec.upsert_item(Item("new", title="brand new", ts=200.0))  # after the first event
        await harness.runtime.on_events(messages(2, ["u1", "u2", "u3"]))
        harness.runtime.snapshot()

    run(scenario)
    registry = harness.runtime.metrics.registry
    lists = [r for _, r in harness.on("recommendations")][-3:]
    assert all("new" in [it["item_id"] for it in r["items"]] for r in lists)
    assert registry.get_sample_value("recstream_new_items") == 1.0
    slotted = registry.get_sample_value("recstream_new_item_slot_lists_total")
    assert slotted == rec.new_items.slot_lists == rec.stats()["slot_lists"] == 3
