"""streams/global_reader.py against the real broker: every partition, from the start or from
given positions, ``caught_up`` at the start's end offsets, transactions, a broker that is not
there."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from recstream.config import Settings
from streams.global_reader import GlobalReader


def settings(bootstrap: str) -> Settings:
    return Settings(broker=f"kafka://{bootstrap}", app_id=f"it-global-{uuid.uuid4().hex[:8]}")


async def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_reads_every_partition_and_catches_up(
    bootstrap_servers: str, create_topics: Callable[..., list[str]], unique_topic: Any
) -> None:
    a, b, empty = unique_topic("a"), unique_topic("b"), unique_topic("empty")
    create_topics(a, b, partitions=3)
    create_topics(empty, partitions=2)
    first = [(n % 3, f"k{n}".encode(), f"v{n}".encode()) for n in range(30)]
    first[7] = (1, b"k7", None)  # a tombstone is a record like any other
    seen: list[Any] = []

    async def scenario() -> dict:
        await produce(bootstrap_servers, a, first)
        await produce(bootstrap_servers, b, [(2, b"x", b"only")])
        reader = GlobalReader(settings(bootstrap_servers), [a, b, empty], seen.extend, name="t")
        await reader.start()
        assert await reader.wait_caught_up(30), reader
        caught = len(seen)
        await produce(bootstrap_servers, a, [(0, b"late", b"after the start")])
        for _ in range(100):
            if len(seen) > caught:
                break
            await asyncio.sleep(0.1)
        positions = dict(reader.positions)
        await reader.stop()
        await reader.stop()  # twice: harmless
        return {"caught": caught, "positions": positions}

    out = run(scenario())
    assert out["caught"] == 31
    assert sorted(r.value for r in seen if r.topic == a and r.value) == sorted(
        [v for _, _, v in first if v] + [b"after the start"]
    )
    assert [r.value for r in seen if r.key == b"k7"] == [None]
    for p in range(3):  # offset order within each partition
        offsets = [r.offset for r in seen if r.topic == a and r.partition == p]
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert out["positions"][(a, 0)] == 11 and out["positions"][(b, 2)] == 1
    assert out["positions"][(empty, 0)] == 0


def test_starts_from_given_positions_and_an_empty_topic_is_caught_up_at_once(
    bootstrap_servers: str, create_topics: Callable[..., list[str]], unique_topic: Any
) -> None:
    topic, empty = unique_topic("t"), unique_topic("empty")
    create_topics(topic, partitions=2)
    create_topics(empty, partitions=2)
    got: list[Any] = []

    async def on_records(records: list[Any]) -> None:  # async callbacks are awaited
        await asyncio.sleep(0)
        got.extend(records)

    async def scenario() -> None:
        await produce(
            bootstrap_servers, topic, [(p, b"k", str(n).encode()) for n in range(5) for p in (0, 1)]
        )
        s = settings(bootstrap_servers)
        reader = GlobalReader(s, [topic], on_records, name="from", positions={(topic, 0): 3})
        await reader.start()
        assert await reader.wait_caught_up(30)
        await reader.stop()
        nothing = GlobalReader(s, [empty], on_records, name="empty")
        await nothing.start()
        assert await nothing.wait_caught_up(30)
        assert nothing.positions == {(empty, 0): 0, (empty, 1): 0} and nothing.lag == 0
        await nothing.stop()

    run(scenario())
    assert [r.value for r in got if r.partition == 0] == [b"3", b"4"]
    assert [r.value for r in got if r.partition == 1] == [str(n).encode() for n in range(5)]


def test_read_committed_skips_aborted_records_and_still_catches_up(
    bootstrap_servers: str, create_topics: Callable[..., list[str]], unique_topic: Any
) -> None:
    topic = unique_topic("tx")
    create_topics(topic, partitions=1)
    got: dict[str, list[bytes]] = {"read_committed": [], "read_uncommitted": []}
    failing = {"calls": 0}

    def flaky(records: list[Any]) -> None:
        failing["calls"] += 1
        raise RuntimeError("a callback bug: logged, the reader goes on")

    async def scenario() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, transactional_id=f"it-{uuid.uuid4().hex}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed", key=b"k")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted", key=b"k")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        s = settings(bootstrap_servers)
        for level, values in got.items():

            def keep(records: list[Any], values: list[bytes] = values) -> None:
                values.extend(r.value for r in records)

            reader = GlobalReader(s, [topic], keep, isolation_level=level, name=level)
            await reader.start()
            # the log ends with control records (commit and abort markers) after the data
            assert await reader.wait_caught_up(30), (level, reader.positions)
            await reader.stop()
        reader = GlobalReader(s, [topic], flaky, name="flaky")
        await reader.start()
        assert await reader.wait_caught_up(30)
        await reader.stop()

    run(scenario())
    assert got["read_committed"] == [b"committed"]
    assert got["read_uncommitted"] == [b"committed", b"aborted"]
    assert failing["calls"] >= 1


def test_no_broker_is_logged_not_raised(caplog: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed

    async def scenario() -> None:
        reader = GlobalReader(settings(f"127.0.0.1:{port}"), ["nope"], print, name="down")
        await reader.start()
        assert not await reader.wait_caught_up(3)
        assert reader.lag is None
        await reader.stop()

    run(scenario())
    assert any("global reader down: not started" in r.getMessage() for r in caplog.records)
