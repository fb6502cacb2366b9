"""Two workers in one consumer group (``RECSTREAM_STATE_STORE=kafka``) on the real broker: users
move with their partitions through ``<prefix>.user-state``, and neither a SIGKILL mid-stream nor
a clean hand-over loses or doubles an event (README, "Scaling out")."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_harness import Worker, wait_for

from recstream.user_partitions import decode_value

PARTITIONS = 4
USERS = 60
ITEMS = 40


def _event(n: int) -> tuple[bytes, bytes]:
    user = f"u{n % USERS}"
    kind = ("view", "click", "purchase")[n % 3]
    body = {"event_id": f"e{n}", "user_id": user, "item_id": f"i{(n * 7) % ITEMS}", "type": kind}
    return user.encode(), json.dumps({**body, "ts": 1_000.0 + n}).encode()


def _stream(producer: KafkaProducer, topic: str, first: int, n: int, rate: float) -> None:
    for k in range(first, first + n):
        key, value = _event(k)
        producer.send(topic, key=key, value=value)
        time.sleep(1.0 / rate)
    producer.flush()


def _group(workers: list[Worker]) -> dict[str, dict[str, Any]]:
    """The partitions the live workers hold: {partition: that worker's view of it}."""
    held: dict[str, dict[str, Any]] = {}
    for w in workers:
        h = w.health() if w.proc is not None and w.proc.poll() is None else None
        for p, info in ((h or {}).get("partitions") or {}).items():
            assert p not in held, f"partition {p} held twice: {held[p]} and {info}"
            held[p] = info
    return held


def _learned(workers: list[Worker]) -> int:
    return sum(info["events_processed"] for info in _group(workers).values())


def _markers(w: Worker) -> dict[int, dict[str, Any]]:
    """The committed marker of each partition of the user-state topic (read_committed)."""
    consumer = KafkaConsumer(
        **w.kafka_options(), isolation_level="read_committed", enable_auto_commit=False
    )
    tps = [TopicPartition(w.topic("user-state"), p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    markers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                if r.key is not None and r.key.startswith(b"p:"):
                    markers[tp.partition] = decode_value(r.value)
    consumer.close()
    return markers


def test_sigkill_and_hand_over_lose_and_double_nothing(
    redis_url: str, worker_redis: Any, bootstrap_servers: str, kafka_admin: Any, tmp_path: Path
) -> None:
    env = {
        "RECSTREAM_STATE_STORE": "kafka",
        "RECSTREAM_PARTITIONS": str(PARTITIONS),
        "RECSTREAM_STATE_FLUSH_INTERVAL_S": "1",
        "RECSTREAM_ENCODER_DEVICE": "cpu",
        # Users idle for 30 s of stream time (each user has an event every 60) are parked in
        # the worker's local store and come back with their next event: exactly, or the counts
        # and the dedup below would show it.
        "RECSTREAM_USER_TTL_S": "30",
    }
    login = worker_redis.env()  # the worker's ACL user, as in production
    a = Worker(bootstrap_servers, redis_url, "group", tmp_path / "a", login, **env)
    shared = {"RECSTREAM_TOPIC_PREFIX": a.prefix, "RECSTREAM_APP_ID": a.prefix}
    b = Worker(
        bootstrap_servers,
        redis_url,
        "group",
        tmp_path / "b",
        login,
        **env,
        **shared,
        RECSTREAM_REDIS_PREFIX=a.prefix,
    )
    b.prefix = a.prefix
    workers = [a, b]
    producer = KafkaProducer(**a.kafka_options(), acks="all", linger_ms=5)
    try:
        a.start().wait_ready()
        items = [
            (f"i{i}".encode(), json.dumps({"item_id": f"i{i}", "title": f"film {i}"}).encode())
            for i in range(ITEMS)
        ]
        a.send("items", items)
        _stream(producer, a.topic("events"), 0, 300, rate=1000)
        b.start().wait_ready()
        wait_for(lambda: len(_group(workers)) == PARTITIONS and b.health()["partitions"], 60,
                 "both workers holding partitions")  # fmt: skip
        # SIGKILL b while events flow: its last second of learning was never committed, and
        # the new owner must learn exactly those events again, and no others.
        flow = threading.Thread(
            target=_stream, args=(producer, a.topic("events"), 300, 900, 150), daemon=True
        )
        flow.start()
        wait_for(lambda: (b.health() or {}).get("events_processed", 0) >= 100, 60,
                 "b learning its share")  # fmt: skip
        held_by_b = sorted((b.health() or {})["partitions"])
        assert b.kill(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()
        wait_for(lambda: sorted(_group([a])) == [str(p) for p in range(PARTITIONS)], 60,
                 "a owning every partition again")  # fmt: skip
        recovered_s = time.monotonic() - killed_at
        flow.join(timeout=60)
        wait_for(lambda: _learned([a]) == 1200, 90, "all 1200 events learned once")

        # A clean hand-over: b comes back, the partitions are split again (a flushes the ones
        # it gives up on revocation), and a last burst is learned by whoever owns it now.
        b.start().wait_ready()
        wait_for(lambda: len(_group(workers)) == PARTITIONS and (b.health() or {}).get(
            "partitions"), 60, "b holding partitions again")  # fmt: skip
        _stream(producer, a.topic("events"), 1200, 300, rate=1000)
        wait_for(lambda: _learned(workers) == 1500, 90, "all 1500 events learned once")
        time.sleep(2)  # nothing more arrives later: no event was learned twice
        assert _learned(workers) == 1500
        health = [w.health() for w in workers]
        assert sum(h["duplicates"] for h in health) == 0
        parked = [h["idle_users"] for h in health]
        assert sum(p["evicted"] for p in parked) > 0, parked
        assert sum(p["brought_back"] for p in parked) > 0, parked
        assert sum(h["dlq_total"] for h in health) == 0
        by_partition = {int(p): info["position"] for p, info in _group(workers).items()}
        assert sum(by_partition.values()) == 1500, by_partition  # every offset read once

        # Every user's current list is in Redis, written by the owner of the user.
        def lists() -> int:
            return sum(a.redis.exists(a.key("recs", f"u{u}")) for u in range(USERS))

        wait_for(lambda: lists() == USERS, 30, "every user's list in Redis")
        print(f"partitions {held_by_b} served again {recovered_s:.1f} s after the SIGKILL")
        assert held_by_b
        # A clean stop commits what each worker learned: the markers in Kafka hold every event.
        for w in workers:
            w.stop()
        markers = _markers(a)
        assert sorted(markers) == list(range(PARTITIONS)), markers
        assert sum(m["events"] for m in markers.values()) == 1500, markers
        assert {p: m["position"] for p, m in markers.items()} == by_partition
    finally:
        producer.close()
        for w in workers:
            w.stop()
        a.cleanup(kafka_admin)
