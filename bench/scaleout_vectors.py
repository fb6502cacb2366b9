"""Item encodings per catalogue item with two workers in one group (issue 10), and after one of
them restarts.

Two real workers (``RECSTREAM_STATE_STORE=kafka``) on one fresh prefix and app id (one consumer
group), each with its own models dir, web port and process. Once both are ready, ``n_items``
catalogue items are produced to ``<prefix>.items``; each text carries a sentence unique to the
run, so no encoder cache anywhere can answer for BERT. When both workers hold every item's
vector, the figure is

    encodings_per_item_2_workers = (items_encoded of worker 1 + of worker 2) / n_items

from their ``/healthz`` (vectors this process computed with its encoder). 1.0 is the goal: each
item encoded once in the group, by the owner of its partition, every other vector read from
``<prefix>.item-vectors``. Then worker 2 is stopped (SIGTERM) and started again on the same
models dir: ``restart.encoded`` is what it encoded again (goal 0) and ``restart.reload_s`` how
long it took to hold every vector again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from bench.common import delete_redis_prefix, redis_client, unique_name
from bench.kafka_util import delete_topics_with_prefix, produce
from bench.worker_util import Worker
from bench.workload import workload

GROUP_ENV = {"RECSTREAM_STATE_STORE": "kafka", "RECSTREAM_SESSION_TIMEOUT_S": "6"}


def _all_vectors(workers: list[Worker], n: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        healths = []
        for w in workers:
            w.check_alive()
            healths.append(w.health() or {})
        if all(h.get("item_vectors") == n for h in healths):
            return healths
        time.sleep(0.2)
    raise TimeoutError(f"not every worker has {n} vectors: {[w.health() for w in workers]}")


def _summary(h: dict[str, Any]) -> dict[str, Any]:
    return {k: h.get(k) for k in ("items_encoded", "item_vectors_from_topic", "item_vectors")}


def run(n_items: int = 500, partitions: int = 4, seed: int = 11, quick: bool = False) -> dict:
    items, _ = workload(50, n_items, 10, seed)
    run_id = unique_name("run")
    items = [
        dataclasses.replace(i, description=f"{i.description} Edition {run_id}.") for i in items
    ]
    prefix = unique_name("scaleout")
    env = {**GROUP_ENV, "RECSTREAM_APP_ID": prefix}
    try:
        with (
            Worker(prefix, partitions, extra_env=env, loglevel="info") as w1,
            Worker(prefix, partitions, extra_env=env, loglevel="info") as w2,
        ):
            for w in (w1, w2):
                w.wait_until(lambda h: h.get("ready"), 180, "ready")
            time.sleep(2.0)  # the group settles (both members assigned) first
            t0 = time.monotonic()
            produce(w1.settings.topic("items"), ((i.item_id.encode(), i.to_json()) for i in items))
            _all_vectors([w1, w2], n_items, 600)
            all_vectors_s = time.monotonic() - t0
            time.sleep(2.0)  # anything encoded late counts too
            h1, h2 = w1.health() or {}, w2.health() or {}
            encoded = [h1.get("items_encoded", 0), h2.get("items_encoded", 0)]

            w2.stop()
            time.sleep(2.0)
            t1 = time.monotonic()
            w2.start()
            w2.wait_until(lambda h: h.get("ready"), 180, "ready again")
            (r2,) = _all_vectors([w2], n_items, 600)
            reload_s = time.monotonic() - t1
            time.sleep(2.0)
            r1, r2 = w1.health() or {}, w2.health() or {}
    finally:
        delete_topics_with_prefix(prefix)
        client = redis_client()
        delete_redis_prefix(client, prefix)
        client.close()
    return {
        "encodings_per_item_2_workers": round(sum(encoded) / n_items, 4),
        "encoded_by_worker": encoded,
        "vectors_from_topic_by_worker": [
            h1.get("item_vectors_from_topic"),
            h2.get("item_vectors_from_topic"),
        ],
        "catalogue_to_every_vector_s": round(all_vectors_s, 2),
        "restart": {
            "encoded": r2.get("items_encoded"),
            "vectors_from_topic": r2.get("item_vectors_from_topic"),
            "reload_s": round(reload_s, 2),
            "other_worker_encoded_meanwhile": r1.get("items_encoded", 0) - encoded[0],
        },
        "workers": [_summary(h1), _summary(h2)],
        "n_items": n_items,
        "partitions": partitions,
    }


if __name__ == "__main__":
    print(json.dumps(run(n_items=100), indent=2))
