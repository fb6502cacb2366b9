"""The agents under hostile input (issue 9), in ``agent.test_context()``: every message that once
stopped the worker is dead-lettered with its code and the stream goes on; refused sends never
raise; a systemic failure halts the worker instead of dead-lettering the whole stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from test_agents import Harness, event, events_agent, run

from recstream.dead_letters import MAX_DEAD_LETTER_KEY_BYTES
from streams import runtime
from streams.agents import process_items

DEEP = b'{"user_id": "u", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
BIG_TS = b'{"user_id": "u", "item_id": "i1", "type": "view", "ts": ' + b"9" * 400 + b"}"
HUGE_TS = b'{"user_id": "u", "item_id": "i1", "type": "view", "ts": ' + b"9" * 5000 + b"}"
SURROGATE_USER = b'{"user_id": "u\\ud800", "item_id": "i1", "type": "view"}'
SURROGATE_ITEM = b'{"user_id": "u", "item_id": "\\udfff", "type": "view"}'
NUL_ID = b'{"user_id": "u\\u0000", "item_id": "i1", "type": "view"}'


@pytest.fixture
def harness() -> Any:
    h = Harness()
    h.processor.max_event_bytes = 256 * 1024  # room for the 10,000-level nesting
    runtime.install(h.runtime)
    yield h
    runtime.install(None)


def test_every_poison_event_is_dead_lettered_once_and_the_good_ones_learned(
    harness: Harness,
) -> None:
    poison: list[tuple[bytes | None, bytes | None, str]] = [
        (b"u", DEEP, "bad_json"),
        (b"u", BIG_TS, "bad_field"),
        (b"u", HUGE_TS, "bad_json"),
        (b"u", SURROGATE_USER, "bad_field"),
        (b"u", SURROGATE_ITEM, "bad_field"),
        (b"u", NUL_ID, "bad_field"),
        (b"u", None, "tombstone"),
        (b"k" * (1 << 20), b"{not json", "bad_json"),  # a 1 MB key
    ]

    async def scenario() -> None:
        async with events_agent(harness) as agent:
            for n, (key, value, _) in enumerate(poison):
                await agent.put(value, key=key, partition=0)
                await agent.put(event(f"g{n}", "i1"), key=f"g{n}".encode(), partition=0)

    run(scenario)
    dlq = harness.on("events.dlq")
    assert [record["code"] for _, record in dlq] == [code for _, _, code in poison]
    assert [record["offset"] for _, record in dlq] == list(range(0, 2 * len(poison), 2))
    big_key, record = dlq[-1]
    assert big_key is not None and len(big_key) == MAX_DEAD_LETTER_KEY_BYTES
    assert record["key_truncated"] and record["key_bytes"] == 1 << 20
    assert harness.processor.events_processed == len(poison)  # every good event, once
    assert {k for k, _ in harness.on("recommendations")} == {
        f"g{n}".encode() for n in range(len(poison))
    }


def test_a_refused_dead_letter_is_sent_without_its_raw_copy(harness: Harness) -> None:
    sent = harness.sent

    async def picky_publish(topic: str, key: bytes | None, value: bytes) -> None:
        if len(value) > 1000:  # a broker with a small message.max.bytes
            raise ValueError("MessageSizeTooLargeError")
        sent.append((topic, key, json.loads(value)))

    harness.runtime.publish = picky_publish
    big = json.dumps({"user_id": "u1", "item_id": "i1", "type": "like", "pad": "x" * 5000})

    async def scenario() -> None:
        async with events_agent(harness) as agent:
            await agent.put(big.encode(), key=b"u1", partition=0)
            await agent.put(event("u2", "i2"), key=b"u2", partition=0)

    run(scenario)
    ((_, record),) = harness.on("events.dlq")
    assert record["code"] == "unknown_type" and record["raw"] == "" and record["raw_truncated"]
    assert harness.runtime.metrics.kafka_send_errors._value.get() == 1
    assert len(harness.on("recommendations")) == 1  # the stream went on


def test_a_failing_recommendation_send_is_counted_not_raised(harness: Harness) -> None:
    async def refusing_publish(topic: str, key: bytes | None, value: bytes) -> None:
        raise ConnectionError("producer stopped")

    harness.runtime.publish = refusing_publish

    async def scenario() -> None:
        async with events_agent(harness) as agent:
            for n in range(3):
                await agent.put(event(f"u{n}", "i1"), key=f"u{n}".encode(), partition=0)

    run(scenario)
    assert harness.processor.events_processed == 3
    assert harness.runtime.metrics.kafka_send_errors._value.get() == 3
    assert set(harness.redis.recs) == {"u0", "u1", "u2"}  # Redis still got every list


def test_consecutive_processing_errors_halt_the_worker() -> None:
    h = Harness(batch_max=1)
    h.processor.max_consecutive_errors = 3
    runtime.install(h.runtime)

    def incompatible(e: Any) -> None:
        raise RuntimeError("incompatible checkpoint")

    h.processor.recommender.learn = incompatible  # type: ignore[method-assign]

    async def submit_all() -> None:  # the agent's part: blocks while the inbox is full
        for n in range(6):
            await h.runtime.submit_event(_message(h, n))

    async def scenario() -> None:
        batches = asyncio.create_task(h.runtime.process_event_batches())
        agent = asyncio.create_task(submit_all())
        try:
            while h.processor.halted is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            health = h.runtime.health()
            assert health["status"] == "halted" and not health["ready"]
            assert "incompatible checkpoint" in health["halted"]
            assert h.runtime.metrics.halted._value.get() == 1
            # Nothing more is taken: the agent is held back, the position stays after the
            # last dead letter, and a restart resumes there.
            assert not agent.done() and h.runtime.inbox.full()
            assert h.processor.positions.next_offset(h.settings.topic("events"), 0) == 3
        finally:
            batches.cancel()
            agent.cancel()

    try:
        run(scenario)
    finally:
        runtime.install(None)
    assert [r["code"] for _, r in h.on("events.dlq")] == ["processing_error"] * 3
    assert h.processor.events_processed == 0


def _message(h: Harness, offset: int) -> Any:
    from recstream.pipeline import KafkaMessage

    value = event(f"u{offset}", "i1", event_id=f"e{offset}")
    return KafkaMessage(value, h.settings.topic("events"), 0, offset, 1.0, key=b"u")


def test_items_agent_survives_poison_items_and_deletes_by_tombstone(harness: Harness) -> None:
    async def failing_delete(item_id: str) -> bool:
        raise RuntimeError("sink bug")

    async def scenario() -> None:
        async with process_items.test_context() as agent:
            for raw in (DEEP, b'{"item_id": "i1", "ts": ' + b"9" * 5000 + b"}"):
                await agent.put(raw, key=b"i1", partition=0)
            await agent.put(b'{"item_id": "i\\ud800", "title": "x"}', key=b"i1", partition=0)
            await agent.put(None, key=b"i2", partition=0)  # tombstone: delete i2
            await agent.put(None, key=None, partition=0)  # a tombstone without a key
            harness.redis.delete_item = failing_delete  # type: ignore[method-assign]
            await agent.put(None, key=b"i3", partition=0)  # deleted; the sink's error is logged
            new = {"item_id": "n1", "title": "still alive"}
            await agent.put(json.dumps(new).encode(), key=b"n1", partition=0)

    run(scenario)
    codes = [r["code"] for _, r in harness.on("events.dlq")]
    assert codes == ["bad_json", "bad_json", "bad_field", "tombstone"]
    assert harness.redis.deleted == ["i2"]
    live = set(harness.processor.recommender.index.ids) - {"i2", "i3"}
    ranked = {r.item_id for r in harness.processor.recommender.recommend("x", 30)}
    assert ranked == live and "n1" in ranked


def test_a_halted_worker_stops_its_items_and_forget_agents_too(harness: Harness) -> None:
    harness.processor.halted = "test: halted"
    topic = harness.settings.topic("items")

    async def scenario() -> None:
        from recstream.pipeline import KafkaMessage

        item = KafkaMessage(b'{"item_id": "n1"}', topic, 0, 0, 1.0, key=b"n1")
        forget = KafkaMessage(b'{"user_id": "u1"}', harness.settings.topic("forget"), 0, 0, 1.0)
        for call in (harness.runtime.on_item(item), harness.runtime.on_forget(forget)):
            task = asyncio.ensure_future(call)
            await asyncio.sleep(0.1)
            assert not task.done(), "an agent went on while the worker is halted"
            task.cancel()

    run(scenario)
    assert harness.processor.positions.next_offset(topic, 0) is None  # nothing applied
