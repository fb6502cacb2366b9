"""Pipelined vs one-round-trip-per-key writes of recommendation JSONs to the real Redis.

Both paths write the same N keys with the same values and TTL (``SET key value EX ttl``, the
command the worker issues); the unpipelined path pays one network round trip per key, the
pipelined one sends ``batch`` commands per round trip.
Keys live under a unique prefix and are deleted afterwards.

For context, the worker's own sink (``RedisSink``: each list plus the user's 384-d profile) is
timed on the same N users, fed one list per event: ``sink_writes_per_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.common import settings, unique_name


def _recommendation_json(user: int, k: int = 10) -> str:
    # Shaped like the worker's output (ARCHITECTURE.md §3), so the payload size is realistic.
    items = [
        {
            "item_id": f"i{(user * 7 + j) % 5000}",
            "score": round(0.9 - j * 0.01, 6),
            "reason": f"viewed together with i{user % 5000}",
        }
        for j in range(k)
    ]
    return json.dumps(
        {
            "user_id": f"u{user}",
            "items": items,
            "trigger_event_id": f"e-{user}",
            "model_version": "bench",
            "generated_at": time.time(),
            "latency_ms": 4.2,
        },
        separators=(",", ":"),
    )


async def _sink_rate(cfg: Any, prefix: str, payloads: list[tuple[str, str]]) -> float:
    """Writes/s through the worker's own RedisSink, fed one list per event as an agent does
    (yielding to the event loop between events, so its writer task batches what is queued)."""
    import numpy as np

    from recstream.adapters.redis_sink import RedisSink

    sink = RedisSink(cfg.replace(redis_prefix=prefix))
    profile = np.full(384, 1 / np.sqrt(384), dtype=np.float32)
    try:
        t0 = time.perf_counter()
        if hasattr(sink, "put_recommendation"):  # queued, pipelined writer task
            writer = asyncio.create_task(sink.run_writer())
            for n, (_, value) in enumerate(payloads):
                await sink.put_recommendation(f"u{n}", value.encode(), profile)
                await asyncio.sleep(0)
            await sink.flush()
            writer.cancel()
        else:  # one pipelined round trip per event, awaited
            for n, (_, value) in enumerate(payloads):
                await sink.write_recommendation(f"u{n}", value.encode(), profile)
        seconds = time.perf_counter() - t0
        if sink.errors:
            raise RuntimeError(f"RedisSink write failed: {sink.last_error}")
        return len(payloads) / seconds
    finally:
        await sink.close()


def run(n: int = 20_000, batch: int = 500, ttl: int = 600, quick: bool = False) -> dict[str, Any]:
    import redis

    cfg = settings()
    client = redis.Redis.from_url(cfg.redis_url)
    client.ping()
    prefix = unique_name("redis")
    payloads = [(f"{prefix}:recs:u{u}", _recommendation_json(u)) for u in range(n)]
    try:
        # Warm the connection and the server's allocator the same way for both paths.
        for key, value in payloads[:200]:
            client.set(key, value, ex=ttl)

        t0 = time.perf_counter()
        for key, value in payloads:
            client.set(key, value, ex=ttl)
        single_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for start in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for key, value in payloads[start : start + batch]:
                pipe.set(key, value, ex=ttl)
            pipe.execute()
        pipelined_s = time.perf_counter() - t0

        sink_prefix = f"{prefix}-sink"
        sink_per_s = asyncio.run(_sink_rate(cfg, sink_prefix, payloads))
        for pattern in (f"{sink_prefix}:recs:*", f"{sink_prefix}:user:*"):
            doomed = list(client.scan_iter(match=pattern, count=5000))
            for start in range(0, len(doomed), 5000):
                client.delete(*doomed[start : start + 5000])

        written = sum(1 for _ in client.scan_iter(match=f"{prefix}:recs:*", count=5000))
        if written != n:
            raise RuntimeError(f"expected {n} keys in Redis, found {written}")
    finally:
        keys = [key for key, _ in payloads]
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])
        client.close()
    return {
        "redis_pipeline_speedup": round(single_s / pipelined_s, 2),
        "n": n,
        "batch": batch,
        "payload_bytes": len(payloads[0][1]),
        "unpipelined_writes_per_s": round(n / single_s),
        "pipelined_writes_per_s": round(n / pipelined_s),
        "sink_writes_per_s": round(sink_per_s),
        "redis_url_host": cfg.redis_url.rsplit("@", 1)[-1],
    }


if __name__ == "__main__":
    print(json.dumps(run(n=2000), indent=2))
