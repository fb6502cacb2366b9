"""Several workers (``RECSTREAM_STATE_STORE=kafka``): throughput of 1 vs 2 workers, and recovery.

The same synthetic workload (``bench.workload``) on two fresh topic prefixes, in one run:

0. **One worker, local checkpoints** (``RECSTREAM_STATE_STORE=local``, today's default): what
   the kafka mode costs one worker (``kafka_mode_vs_local_1_worker``).
1. **One worker** in kafka mode (the same code path as a group, so the ratio compares like with
   like: per-partition transactions, item deltas): catalogue first (every vector present),
   then N events produced as fast as kafka-python can; the rate is measured the way
   ``bench.pipeline`` does (``kafka_util.reflected_rate`` over the recommendations topic: events
   reflected per second of ``generated_at``), and each worker's CPU seconds (utime + stime of
   its process, from ``/proc``) are divided by the events.
2. **Two workers** in one consumer group, the same way; the clock starts when both hold their
   share of the partitions.
   ``scaleout_efficiency`` = rate(2) / (2 × rate(1)): 1.0 is perfect scaling; on a 2-core
   machine the broker, the producer and both workers share the cores, which bounds it.
3. **Recovery**: one of the two workers is SIGKILLed, events keep coming, and
   ``rebalance_recovery_s`` is the time from the kill until every partition the dead worker
   held has published a list again (session timeout + rebalance + state restore).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from bench.common import delete_redis_prefix, redis_client, unique_name
from bench.kafka_util import (
    delete_topics_with_prefix,
    event_positions,
    produce,
    read_topic,
    reflected_rate,
)
from bench.worker_util import Worker
from bench.workload import catalogue_vectors, workload

SESSION_TIMEOUT_S = 6  # the broker's minimum: a killed worker's partitions move after ~6 s


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _owned(workers: list[Worker]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in workers:
        h = w.health() or {}
        for p in h.get("partitions") or {}:
            out[p] = out.get(p, 0) + 1
    return out


def _learned(workers: list[Worker]) -> int:
    total = 0
    for w in workers:
        h = w.health() or {}
        if h.get("state_store") == "local":
            total += h.get("events_processed") or 0
            continue
        total += sum(v["events_processed"] for v in (h.get("partitions") or {}).values())
    return total


def _wait(cond: Any, timeout_s: float, what: str, workers: list[Worker]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            w.check_alive()
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(w.log_tail(15) for w in workers)
    raise TimeoutError(f"not {what} after {timeout_s:.0f} s:\n{tails}")


def _group_pass(
    items: list, events: list, n_workers: int, partitions: int, recover: bool, store: str = "kafka"
) -> dict[str, Any]:
    prefix = unique_name(f"scaleout{n_workers}")
    env = {
        "RECSTREAM_STATE_STORE": store,
        "RECSTREAM_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    }
    workers = [Worker(prefix, partitions, extra_env=env, loglevel="info") for _ in range(n_workers)]
    n = len(events)
    try:
        workers[0].start()
        workers[0].load_catalogue(items)
        for w in workers[1:]:
            w.start()
        _wait(
            lambda: all(
                (h := w.health()) and (h.get("item_vectors") or 0) >= len(items) for w in workers
            ),
            600,
            "every worker with every vector",
            workers,
        )
        if store == "kafka":
            _wait(
                lambda: len(o := _owned(workers)) == partitions and set(o.values()) == {1},
                120,
                f"{partitions} partitions owned once across {n_workers} workers",
                workers,
            )
        cpu0 = [_cpu_s(w.proc.pid) for w in workers]
        busy0, total0 = _machine_jiffies()
        topic = workers[0].settings.topic("events")
        produced = produce(topic, ((e.user_id.encode(), e.to_json()) for e in events))
        _wait(lambda: _learned(workers) >= n, 1800, f"{n} events learned", workers)
        cpu = [_cpu_s(w.proc.pid) - c for w, c in zip(workers, cpu0, strict=True)]
        busy1, total1 = _machine_jiffies()
        records = read_topic(workers[0].settings.topic("recommendations"), n, idle_s=3)
        recs = [json.loads(r.value) for r in records]
        rate = reflected_rate(recs, event_positions(topic, n))
        dups = sum((w.health() or {}).get("duplicates", 0) for w in workers)
        # This process's events per worker: how evenly the partitions split the load.
        by_worker = [(w.health() or {}).get("events_processed") for w in workers]
        out: dict[str, Any] = {
            **rate,
            "workers": n_workers,
            "produce": produced,
            "cpu_s": [round(c, 2) for c in cpu],
            "cpu_ms_per_event": round(1000 * sum(cpu) / n, 3),
            # The whole machine while the events were learned (broker, producer, Redis and the
            # workers): 1.0 = every core busy, the bound on a 2-core machine.
            "machine_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "events_learned": _learned(workers),
            "events_by_worker": by_worker,
            "duplicates": dups,
        }
        if recover:
            out["recovery"] = _recovery(workers, events, partitions, prefix)
        return out
    finally:
        for w in workers:
            w.__exit__(None, None, None)
        delete_topics_with_prefix(prefix)
        client = redis_client()
        delete_redis_prefix(client, prefix)
        client.close()


def _recovery(workers: list[Worker], events: list, partitions: int, prefix: str) -> dict:
    """SIGKILL the last worker; time until each of its partitions publishes a list again."""
    victim = workers[-1]
    held = sorted(int(p) for p in (victim.health() or {}).get("partitions") or {})
    survivors = workers[:-1]
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=30)
    killed_at = time.time()
    topic = victim.settings.topic("events")
    # A trickle of events to every user, so every partition has something to publish.
    more = events[: min(len(events), 2000)]
    from kafka import KafkaConsumer, TopicPartition

    from recstream.events import Event

    shifted = [Event(f"r-{e.event_id}", e.user_id, e.item_id, e.type, e.ts) for e in more]
    produce(topic, ((e.user_id.encode(), e.to_json()) for e in shifted))
    consumer = KafkaConsumer(
        bootstrap_servers=victim.settings.bootstrap_servers, enable_auto_commit=False
    )
    recs_topic = victim.settings.topic("recommendations")
    tps = [TopicPartition(recs_topic, p) for p in held]
    consumer.assign(tps)
    ends = consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, ends[tp])
    first: dict[int, float] = {}
    deadline = time.monotonic() + 120
    try:
        while len(first) < len(held) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500).items():
                for r in batch:
                    gen = json.loads(r.value)["generated_at"]
                    first.setdefault(tp.partition, gen)
    finally:
        consumer.close()
    restore = {}
    for w in survivors:
        restore.update((w.health() or {}).get("state_restore_s") or {})
    return {
        "partitions_of_dead_worker": held,
        "first_list_after_kill_s": {p: round(t - killed_at, 2) for p, t in sorted(first.items())},
        "rebalance_recovery_s": round(max(first.values()) - killed_at, 2)
        if len(first) == len(held)
        else None,
        "state_restore_s": restore,
        "session_timeout_s": SESSION_TIMEOUT_S,
    }


def run(
    n_events: int = 20_000,
    n_users: int = 2_000,
    n_items: int = 2_000,
    partitions: int = 4,
    seed: int = 7,
    balanced: bool = False,
    quick: bool = False,
) -> dict[str, Any]:
    items, events = workload(n_users, n_items, n_events, seed)
    if balanced:
        # The synthetic stream's busiest user has a third of the events, and a user's events
        # go to one worker: the same events with the users dealt round-robin test the workers
        # rather than the key skew (BENCHMARKS.md, "Scale-out").
        from recstream.events import Event

        events = [
            Event(e.event_id, f"u{n % n_users}", e.item_id, e.type, e.ts)
            for n, e in enumerate(events)
        ]
    catalogue_vectors(items)  # fills the encoder cache the workers read
    # Today's single worker (local checkpoints), the same events: what the kafka mode costs.
    local = _group_pass(items, events, 1, partitions, recover=False, store="local")
    one = _group_pass(items, events, 1, partitions, recover=False)
    two = _group_pass(items, events, 2, partitions, recover=True)
    rec = two.pop("recovery")
    return {
        "scaleout_efficiency": round(two["events_per_s"] / (2 * one["events_per_s"]), 3),
        "rebalance_recovery_s": rec["rebalance_recovery_s"],
        "events_per_s_1_worker": round(one["events_per_s"], 1),
        "events_per_s_1_worker_local": round(local["events_per_s"], 1),
        "kafka_mode_vs_local_1_worker": round(one["events_per_s"] / local["events_per_s"], 3),
        "events_per_s_2_workers": round(two["events_per_s"], 1),
        "cpu_ms_per_event_1_worker": one["cpu_ms_per_event"],
        "cpu_ms_per_event_2_workers": two["cpu_ms_per_event"],
        "one_worker": one,
        "one_worker_local": local,
        "two_workers": two,
        "recovery": rec,
        "machine_cores": os.cpu_count(),
        "workload": {
            "n_events": n_events,
            "n_users": n_users,
            "n_items": n_items,
            "partitions": partitions,
            "seed": seed,
            "balanced": balanced,
        },
    }
