"""The workload shared by the pipeline and latency benchmarks, and the in-memory baselines.

* :func:`workload` — a seeded synthetic catalogue and event stream (``recstream.datasets``).
* :func:`catalogue_vectors` — the catalogue's BERT vectors through ``ItemEncoder`` with a cache
  under ``.cache/bench-models`` (ignored by git), so the worker's encoder finds them there and
  the event-throughput figures are not mixed with first-time BERT encoding.
* :func:`core_replay` — the baseline of ``update_cost_ratio``: the Recommender alone, learning and
  recommending each event from memory, with the same catalogue and vectors as the worker; with
  ``batch`` > 1 the same work as the worker's batches instead (learn a batch of events, then one
  list per user in it), the like-for-like baseline.
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
    from recstream.config import Settings
    from recstream.recommender import Recommender

    # the worker's model (streams/worker.py): the same settings as the worker the benchmark
    # compares with, RECSTREAM_RANKER / _RANKER_FEATURES / _RETRIEVAL included
    rec = Recommender(Settings.from_env().recommender_config(), seed=k_seed)
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    return rec


def core_replay(
    items: list, events: list, vectors: np.ndarray, k: int = 10, batch: int = 1
) -> dict[str, Any]:
    """Recommender.learn per event and recommend per event (``batch=1``) or once per user per
    ``batch`` consecutive events, after learning them all (the worker's batches), from a list in
    memory: events/s and the lists computed."""
    rec = _loaded_recommender(items, vectors)
    lists = 0
    t0 = time.perf_counter()
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        for event in chunk:
            rec.learn(event)
        users = dict.fromkeys(e.user_id for e in reversed(chunk))  # each user once
        for user in reversed(users):  # in the order of their last event, as the worker
            rec.recommend(user, k)
        lists += len(users)
    seconds = time.perf_counter() - t0
    return {
        "events": len(events),
        "batch": batch,
        "lists": lists,
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
    }


def processor_replay(
    items: list,
    events: list,
    vectors: np.ndarray,
    topic: str = "events",
    partitions: int = 4,
    k: int = 10,
    batch: int = 1,
) -> dict[str, Any]:
    """StreamProcessor.handle_events on the events' JSON bytes, ``batch`` messages at a time
    (+ serialising each Recommendation, as the worker does for Kafka and Redis)."""
    from recstream.pipeline import KafkaMessage, StreamProcessor

    proc = StreamProcessor(_loaded_recommender(items, vectors), k=k)
    offsets = [0] * partitions
    messages = []
    now = time.time()  # the record time: it only sets the lists' latency_ms
    for n, event in enumerate(events):
        partition = n % partitions
        messages.append(KafkaMessage(event.to_json(), topic, partition, offsets[partition], now))
        offsets[partition] += 1
    t0 = time.perf_counter()
    for start in range(0, len(messages), batch):
        for outcome in proc.handle_events(messages[start : start + batch]):
            if outcome.recommendation is not None:
                outcome.recommendation.to_json()
    seconds = time.perf_counter() - t0
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds}
