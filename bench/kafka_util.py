"""Kafka helpers for the benchmarks: topics, pre-producing events, a raw aiokafka drain.

The raw drain is the baseline of every Kafka efficiency figure: an aiokafka consumer that only
counts messages, run in its own process (like the worker it is compared with) and timed from its
first fetch to its N-th message. The Faust side is timed from its first event to its N-th, which
leaves one fetch round trip out of its window: a bias in Faust's favour, never against it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bench.common import ROOT, settings


def bootstrap() -> list[str]:
    return settings().bootstrap_servers


def create_topics(names: Sequence[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap(), client_id="recstream-bench")
    try:
        admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        admin.close()


def delete_topics_with_prefix(*prefixes: str) -> list[str]:
    """Remove the benchmark's topics (and Faust's internal ones, named after the app id)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap(), client_id="recstream-bench")
    try:
        doomed = [t for t in admin.list_topics() if t.startswith(tuple(prefixes))]
        if doomed:
            admin.delete_topics(doomed)
        return doomed
    finally:
        admin.close()


def produce(topic: str, messages: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Send (key, value) pairs and wait until the broker has acknowledged every one."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap(),
        acks=1,
        linger_ms=20,
        batch_size=256 * 1024,
        compression_type=None,
    )
    t0 = time.perf_counter()
    n = 0
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
            n += 1
        producer.flush(timeout=120)
    finally:
        producer.close()
    seconds = time.perf_counter() - t0
    return {"produced": n, "produce_s": round(seconds, 2), "produce_per_s": round(n / seconds)}


async def _raw_drain(topic: str, n: int, timeout_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # No consumer group: partitions are assigned by hand, so no join/rebalance wait sits in (or
    # before) the timed window; the clock starts with the first fetch from offset 0.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            # A topic created a moment ago may not be in the metadata this client fetched yet.
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        t0 = time.perf_counter()
        last = t0
        deadline = time.monotonic() + timeout_s
        while seen < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                seen += len(records)
            last = time.perf_counter()
    finally:
        await consumer.stop()
    if seen < n:
        raise RuntimeError(f"raw aiokafka consumer saw {seen} of {n} messages in {timeout_s} s")
    return {
        "events": seen,
        "partitions": len(tps),
        "seconds": last - t0,
        "events_per_s": seen / (last - t0),
    }


def raw_drain(topic: str, n: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """Drain ``topic`` from the beginning with a bare aiokafka consumer, in a fresh process."""
    args = json.dumps({"topic": topic, "n": n, "timeout_s": timeout_s})
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kafka_util", args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"raw drain failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    params = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(_raw_drain(**params))))


def read_topic(
    topic: str, n: int, timeout_s: float = 120.0, idle_s: float | None = None
) -> list[Any]:
    """The first ``n`` records of ``topic`` (all partitions, from offset 0), as kafka-python
    ConsumerRecords; fewer if the topic holds fewer after ``timeout_s``, or (``idle_s``) once
    nothing new has arrived for ``idle_s`` after the first record."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while len(out) < n and time.monotonic() < deadline:
            before = len(out)
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
            if len(out) > before:
                last_new = time.monotonic()
            elif idle_s is not None and out and time.monotonic() - last_new >= idle_s:
                break
        return out
    finally:
        consumer.close()


def event_positions(topic: str, n: int) -> dict[str, tuple[int, int]]:
    """``event_id -> (partition, offset)`` of the first ``n`` events on ``topic``."""
    return {json.loads(r.value)["event_id"]: (r.partition, r.offset) for r in read_topic(topic, n)}


def reflected_rate(
    recommendations: list[dict[str, Any]],
    positions: dict[str, tuple[int, int]],
    start_fraction: float = 0.05,
) -> dict[str, Any]:
    """Events/s the worker learned and published, from its lists on the recommendations topic.

    The worker reads each partition in order and publishes one list per user per batch, after
    the whole batch is learned; so a list whose trigger is at offset ``o`` of partition ``p``
    shows that every event of ``p`` up to ``o`` was processed by its ``generated_at``. The rate
    is taken from the first list by which ``start_fraction`` of the events (of ``positions``:
    the ones timed) were reflected, to the last list. At the start of the window the count is a
    lower bound (events of the same batch whose lists come later are not seen yet), which
    overstates the rate by at most one batch (``RECSTREAM_BATCH_MAX``) over the window.
    """
    import bisect
    from collections import defaultdict

    offsets: dict[int, list[int]] = defaultdict(list)
    for partition, offset in positions.values():
        offsets[partition].append(offset)
    for values in offsets.values():
        values.sort()
    timed = [r for r in recommendations if r["trigger_event_id"] in positions]
    timed.sort(key=lambda r: r["generated_at"])
    highest: dict[int, int] = {}
    series: list[tuple[float, int]] = []  # (generated_at, events reflected by then)
    for rec in timed:
        partition, offset = positions[rec["trigger_event_id"]]
        highest[partition] = max(offset, highest.get(partition, -1))
        done = sum(bisect.bisect_right(offsets[p], o) for p, o in highest.items())
        series.append((rec["generated_at"], done))
    if not series or series[-1][1] < len(positions):
        reflected = series[-1][1] if series else 0
        raise RuntimeError(f"the lists reflect {reflected} of {len(positions)} events")
    t0, done0 = next(s for s in series if s[1] >= start_fraction * len(positions))
    t1, done1 = series[-1]
    return {
        "events": len(positions),
        "lists": len(timed),
        "lists_per_event": round(len(timed) / len(positions), 3),
        "events_timed": done1 - done0,
        "seconds": round(t1 - t0, 3),
        "events_per_s": (done1 - done0) / (t1 - t0),
    }
