"""Redis heals: the sink keeps writing while the real Redis is stopped and started again, and
afterwards every user's latest list (and every item's latest vector or deletion) is in Redis, with
a handful of log lines for the whole outage. A private server (redis.sh on a free port, tmp
state), so the session's shared Redis is never stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable

import numpy as np
import pytest
from redis_server import RedisServer

from recstream.adapters.redis_sink import RedisSink, decode_vector


def test_every_latest_list_is_in_redis_after_an_outage(
    make_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_redis()
    prefix = f"recstream:it-outage-{uuid.uuid4().hex[:8]}"  # the worker user's recstream:*
    settings = server.worker_settings(redis_prefix=prefix, profile_interval_s=0.2)
    rng = random.Random(7)
    latest: dict[str, bytes] = {}
    vec = np.ones((1, 8), dtype=np.float32)
    phases: dict[str, float] = {}

    async def stream(sink: RedisSink, users: range, seconds: float) -> None:
        """Lists for ``users`` in shuffled passes, one per millisecond or so, like the worker,
        for ``seconds`` and at least one pass: every user gets a list however slow the machine
        (random picks left one of 300 users out on a loaded CI machine)."""
        end = time.monotonic() + seconds
        order: list[int] = []
        n = 0
        while time.monotonic() < end or n < len(users):
            if not order:
                order = list(users)
                rng.shuffle(order)
            user = f"u{order.pop()}"
            body = json.dumps({"user_id": user, "n": n, "t": time.time()}).encode()
            await sink.put_recommendation(user, body, np.full(8, n, dtype=np.float32))
            latest[user] = body
            n += 1
            await asyncio.sleep(0.001)

    async def scenario() -> RedisSink:
        sink = RedisSink(settings)
        writer = asyncio.create_task(sink.run_writer())
        await sink.write_item_vectors(["doomed"], vec, ["h0"])
        await stream(sink, range(0, 200), 1.0)
        assert sink.up and sink.errors == 0

        t0 = time.monotonic()
        await asyncio.to_thread(server.stop)  # SIGTERM: the sink's connections drop
        phases["stopped"] = time.monotonic() - t0
        # Users 200-299 are only ever seen while Redis is down.
        await stream(sink, range(0, 300), 2.0)
        assert not sink.up and sink.pending_writes("list") > 0
        assert not await sink.write_item_vectors(["i-new"], vec, ["h1"])
        assert not await sink.delete_item("doomed")
        await asyncio.wait_for(sink.flush(), 1)  # checkpoints must not wait for the outage

        await asyncio.to_thread(server.start)
        t1 = time.monotonic()
        await stream(sink, range(0, 300), 0.5)
        while sink.pending_writes("list") or sink.pending_writes("item"):
            assert time.monotonic() - t1 < 40, f"{sink.pending} writes still pending"
            await asyncio.sleep(0.05)
        phases["healed_after_restart"] = time.monotonic() - t1
        await asyncio.wait_for(sink.flush(), 10)
        writer.cancel()
        await sink.close()
        return sink

    with caplog.at_level(logging.INFO, logger="recstream.adapters.redis_sink"):
        sink = asyncio.run(scenario())

    admin = server.admin()
    try:
        missing = [u for u, body in latest.items() if admin.get(f"{prefix}:recs:{u}") != body]
        assert not missing, f"{len(missing)} of {len(latest)} users lack their latest list"
        assert len(latest) == 300
        profile = decode_vector(admin.hget(f"{prefix}:user:u250", "vec"))
        assert profile.shape == (8,)
        assert admin.hget(f"{prefix}:item:i-new", "text_hash") == b"h1"
        assert not admin.exists(f"{prefix}:item:doomed")
    finally:
        for key in admin.scan_iter(match=f"{prefix}:*", count=1000):
            admin.delete(key)
        admin.close()

    assert sink.dropped == 0 and sink.errors >= 1 and sink.up
    lines = [r.getMessage() for r in caplog.records]
    # A few lines for the whole outage, not one per failed write.
    assert 2 <= len(lines) <= 4, lines
    assert lines[0].startswith("redis: unreachable")
    assert lines[-1].startswith("redis: recovered after") and "0 dropped" in lines[-1]
    print(f"outage phases (s): {phases}; log:", *lines, sep="\n  ")
