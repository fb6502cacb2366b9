"""Several workers' catalogue and vectors (streams/catalogue_sync.py) around a real Runtime and
Recommender, without a broker: the two readers are fed by hand, Kafka sends are recorded."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from recstream.config import Settings
from recstream.events import Item
from recstream.item_vectors import ItemVector, decode_item_vector, encode_item_vector
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender
from streams import runtime


@dataclass
class Record:  # what GlobalReader hands over (aiokafka's ConsumerRecord has these)
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    topic: str = ""


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class Encoder:
    model_id = "m1"

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        out = np.zeros((len(texts), 4), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    def stats(self) -> dict:
        return {}


class Redis:
    def __init__(self) -> None:
        self.vectors: list[str] = []
        self.deleted: list[str] = []
        self.errors = 0

    async def write_item_vectors(self, ids: Any, vectors: Any, hashes: Any) -> bool:
        self.vectors += list(ids)
        return True

    async def delete_item(self, item_id: str) -> bool:
        self.deleted.append(item_id)
        return True

    async def close(self) -> None:
        pass


class FakeReader:
    def __init__(self, settings: Settings, topics: list[str], on_records: Any, *, name: str):
        self.topics, self.on_records, self.name = topics, on_records, name
        self.caught_up = asyncio.Event()
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class Harness:
    def __init__(self, state_store: str = "kafka") -> None:
        self.settings = Settings(topic_prefix="t", state_store=state_store)
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.encoder = Encoder()
        self.redis = Redis()
        self.processor = StreamProcessor(Recommender(seed=1), k=5, max_event_bytes=4096)

        async def publish(topic: str, key: bytes | None, value: bytes | None) -> None:
            self.sent.append((topic, key, value))

        self.rt = runtime.Runtime(
            self.settings,
            self.processor,
            publish=publish,  # type: ignore[arg-type]
            redis=self.redis,  # type: ignore[arg-type]
            encoder=self.encoder,
        )
        self.readers: dict[str, FakeReader] = {}

        def factory(*args: Any, **kwargs: Any) -> FakeReader:
            reader = FakeReader(*args, **kwargs)
            self.readers[reader.name] = reader
            return reader

        self.rt.reader_factory = factory  # type: ignore[assignment]
        self.offset = 0

    def vectors_sent(self) -> list[tuple[bytes | None, ItemVector | None]]:
        topic = self.settings.topic("item-vectors")
        return [(k, decode_item_vector(k, v)) for t, k, v in self.sent if t == topic]

    async def owned(self, item: Item | None, key: bytes, partition: int = 0) -> None:
        value = None if item is None else item.to_json()
        self.offset += 1
        message = KafkaMessage(value, self.settings.topic("items"), partition, self.offset, key=key)
        await self.rt.on_item(message)  # type: ignore[arg-type]


def items(n: int) -> list[Item]:
    return [Item(name, title=f"item {name}") for name in "abcdefgh"[:n]]


def upsert(item: Item, partition: int = 0) -> Record:
    return Record(item.item_id.encode(), item.to_json(), partition)


def vector(item: Item, model: str = "m1") -> Record:
    key, value = encode_item_vector(
        ItemVector(item.item_id, item.text_hash, model, np.array([0, 1, 0, 0], dtype=np.float32))
    )
    return Record(key, value)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


async def started(h: Harness) -> asyncio.Task:
    """run_catalogue_sync with both fake readers started and caught up."""
    task = asyncio.create_task(h.rt.run_catalogue_sync())
    while "catalogue" not in h.readers:
        await asyncio.sleep(0)
    h.readers["item-vectors"].caught_up.set()
    h.readers["catalogue"].caught_up.set()
    await asyncio.wait_for(h.rt.vectors_ready.wait(), 5)
    return task


def test_every_worker_applies_the_whole_catalogue_and_the_topics_vectors() -> None:
    h = Harness()

    async def scenario() -> None:
        task = await started(h)
        cat = h.readers["catalogue"]
        assert cat.topics == ["t.items"] and h.readers["item-vectors"].topics == ["t.item-vectors"]
        a, b, c = items(3)
        await cat.on_records([upsert(a, 0), upsert(b, 1), upsert(c, 2), Record(b"x", b"junk")])
        junk = Record(None, b"junk")  # counted and skipped
        await h.readers["item-vectors"].on_records(
            [vector(a), vector(b), vector(c, model="m2"), junk]
        )
        await cat.on_records([Record(b"c", None, 2)])  # deleted
        assert h.rt.catalogue.lookup("a")["title"] == "item a" and len(h.rt.catalogue) == 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert all(r.stopped for r in h.readers.values())

    run(scenario())
    stats = h.processor.recommender.stats()
    assert stats["n_active_items"] == 2 and stats["n_vectors"] == 2
    health = h.rt.health()
    assert health["item_vectors_from_topic"] == 2 and health["items_encoded"] == 0
    assert health["catalogue_sync"]["other_model"] == 1
    assert health["catalogue_sync"]["items_invalid"] == 1
    assert h.sent == [] and h.encoder.texts == [] and h.redis.vectors == []  # not an owner
    metrics = h.rt.metrics.exposition().decode()
    assert "recstream_item_vectors_from_topic_total 2.0" in metrics
    assert 'recstream_item_vector_records_skipped_total{reason="other_model"} 1.0' in metrics
    assert 'recstream_item_vector_records_skipped_total{reason="invalid"} 1.0' in metrics


def test_the_owner_encodes_only_items_without_a_vector_in_the_topic() -> None:
    h = Harness()
    a, b = items(2)

    async def scenario() -> None:
        owned = asyncio.create_task(h.owned(a, b"a"))
        await asyncio.sleep(0.05)
        assert not owned.done()  # the items agent waits for the item-vectors topic
        task = await started(h)
        await h.readers["item-vectors"].on_records([vector(a)])
        await owned
        await h.owned(b, b"b")
        assert await h.rt.encode_pending() == 1
        # the owner's own vector comes back from the topic: known, not "from the topic"
        _, value = encode_item_vector(h.vectors_sent()[0][1])  # type: ignore[arg-type]
        await h.readers["item-vectors"].on_records([Record(b"b", value)])
        await h.owned(b, b"b")  # redelivered: its vector exists, nothing queued
        await h.owned(None, b"a")  # a tombstone on the items topic deletes a
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert h.encoder.texts == [b.text]
    sent = h.vectors_sent()
    assert [k for k, _ in sent] == [b"b", b"a"]
    assert sent[0][1] is not None and sent[0][1].text_hash == b.text_hash
    assert sent[0][1].model == "m1" and sent[1][1] is None  # b's vector, a's tombstone
    assert h.redis.vectors == ["b"] and h.redis.deleted == ["a"]  # Redis: by the owner only
    assert len(h.processor.encode_queue) == 0
    assert h.rt.health()["items_encoded"] == 1 and h.rt.health()["item_vectors_from_topic"] == 0


def test_an_item_the_catalogue_reader_applied_first_is_still_encoded_by_its_owner() -> None:
    h = Harness()
    (a,) = items(1)

    async def scenario() -> None:
        task = await started(h)
        await h.readers["catalogue"].on_records([upsert(a)])  # the recommender has it already
        await h.owned(a, b"a")  # so handle_item says "unchanged"
        assert await h.rt.encode_pending() == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert [k for k, _ in h.vectors_sent()] == [b"a"]


def test_a_replayed_older_record_is_never_encoded() -> None:
    h = Harness()
    old, new = Item("a", title="old text"), Item("a", title="new text")

    async def scenario() -> None:
        task = await started(h)
        cat = h.readers["catalogue"]
        await cat.on_records([Record(b"a", old.to_json(), 0, 1), Record(b"a", new.to_json(), 0, 2)])
        await cat.on_records([Record(b"gone", Item("gone", "x").to_json(), 0, 3)])
        await cat.on_records([Record(b"gone", None, 0, 4)])
        # the items agent reads the partition again from its start (a restart, a rebalance)
        for offset, (key, item) in enumerate(
            [(b"a", old), (b"a", new), (b"gone", Item("gone", "x")), (b"gone", None)], start=1
        ):
            value = None if item is None else item.to_json()
            message = KafkaMessage(value, "t.items", 0, offset, key=key)
            await h.rt.on_item(message)  # type: ignore[arg-type]
            if offset == 1:
                assert h.processor.encode_queue.waiting == 0  # the old text: not queued
        assert await h.rt.encode_pending() == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert h.encoder.texts == [new.text]
    # one vector (the new text's); no tombstone for an item that never had a vector
    assert [(k, iv.text_hash if iv else None) for k, iv in h.vectors_sent()] == [
        (b"a", new.text_hash)
    ]


def test_a_vector_arriving_while_the_item_waits_cancels_its_encoding() -> None:
    h = Harness()
    (a,) = items(1)

    async def scenario() -> None:
        task = await started(h)
        await h.owned(a, b"a")
        assert h.processor.encode_queue.waiting == 1
        await h.readers["item-vectors"].on_records([vector(a)])  # another worker was quicker
        assert h.processor.encode_queue.waiting == 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert h.encoder.texts == [] and h.vectors_sent() == []


def test_reconcile_queues_items_of_owned_partitions_missing_for_two_rounds() -> None:
    h = Harness()
    a, b, c = items(3)

    async def scenario() -> None:
        assigned = [TP("t.items", 0), TP("t.events", 1)]
        assert h.rt.reconcile_encoding(assigned) == 0  # the topics are not read yet
        task = await started(h)
        cat = h.readers["catalogue"]
        await cat.on_records([upsert(a, 0), upsert(b, 1), upsert(c, 0)])
        await h.readers["item-vectors"].on_records([vector(c)])
        assert h.rt.reconcile_encoding(assigned) == 0  # missing once: maybe in flight elsewhere
        assert h.rt.reconcile_encoding(assigned) == 1  # a, partition 0, still none
        assert h.rt.reconcile_encoding(assigned) == 0  # queued now
        assert await h.rt.encode_pending() == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert h.encoder.texts == [a.text] and [k for k, _ in h.vectors_sent()] == [b"a"]


def test_restored_queue_items_with_vectors_are_not_encoded() -> None:
    h = Harness()
    a, b = items(2)
    h.processor.encode_queue.put(a)
    h.processor.encode_queue.put(b)

    async def scenario() -> None:
        task = asyncio.create_task(h.rt.run_catalogue_sync())
        while "item-vectors" not in h.readers:
            await asyncio.sleep(0)
        await h.readers["item-vectors"].on_records([vector(a)])
        h.readers["item-vectors"].caught_up.set()
        await asyncio.sleep(0.05)
        assert not h.rt.vectors_ready.is_set()  # the catalogue is not read yet
        h.readers["catalogue"].caught_up.set()
        await asyncio.wait_for(h.rt.vectors_ready.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert [i.item_id for i in h.processor.encode_queue.items()] == ["b"]


def test_local_mode_is_unchanged() -> None:
    h = Harness(state_store="local")
    (a,) = items(1)

    async def scenario() -> None:
        await h.rt.run_catalogue_sync()  # returns at once: no readers
        await h.owned(a, b"a")  # never waits for a topic
        assert await h.rt.encode_pending() == 1
        await h.owned(None, b"a")

    run(scenario())
    assert h.readers == {} and h.sent == []  # nothing to item-vectors, no tombstone
    assert h.redis.vectors == ["a"] and h.redis.deleted == ["a"]
    health = h.rt.health()
    assert health["items_encoded"] == 1 and "catalogue_sync" not in health
    assert h.rt.reconcile_encoding([TP("t.items", 0)]) == 0


@pytest.mark.parametrize("state_store", ["local", "kafka"])
def test_health_fields(state_store: str) -> None:
    health = Harness(state_store).rt.health()
    assert health["items_encoded"] == 0 and health["item_vectors_from_topic"] == 0
    json.dumps(health)
