"""Full-pipeline throughput, as ratios to a raw aiokafka consumer and to the core in memory.

One synthetic workload (catalogue + N events, ``bench.workload``) and one fresh topic prefix:

1. A real worker (``python -m streams.worker``) starts on the prefix; the catalogue is produced
   to ``<prefix>.items`` and the benchmark waits until the worker is ready and every item has
   its BERT vector (cached: see ``bench.workload``), so the timed part is event processing.
2. The N events are produced to ``<prefix>.events`` as fast as kafka-python can (20k+/s, far
   above the worker's rate, so the worker works through a backlog just as when the events are
   produced before it starts). When the worker reports N events processed, the recommendations
   topic is read back, and the throughput is the events its lists reflect per second of
   ``generated_at`` (``kafka_util.reflected_rate``: one list per user per batch, so a list
   reflects its partition up to its trigger event), from 5 % of the events to the last list.
   Redis is checked to hold every user's list, the last one written at the same time.
3. Baselines, in the same run on the same machine:
   * a raw aiokafka consumer draining ``<prefix>.events`` (same messages, same partitions) →
     ``pipeline_efficiency``;
   * a do-nothing Faust agent on the same topic (context for where the time goes);
   * the Recommender alone replaying the same events from memory (learn + recommend, same
     catalogue and vectors) → ``update_cost_ratio``; and ``StreamProcessor`` (the worker's pure
     per-message logic) from the same bytes, which splits the overhead in two.
4. With ``profile=True``, a second, shorter worker run under pyinstrument and profiled core and
   processor replays write bench/profiles/{pipeline_worker,core_replay,processor_replay}.txt.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from bench.common import (
    PROFILES_DIR,
    delete_redis_prefix,
    profiled,
    redis_client,
    unique_name,
)
from bench.consumers import faust_noop_drain
from bench.kafka_util import (
    delete_topics_with_prefix,
    event_positions,
    produce,
    raw_drain,
    read_topic,
    reflected_rate,
)
from bench.worker_util import Worker
from bench.workload import catalogue_vectors, core_replay, processor_replay, workload
from recstream.config import Settings


def _worker_pass(
    items: list,
    events: list,
    partitions: int,
    prefix: str,
    profile_to: Any = None,
    timeout_s: float = 1200.0,
) -> dict[str, Any]:
    """Run a worker over the workload; returns its throughput and the Redis check."""
    n = len(events)
    with Worker(prefix, partitions, profile_to=profile_to) as worker:
        cfg = worker.settings
        worker.load_catalogue(items)
        t_produce = time.time()
        produced = produce(cfg.topic("events"), ((e.user_id.encode(), e.to_json()) for e in events))
        health = worker.wait_until(
            lambda h: h.get("events_processed", 0) >= n,
            timeout_s=timeout_s,
            what=f"done with {n} events",
        )
        batches = worker.metric("recstream_event_batch_size_count")
    # The worker publishes at most one list per event; wait for the last one, which reflects
    # the end of the stream (the last event of each partition is its user's last in a batch).
    records = read_topic(cfg.topic("recommendations"), n, idle_s=3)
    recs = [json.loads(r.value) for r in records]
    rate = reflected_rate(recs, event_positions(cfg.topic("events"), n))
    generated = sorted(r["generated_at"] for r in recs)
    # Redis: one key per user, holding that user's latest list.
    client = redis_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}:recs:*", count=5000))
        values = [json.loads(v) for v in client.mget(keys)] if keys else []
    finally:
        client.close()
    users = {e.user_id for e in events}
    redis_last = max((v["generated_at"] for v in values), default=None)
    return {
        **rate,
        "mean_batch": round(n / batches, 1) if batches else None,
        "produce": produced,
        # How long after the first event all N were in Kafka: must be small vs "seconds".
        "produce_lead_s": round(t_produce + produced["produce_s"] - generated[0], 2),
        "redis_keys": len(keys),
        "redis_users_expected": len(users),
        "redis_last_vs_topic_last_s": None
        if redis_last is None
        else round(redis_last - generated[-1], 6),
        "dlq_total": health.get("dlq_total"),
    }


def _core_replay_one_blas_thread(items: list, events: list, vectors: Any) -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {"skipped": "threadpoolctl not installed"}
    default = core_replay(items, events, vectors)["events_per_s"]
    with threadpool_limits(limits=1, user_api="blas"):
        one = core_replay(items, events, vectors)["events_per_s"]
    return {
        "events": len(events),
        "default_events_per_s": round(default, 1),
        "blas1_events_per_s": round(one, 1),
        "speedup": round(one / default, 2),
    }


def run(
    n_events: int = 30_000,
    n_users: int = 2_000,
    n_items: int = 2_000,
    partitions: int = 4,
    seed: int = 7,
    profile: bool = True,
    profile_events: int = 5_000,
    quick: bool = False,
) -> dict[str, Any]:
    items, events = workload(n_users, n_items, n_events, seed)
    vectors = catalogue_vectors(items)  # fills the encoder cache the worker reads
    prefix = unique_name("pipeline")
    try:
        full = _worker_pass(items, events, partitions, prefix)
        if full["redis_keys"] != full["redis_users_expected"]:
            raise RuntimeError(
                f"Redis holds {full['redis_keys']} lists for {full['redis_users_expected']} users"
            )
        # The raw drain of N events takes a fraction of a second: median of three.
        raw_runs = [raw_drain(f"{prefix}.events", n_events)["events_per_s"] for _ in range(3)]
        raw = {"events_per_s": statistics.median(raw_runs), "runs": raw_runs}
        noop = faust_noop_drain(f"{prefix}.events", n_events, partitions)
    finally:
        delete_topics_with_prefix(prefix)
        client = redis_client()
        delete_redis_prefix(client, prefix)
        client.close()
    core = core_replay(items, events, vectors)
    # The worker computes one list per user per batch of at most batch_max events; the same
    # work in memory, in batches of batch_max (as few lists as the worker could ever compute).
    batch_max = Settings.from_env().batch_max
    core_batched = core_replay(items, events, vectors, batch=batch_max)
    processor = processor_replay(items, events, vectors, partitions=partitions, batch=batch_max)
    blas1 = _core_replay_one_blas_thread(items, events[:profile_events], vectors)

    out: dict[str, Any] = {
        "pipeline_efficiency": round(full["events_per_s"] / raw["events_per_s"], 6),
        "update_cost_ratio": round(full["events_per_s"] / core["events_per_s"], 3),
        # Like for like: the core doing the worker's work (learn every event, one list per user
        # per batch of batch_max), so batching's saving is not counted as pipeline efficiency.
        "update_cost_ratio_same_work": round(
            full["events_per_s"] / core_batched["events_per_s"], 3
        ),
        "pipeline_events_per_s": round(full["events_per_s"], 1),
        "raw_aiokafka_events_per_s": round(raw["events_per_s"]),
        "raw_aiokafka_runs": [round(r) for r in raw["runs"]],
        "faust_noop_events_per_s": round(noop["events_per_s"]),
        "core_replay_events_per_s": round(core["events_per_s"], 1),
        "core_replay_batched": {
            "batch": batch_max,
            "events_per_s": round(core_batched["events_per_s"], 1),
            "lists_per_event": round(core_batched["lists"] / len(events), 3),
        },
        "processor_replay_events_per_s": round(processor["events_per_s"], 1),
        # The same core replay (first profile_events events) with numpy's BLAS on one thread:
        # see BENCHMARKS.md, "OpenBLAS threads" (compare with core_replay_events_per_s).
        "core_replay_blas1": blas1,
        # Decomposition of the gap (each ÷ the previous stage):
        "processor_vs_core": round(processor["events_per_s"] / core_batched["events_per_s"], 3),
        "pipeline_vs_processor": round(full["events_per_s"] / processor["events_per_s"], 3),
        # What the full pipeline would score against Faust itself rather than raw aiokafka.
        "pipeline_vs_faust_noop": round(full["events_per_s"] / noop["events_per_s"], 4),
        "worker": full,
        "workload": {
            "n_events": n_events,
            "n_users": n_users,
            "n_items": n_items,
            "partitions": partitions,
            "seed": seed,
        },
    }
    if profile:
        PROFILES_DIR.mkdir(exist_ok=True)
        sample = events[:profile_events]
        prof_prefix = unique_name("pipeline-prof")
        try:
            _worker_pass(
                items,
                sample,
                partitions,
                prof_prefix,
                profile_to=PROFILES_DIR / "pipeline_worker.txt",
            )
        finally:
            delete_topics_with_prefix(prof_prefix)
            client = redis_client()
            delete_redis_prefix(client, prof_prefix)
            client.close()
        with profiled("core_replay"):
            core_replay(items, sample, vectors)
        with profiled("processor_replay"):
            processor_replay(items, sample, vectors, partitions=partitions, batch=batch_max)
        out["profiles"] = [
            f"bench/profiles/{name}.txt"
            for name in ("pipeline_worker", "core_replay", "processor_replay")
        ]
    return out


if __name__ == "__main__":
    print(json.dumps(run(n_events=2_000, profile=False), indent=2))
