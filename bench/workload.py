"""The workload shared by the pipeline and latency benchmarks, and the in-memory baselines.

* :func:`workload` — a seeded synthetic catalogue and event stream (``recstream.datasets``).
* :func:`catalogue_vectors` — the catalogue's BERT vectors through ``ItemEncoder`` with a cache
  under ``.cache/bench-models`` (ignored by git), so the worker's encoder finds them there and
  the event-throughput figures are not mixed with first-time BERT encoding.
* :func:`core_replay` — the baseline of ``update_cost_ratio``: the Recommender alone, learning and
  recommending each event from memory, with the same catalogue and vectors as the worker.
* :func:`processor_replay` — the worker's pure per-message logic (``StreamProcessor``: parse,
  dedup, learn, recommend, build the Recommendation) from the same bytes: splits the pipeline's
  overhead into "stream bookkeeping" and "Kafka/Faust/Redis I/O".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT

MODELS_CACHE = ROOT / ".cache" / "bench-models"


def workload(n_users: int, n_items: int, n_events: int, seed: int = 7) -> tuple[list, list]:
    from recstream.datasets import synthetic_stream

    return synthetic_stream(n_users=n_users, n_items=n_items, n_events=n_events, seed=seed)


def catalogue_vectors(items: list, models_dir: Path = MODELS_CACHE) -> np.ndarray:
    from recstream.encoder import ItemEncoder

    encoder = ItemEncoder(cache_dir=models_dir / "cache" / "encoder")
    return encoder.encode_items(items)


def _loaded_recommender(items: list, vectors: np.ndarray, k_seed: int = 42) -> Any:
    from recstream.recommender import Recommender

    rec = Recommender(seed=k_seed)
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    return rec


def core_replay(items: list, events: list, vectors: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Recommender.learn + recommend per event, from a list in memory: events/s."""
    rec = _loaded_recommender(items, vectors)
    t0 = time.perf_counter()
    for event in events:
        rec.learn(event)
        rec.recommend(event.user_id, k)
    seconds = time.perf_counter() - t0
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds}


def processor_replay(
    items: list,
    events: list,
    vectors: np.ndarray,
    topic: str = "events",
    partitions: int = 4,
    k: int = 10,
) -> dict[str, Any]:
    """StreamProcessor.handle_event on each event's JSON bytes (+ its Recommendation JSON)."""
    from recstream.pipeline import StreamProcessor

    proc = StreamProcessor(_loaded_recommender(items, vectors), k=k)
    raws = [e.to_json() for e in events]
    offsets = [0] * partitions
    t0 = time.perf_counter()
    for n, raw in enumerate(raws):
        partition = n % partitions
        outcome = proc.handle_event(
            raw, topic=topic, partition=partition, offset=offsets[partition], timestamp=time.time()
        )
        offsets[partition] += 1
        if outcome.recommendation is not None:
            outcome.recommendation.to_json()  # the worker serialises it for Kafka and Redis
    seconds = time.perf_counter() - t0
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds}
