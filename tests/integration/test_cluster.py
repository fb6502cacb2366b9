"""Issue 10, item 4: three workers in one consumer group on a 3-node cluster survive a worker's
SIGKILL and a broker's stop, mid-stream, with every event learned exactly once.

Setting: the private cluster of ``kafka_cluster`` (replication factor 3, ``min.insync.replicas``
2), three workers with ``RECSTREAM_STATE_STORE=kafka`` (each holds the users of its partitions,
persisted per partition in ``<prefix>.user-state``), 12 partitions, a stream of 3,000 events
over 200 users produced at a steady rate (idempotent, ``acks=all``). A fifth in, one worker is
SIGKILLed; later, broker node 2 is stopped cleanly, and started again a few seconds after.

Afterwards, with the stream drained:

* **exactly once across the group**: each partition is held by exactly one surviving worker, and
  its ``/healthz`` ``partitions`` entry (``{"<p>": {"events_processed": n, "position": offset}}``:
  events learned from that partition by *every* owner so far, restored with the partition's
  state) counts exactly the events sent to it, at the partition's end offset; no duplicate, no
  dead letter. The killed worker's own counters died with it: its partitions' events since their
  last flush are re-learned by the new owner from the last committed state, which is why the
  per-partition counts, not the per-process ``events_processed``, are what adds up;
* **every user with events has a current list in Redis**: its trigger is the user's last event;
* **recovery**: the time from the SIGKILL until every partition the dead worker held publishes
  a list again is measured (printed, with the other timings).

Marked slow: ~3 minutes on 2 cores, cluster start included.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from cluster import KafkaCluster
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_harness import WorkerGroup, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

PARTITIONS = 12
USERS = 200
ITEMS = 300
EVENTS = 3000
RATE = 50.0  # events/s: 60 s of stream, long enough for a rebalance and a broker restart
KILL_AT = 0.2  # fraction of the stream sent when worker 1 is SIGKILLed
BROKER_STOP_AT = 0.6  # ... when broker node 2 is stopped (the rebalance is over by then)
BROKER_DOWN_S = 3.0  # how long it stays down (plus its shutdown and start-up)
VICTIM = 1
BROKER = 2

ENV = {
    "RECSTREAM_STATE_STORE": "kafka",
    "RECSTREAM_PARTITIONS": str(PARTITIONS),
    # The broker's minimum (group.min.session.timeout.ms): a SIGKILLed worker leaves the group
    # after ~6 s instead of 30.
    "RECSTREAM_SESSION_TIMEOUT_S": "6",
    # No catalogue in this test: the events make their items, and nothing is encoded (the CPU
    # goes to the 3 brokers and the 3 workers).
    "RECSTREAM_ALLOW_UNKNOWN_ITEMS": "true",
}


class Stream:
    """``EVENTS`` events at ``RATE``/s in a thread; each one's partition and offset once acked."""

    def __init__(self, group: WorkerGroup, seed: int = 10) -> None:
        rng = random.Random(seed)
        self.topic = group.topic("events")
        self.events = [
            {
                "event_id": f"e{n}",
                "user_id": f"u{rng.randrange(USERS)}",
                "item_id": f"i{int(rng.paretovariate(1.2)) % ITEMS}",
                "type": rng.choices(("view", "click", "purchase"), (0.75, 0.18, 0.07))[0],
            }
            for n in range(EVENTS)
        ]
        self.sent = 0
        self.placed: list[tuple[int, int]] = []  # (partition, offset) per event, in order
        self.acked: list[float] = []  # when the broker acknowledged each event (any order)
        self.error: BaseException | None = None
        self.producer = KafkaProducer(
            **group[0].kafka_options(),
            acks="all",
            enable_idempotence=True,  # a retry after a broker stop never writes an event twice
            linger_ms=5,
            retries=1_000_000,
            delivery_timeout_ms=180_000,
            # A request stuck on the stopping node is given up soon (and retried on the new leader)
            request_timeout_ms=5_000,
        )
        self.thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def _run(self) -> None:
        try:
            futures = []
            t0 = time.monotonic()
            for n, event in enumerate(self.events):
                delay = t0 + n / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                event["ts"] = time.time()
                value = json.dumps(event).encode()
                future = self.producer.send(self.topic, key=event["user_id"].encode(), value=value)
                future.add_callback(lambda _md: self.acked.append(time.time()))
                futures.append(future)
                self.sent = n + 1
            self.producer.flush(timeout=180)
            for future in futures:
                md = future.get(timeout=180)
                self.placed.append((md.partition, md.offset))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.producer.close(timeout=10)

    def start(self) -> Stream:
        self.thread.start()
        return self

    def wait_sent(self, fraction: float) -> None:
        wait_for(lambda: self.sent >= fraction * EVENTS or self.error, 300, f"{fraction:.0%} sent")

    def join(self) -> None:
        self.thread.join(timeout=300)
        assert self.error is None, f"the producer failed: {self.error!r}"
        assert len(self.placed) == EVENTS

    def per_partition(self) -> Counter[int]:
        return Counter(p for p, _ in self.placed)

    def last_event(self) -> dict[str, str]:
        return {e["user_id"]: e["event_id"] for e in self.events}


def end_offsets(group: WorkerGroup, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(**group[0].kafka_options(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def held_partitions(health: dict | None) -> dict[int, dict]:
    """``{partition: entry}`` of a worker's /healthz ``partitions`` (issue 10's per-partition
    state; absent before the kafka state store exposes it)."""
    if not health or not isinstance(health.get("partitions"), dict):
        return {}
    return {int(p): entry for p, entry in health["partitions"].items()}


def assignment(group: WorkerGroup) -> dict[int, set[int]]:
    return {i: set(held_partitions(h)) for i, h in group.healths().items()}


def group_state(cluster: KafkaCluster, group_id: str) -> tuple[str, int]:
    """(state, members) of the consumer group, as its coordinator describes it."""
    admin = cluster.admin()
    try:
        info = admin.describe_groups([group_id])[group_id]
    finally:
        admin.close()
    return str(info.get("group_state") or info.get("state")), len(info.get("members") or [])


def first_list_after(recs_by_partition: dict[int, list[float]], since: float) -> dict[int, float]:
    """Per partition, seconds from ``since`` to the first list published after it."""
    out = {}
    for p, stamps in recs_by_partition.items():
        later = [t for t in stamps if t > since]
        if later:
            out[p] = min(later) - since
    return out


def longest_silence(stamps: list[float], start: float, end: float) -> float:
    """The longest gap between lists of one partition within [start, end]."""
    points = [start, *sorted(t for t in stamps if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def test_three_workers_survive_a_sigkill_and_a_broker_stop(
    kafka_cluster: KafkaCluster, make_group: Callable[..., WorkerGroup]
) -> None:
    t_test = time.monotonic()
    timings: dict[str, Any] = {"cluster_start_s": kafka_cluster.start_seconds}
    notes: list[str] = []
    group = make_group(3, **ENV)
    t0 = time.monotonic()
    group.start(timeout=240)
    timings["workers_ready_s"] = time.monotonic() - t0

    # All three in the group, and every partition assigned, before the first event.
    t0 = time.monotonic()
    wait_for(lambda: group_state(kafka_cluster, group.prefix) == ("Stable", 3), 120, "3 members")
    if held_partitions(group[0].health()) or "partitions" in (group[0].health() or {}):
        wait_for(
            lambda: (
                (a := assignment(group))
                and all(a.values())
                and set().union(*a.values()) == set(range(PARTITIONS))
            ),
            120,
            "all 12 partitions held, each worker with some",
        )
    else:
        notes.append("/healthz has no 'partitions' field yet: per-partition checks will fail")
    timings["group_stable_s"] = time.monotonic() - t0
    before = assignment(group)

    stream = Stream(group).start()
    t_stream = time.time()
    # -- SIGKILL a worker mid-stream --------------------------------------------------------
    stream.wait_sent(KILL_AT)
    victim_partitions = held_partitions(group[VICTIM].health())
    t_kill = time.time()
    group[VICTIM].kill(signal.SIGKILL)
    kill_sent = stream.sent

    # -- stop a broker mid-stream, start it again -------------------------------------------
    stream.wait_sent(BROKER_STOP_AT)
    t_broker_stop = time.time()
    timings["broker_stop_s"] = kafka_cluster.stop_node(BROKER)
    time.sleep(BROKER_DOWN_S)
    timings["broker_restart_s"] = kafka_cluster.start()
    t_broker_back = time.time()
    assert "DOWN" not in kafka_cluster.status(), kafka_cluster.status()

    stream.join()
    timings["stream_s"] = EVENTS / RATE
    sent = stream.per_partition()
    ends = end_offsets(group, group.topic("events"))
    assert {p: ends[p] for p in sent} == dict(sent), "the events topic holds more than was sent"
    survivors = [i for i in range(len(group)) if i != VICTIM]

    # -- drained: every partition's owner at the end of it ----------------------------------
    def drained() -> dict | None:
        healths = {i: group[i].health() for i in survivors}
        held = {i: held_partitions(h) for i, h in healths.items()}
        positions = {p: e.get("position") for parts in held.values() for p, e in parts.items()}
        if all(positions.get(p) == ends[p] for p in range(PARTITIONS)):
            return healths
        return None

    last_event = stream.last_event()

    def current_lists() -> list[str]:
        """Users whose list in Redis is not the one of their last event."""
        stale = []
        for user, last in sorted(last_event.items()):
            raw = group[0].redis.get(group.key("recs", user))
            trigger = json.loads(raw)["trigger_event_id"] if raw else None
            if trigger != last:
                stale.append(f"{user}: list for {trigger}, last event {last}")
        return stale

    t0 = time.monotonic()
    try:
        if "partitions" in (group[survivors[0]].health() or {}):
            healths = wait_for(drained, 120, "every partition's position at its end offset")
        else:  # no per-partition state to watch: the lists in Redis say when it is over
            wait_for(lambda: not current_lists(), 120, "every user's current list in Redis")
            healths = {i: group[i].health() for i in survivors}
    except AssertionError as exc:
        healths = {i: group[i].health() for i in survivors}
        notes.append(f"not drained: {exc}")
    timings["drain_s"] = time.monotonic() - t0

    # -- recovery: the dead worker's partitions publish again -------------------------------
    recs = group.read("recommendations", timeout=60)
    stamps: dict[int, list[float]] = defaultdict(list)
    for r in recs:
        stamps[r.partition].append(r.timestamp / 1000)
    firsts = first_list_after(stamps, t_kill)
    dead = sorted(victim_partitions) or list(range(PARTITIONS))
    if not victim_partitions:
        notes.append("victim's partitions unknown (no 'partitions' in /healthz): all partitions")
    recovered = [firsts.get(p) for p in dead]
    timings["sigkill_to_dead_partitions_publishing_s"] = (
        max(recovered) if recovered and None not in recovered else None
    )
    timings["sigkill_to_dead_partitions_per_partition_s"] = {
        p: round(firsts[p], 2) if p in firsts else None for p in dead
    }
    window = (t_broker_stop, t_broker_back + 5)
    silences = {p: longest_silence(stamps[p], *window) for p in range(PARTITIONS)}
    timings["broker_outage_longest_silence_s"] = max(silences.values())
    timings["broker_outage_silence_per_partition_s"] = silences
    # The producer's side of the same window: a silence of the lists that is also a gap in the
    # acknowledged events is the cluster refusing writes, not the workers stalling.
    timings["broker_outage_longest_ack_gap_s"] = longest_silence(stream.acked, *window)
    # When things happened, in seconds from the first event.
    timings["timeline_s"] = {
        "sigkill": t_kill - t_stream,
        "broker_stop": t_broker_stop - t_stream,
        "broker_back": t_broker_back - t_stream,
        "last_event_sent": EVENTS / RATE,
    }
    timings["test_s"] = time.monotonic() - t_test

    # -- the report (before any assertion: the timings are wanted either way) --------------
    counted = {
        i: {
            "events_processed": (h or {}).get("events_processed"),
            "duplicates": (h or {}).get("duplicates"),
            "dlq_total": (h or {}).get("dlq_total"),
            "partitions": sorted(held_partitions(h)),
        }
        for i, h in healths.items()
    }
    print("\n----- test_cluster report -----")
    print(f"partitions before the kill: { {i: sorted(p) for i, p in before.items()} }")
    print(f"SIGKILL worker {VICTIM} after {kill_sent} events; it held {dead}")
    print(f"survivors at the end: {json.dumps(counted)}")
    print("timings: " + json.dumps({k: _round(v) for k, v in timings.items()}))
    for note in notes:
        print(f"note: {note}")

    # -- exactly once across the group ------------------------------------------------------
    held = {i: held_partitions(h) for i, h in healths.items()}
    assert any(held.values()), (
        "no worker reports per-partition state (/healthz 'partitions'): "
        f"sent {EVENTS}, survivors' events_processed {counted}"
    )
    problems = []
    for p in range(PARTITIONS):
        owners = [i for i, parts in held.items() if p in parts]
        if len(owners) != 1:
            problems.append(f"partition {p}: held by workers {owners}")
            continue
        entry = held[owners[0]][p]
        if entry.get("events_processed") != sent[p] or entry.get("position") != ends[p]:
            problems.append(
                f"partition {p} (worker {owners[0]}): learned {entry.get('events_processed')} "
                f"of {sent[p]} sent, position {entry.get('position')} of {ends[p]}"
            )
    assert not problems, "not exactly once:\n" + "\n".join(problems)
    assert sum(sent.values()) == EVENTS
    assert all(c["duplicates"] == 0 and c["dlq_total"] == 0 for c in counted.values()), counted

    # -- every user with events has a current list in Redis ---------------------------------
    stale = current_lists()
    assert not stale, f"{len(stale)} users without a current list, e.g. {stale[:5]}"

    # -- recovery: the killed worker held partitions, and each publishes again ---------------
    assert victim_partitions, f"worker {VICTIM} held no partition when it was killed: {before}"
    assert timings["sigkill_to_dead_partitions_publishing_s"] is not None, timings


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value
