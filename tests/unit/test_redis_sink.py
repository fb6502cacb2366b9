"""The Redis sink's retry policy against a small stub client (no Redis, no fake Redis server):
what an outage keeps, what it drops, what wins, and how little it logs. The same sink against
the real Redis, stopped and restarted mid-stream: tests/integration/test_redis_outage.py."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from recstream.adapters.metrics import REDIS_KINDS, Metrics
from recstream.adapters.redis_outage import Outage
from recstream.adapters.redis_sink import PENDING_KINDS, RedisSink, decode_vector
from recstream.config import Settings


class StubRedis:
    """What the sink calls on a redis-py client: pipeline (set, hset, expire, delete), get,
    ping, aclose. ``down`` makes every command fail; ``gate`` holds a pipeline mid-flight."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.down = False
        self.gate: asyncio.Event | None = None
        self.pipelines = 0

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError(
                "Error 111 connecting to 127.0.0.1:6379. Connection refused."
            )

    def pipeline(self, transaction: bool = False) -> StubPipeline:
        return StubPipeline(self)

    async def ping(self) -> bool:
        self._check()
        return True

    async def get(self, key: str) -> Any:
        self._check()
        return self.data.get(key)

    async def aclose(self) -> None:
        pass


class StubPipeline:
    def __init__(self, client: StubRedis) -> None:
        self.client = client
        self.ops: list[Callable[[], None]] = []

    async def __aenter__(self) -> StubPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        self.ops.append(lambda: self.client.data.__setitem__(key, value))

    def hset(self, key: str, mapping: dict[str, Any]) -> None:
        self.ops.append(lambda: self.client.data.setdefault(key, {}).update(mapping))

    def expire(self, key: str, seconds: int) -> None:
        pass

    def delete(self, *keys: str) -> None:
        self.ops.append(lambda: [self.client.data.pop(key, None) for key in keys])

    async def execute(self) -> list[None]:
        if self.client.gate is not None:
            await self.client.gate.wait()
        self.client._check()
        self.client.pipelines += 1
        return [op() for op in self.ops]


def fast_outage(**kw: Any) -> Outage:
    return Outage(min_backoff_s=0.01, max_backoff_s=0.05, **kw)


def run(scenario: Callable[[RedisSink, StubRedis], Awaitable[None]], **sink_kw: Any) -> RedisSink:
    """Run ``scenario(sink, stub)`` with the writer task running; returns the sink."""
    stub = StubRedis()

    async def main() -> RedisSink:
        sink = RedisSink(
            Settings(redis_prefix="p", profile_interval_s=0.0),
            client=stub,  # type: ignore[arg-type]
            outage=sink_kw.pop("outage", None) or fast_outage(),
            **sink_kw,
        )
        writer = asyncio.create_task(sink.run_writer())
        try:
            await asyncio.wait_for(scenario(sink, stub), 10)
        finally:
            writer.cancel()
            await sink.close()
        return sink

    return asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_lists_and_profiles_computed_while_down_are_written_once_redis_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    skipped: list[int] = []
    profile = np.full(4, 0.5, dtype=np.float32)

    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        await until(lambda: sink.up)
        stub.down = True
        for n in range(30):  # 10 users, 3 lists each, while Redis is down
            await sink.put_recommendation(f"u{n % 10}", f"{n}".encode(), profile)
            await asyncio.sleep(0.002)
        await until(lambda: not sink.up)
        await asyncio.wait_for(sink.flush(), 1)  # a flush never waits for the outage
        assert not any(k.startswith("p:recs:") for k in stub.data)
        assert sink.pending_writes("list") == 10 and sink.pending_writes("profile") == 10
        stub.down = False
        await until(lambda: sink.pending == 0)

    with caplog.at_level(logging.INFO, logger="recstream.adapters.redis_sink"):
        sink = run(scenario, on_skip=lambda: skipped.append(1))
    stub_data = sink.client.data  # type: ignore[attr-defined]
    for u in range(10):
        assert stub_data[f"p:recs:u{u}"] == f"{20 + u}".encode()  # the latest of each user
        assert np.array_equal(decode_vector(stub_data[f"p:user:u{u}"]["vec"]), profile)
    assert sink.up and sink.errors >= 1 and sink.dropped == 0 and len(skipped) >= 20
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # the first failure, the recovery: not one line per write
    assert lines[0].startswith("redis: unreachable (ConnectionError: Error 111")
    assert lines[1].startswith("redis: recovered after")
    assert "20 writes kept meanwhile are retried now, 0 dropped" in lines[1]


def test_a_newer_list_queued_while_an_older_one_fails_wins() -> None:
    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        await until(lambda: sink.up)
        stub.gate = asyncio.Event()  # the next pipeline is held in flight...
        await sink.put_recommendation("u1", b"old", None)
        await until(lambda: sink.pending_writes("list") == 0)  # ...taken by the writer
        await sink.put_recommendation("u1", b"new", None)
        stub.down = True
        stub.gate.set()  # the pipeline with "old" fails and goes back to the queue
        await until(lambda: not sink.up)
        assert sink.pending_writes("list") == 1
        stub.gate, stub.down = None, False
        await until(lambda: sink.pending == 0)
        assert stub.data["p:recs:u1"] == b"new"

    run(scenario)


def test_over_the_cap_the_oldest_pending_users_are_dropped_and_counted() -> None:
    drops: list[tuple[str, int]] = []

    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        await until(lambda: sink.up)
        stub.down = True
        await sink.ping()
        for u in range(5):
            await sink.put_recommendation(f"u{u}", b"x", np.zeros(4, dtype=np.float32))
        # u0 again: it becomes the newest, so u1 and u2 are the oldest
        await sink.put_recommendation("u0", b"y", None)
        assert sink.pending_writes("list") == 3 and sink.dropped > 0
        stub.down = False
        await until(lambda: sink.pending == 0)
        assert {k for k in stub.data if k.startswith("p:recs:")} == {
            "p:recs:u0",
            "p:recs:u3",
            "p:recs:u4",
        }
        assert stub.data["p:recs:u0"] == b"y"

    sink = run(scenario, max_pending=3, on_drop=lambda kind, n: drops.append((kind, n)))
    assert sum(n for kind, n in drops if kind == "list") == 3  # u1, u2 and the first u0
    assert sum(n for kind, n in drops if kind == "profile") == 2  # u0, u1
    assert sink.dropped == 5


def test_item_vectors_and_deletions_are_retried_latest_per_item() -> None:
    vec = np.ones((1, 4), dtype=np.float32)

    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        await until(lambda: sink.up)
        stub.data["p:item:gone"] = {"vec": b"stale"}
        stub.down = True
        assert not await sink.write_item_vectors(["i1"], vec, ["h1"])  # fails: kept
        assert not await sink.write_item_vectors(["i2"], vec, ["h2"])  # backing off: kept
        assert not await sink.delete_item("i2")  # the deletion replaces the vector
        assert not await sink.delete_item("gone")
        assert sink.pending_writes("item") == 3
        stub.down = False
        await until(lambda: sink.pending == 0)
        assert stub.data["p:item:i1"]["text_hash"] == "h1"
        assert "p:item:i2" not in stub.data and "p:item:gone" not in stub.data
        # A direct write supersedes a kept one for the same item (never overwritten by it).
        stub.down = True
        assert not await sink.write_item_vectors(["i3"], vec, ["old"])
        stub.down = False
        await until(lambda: not sink.outage.backing_off())
        assert await sink.write_item_vectors(["i3"], vec, ["new"])
        await until(lambda: sink.pending == 0)
        await asyncio.sleep(0.05)
        assert stub.data["p:item:i3"]["text_hash"] == "new"

    run(scenario)


def test_an_outage_logs_a_few_lines_whatever_the_failures() -> None:
    now = [100.0]
    logger = logging.getLogger("test.redis.outage")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        outage = Outage(clock=lambda: now[0], log_every_s=30.0, logger=logger)
        for _ in range(1000):  # 1000 failed writes over 100 s
            outage.failed("ConnectionError: refused", pending=7, dropped=0)
            now[0] += 0.1
        assert not outage.up and outage.backoff == 30.0 and outage.failures == 1000
        outage.succeeded(retried=42, dropped=3)
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert len(lines) == 5, lines  # first failure, 3 "still" lines (30, 60, 90 s), recovery
    assert re.fullmatch(
        r"redis: still unreachable after 30 s: 30\d failed tries, 7 writes kept, 0 dropped; "
        r"last error: ConnectionError: refused",
        lines[1],
    )
    assert lines[-1] == (
        "redis: recovered after 100.0 s (1000 failed tries); 42 writes kept meanwhile are "
        "retried now, 3 dropped"
    )
    assert outage.up and outage.backoff == 0.0 and not outage.backing_off()


def test_the_gauges_read_the_sink() -> None:
    assert REDIS_KINDS == PENDING_KINDS  # the gauge's labels are the sink's kinds
    metrics = Metrics()

    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        metrics.watch_redis(pending=sink.pending_writes, up=lambda: sink.up)
        await until(lambda: sink.up)
        stub.down = True
        await sink.put_recommendation("u1", b"x", None)
        await until(lambda: not sink.up)
        text = metrics.exposition().decode()
        assert "recstream_redis_up 0.0" in text
        assert 'recstream_redis_pending_writes{kind="list"} 1.0' in text
        stub.down = False
        await until(lambda: sink.pending == 0)

    run(scenario, on_drop=metrics.redis_dropped_writes)
    text = metrics.exposition().decode()
    assert "recstream_redis_up 1.0" in text
    assert 'recstream_redis_pending_writes{kind="list"} 0.0' in text
    assert 'recstream_redis_dropped_writes_total{kind="item"} 0.0' in text


def test_a_forgotten_user_stays_forgotten_through_a_failed_pipeline() -> None:
    async def scenario(sink: RedisSink, stub: StubRedis) -> None:
        await until(lambda: sink.up)
        await sink.put_recommendation("u1", b"old", np.ones(4, dtype=np.float32))
        await sink.put_recommendation("u2", b"keep", None)
        await until(lambda: "p:recs:u1" in stub.data)
        stub.gate = asyncio.Event()  # the next pipeline waits mid-flight...
        await sink.put_recommendation("u1", b"newer", None)
        await sink.put_recommendation("u2", b"kept", None)
        await asyncio.sleep(0.02)
        sink.forget_user("u1")  # ...while u1 asks to be forgotten
        stub.down = True
        stub.gate.set()  # ...and then fails
        await until(lambda: not sink.up)
        stub.gate, stub.down = None, False
        await until(lambda: sink.pending == 0 and sink.up)

    sink = run(scenario)
    data = sink.client.data  # type: ignore[attr-defined]
    assert "p:recs:u1" not in data and "p:user:u1" not in data
    assert data["p:recs:u2"] == b"kept"
