"""The worker's Redis sink against the real Redis, logged in as the worker's ACL user: pipelined,
coalesced writes with TTLs, and an unreachable Redis that costs counted errors, never an exception
in the event path. (An outage and its recovery: test_redis_outage.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from recstream.adapters.redis_sink import PROFILES_PER_PIPELINE, RedisSink, decode_vector
from recstream.config import Settings


@pytest.fixture
def keyspace(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    """A key prefix of its own (``it-*``: the worker ACL user's) and an admin client; the
    prefix's keys are deleted afterwards."""
    prefix = f"it-sink-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        yield prefix, client
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_queued_writes_are_coalesced_pipelined_and_expire(
    worker_redis_url: str, keyspace: tuple[str, redis.Redis]
) -> None:
    prefix, client = keyspace
    settings = Settings(redis_url=worker_redis_url, redis_prefix=prefix, recs_ttl_s=120)
    profile = np.linspace(-1, 1, 384, dtype=np.float32)

    async def scenario() -> RedisSink:
        sink = RedisSink(settings)
        writer = asyncio.create_task(sink.run_writer())
        for n in range(50):  # five users, ten lists each: only the last list of each matters
            await sink.put_recommendation(f"u{n % 5}", f'{{"n": {n}}}'.encode(), profile)
        await asyncio.wait_for(sink.flush(), 10)
        await sink.write_item_vectors(["i1"], profile[None, :], ["hash-1"])
        await sink.delete_item("i-gone")
        writer.cancel()
        await sink.close()
        return sink

    sink = asyncio.run(scenario())
    assert sink.errors == 0 and sink.writes <= 50
    for u in range(5):
        assert client.get(f"{prefix}:recs:u{u}") == f'{{"n": {45 + u}}}'.encode()
        assert 0 < client.ttl(f"{prefix}:recs:u{u}") <= 120
        stored = client.hgetall(f"{prefix}:user:u{u}")
        assert int(stored[b"dim"]) == 384
        assert np.array_equal(decode_vector(stored[b"vec"]), profile)
    item = client.hgetall(f"{prefix}:item:i1")
    assert item[b"text_hash"] == b"hash-1" and len(item[b"vec"]) == 384 * 4


def test_profiles_are_written_at_most_once_per_interval(
    worker_redis_url: str, keyspace: tuple[str, redis.Redis]
) -> None:
    prefix, client = keyspace
    settings = Settings(redis_url=worker_redis_url, redis_prefix=prefix, profile_interval_s=600)
    first, second = np.full(384, 0.5, dtype=np.float32), np.full(384, -0.5, dtype=np.float32)

    def stored_profile() -> np.ndarray:
        return decode_vector(client.hget(f"{prefix}:user:u1", "vec"))

    async def visible(body: bytes) -> None:
        while client.get(f"{prefix}:recs:u1") != body:
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        sink = RedisSink(settings)
        writer = asyncio.create_task(sink.run_writer())
        await sink.put_recommendation("u1", b'{"n": 1}', first)
        await asyncio.wait_for(visible(b'{"n": 1}'), 10)
        await asyncio.sleep(0.05)  # the first profile goes with the first list
        assert np.array_equal(stored_profile(), first)
        await sink.put_recommendation("u1", b'{"n": 2}', second)
        await asyncio.wait_for(visible(b'{"n": 2}'), 10)
        # The list is written at once; the profile waits for its interval (10 minutes)...
        assert np.array_equal(stored_profile(), first)
        await asyncio.wait_for(sink.flush(), 10)  # ...or a flush (checkpoint, shutdown)
        assert np.array_equal(stored_profile(), second)
        writer.cancel()
        await sink.close()

    asyncio.run(scenario())


def test_many_profiles_are_written_in_chunks_and_all_arrive(
    worker_redis_url: str, keyspace: tuple[str, redis.Redis]
) -> None:
    prefix, client = keyspace
    settings = Settings(redis_url=worker_redis_url, redis_prefix=prefix)
    n = 3 * PROFILES_PER_PIPELINE + 7

    async def scenario() -> RedisSink:
        sink = RedisSink(settings)
        writer = asyncio.create_task(sink.run_writer())
        for u in range(n):
            await sink.put_recommendation(f"u{u}", b"{}", np.full(384, u, dtype=np.float32))
        await asyncio.wait_for(sink.flush(), 10)
        writer.cancel()
        await sink.close()
        return sink

    assert asyncio.run(scenario()).errors == 0
    for u in range(n):
        vec = decode_vector(client.hget(f"{prefix}:user:u{u}", "vec"))
        assert vec.shape == (384,) and vec[0] == u, u


def test_unreachable_redis_is_counted_and_backed_off() -> None:
    settings = Settings(redis_url="redis://:x@127.0.0.1:1/0")  # nothing listens on port 1
    errors, skipped = [], []

    async def scenario() -> RedisSink:
        sink = RedisSink(
            settings, on_error=lambda: errors.append(1), on_skip=lambda: skipped.append(1)
        )
        writer = asyncio.create_task(sink.run_writer())
        for n in range(20):
            await sink.put_recommendation(f"u{n}", b"{}", None)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(sink.flush(), 10)
        writer.cancel()
        return sink

    sink = asyncio.run(scenario())
    # One failed connection, then writes are skipped during the back-off instead of each one
    # waiting for a connection timeout.
    assert sink.errors == len(errors) >= 1 and len(errors) < 5
    assert len(skipped) >= 10 and sink.writes == 0
    assert "Connection" in (sink.last_error or "") or "Error" in (sink.last_error or "")
