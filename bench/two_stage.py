"""One list from the integrated recommender, two-stage vs exact, as the catalogue grows (issue 12).

Per catalogue size: a :class:`~recstream.recommender.Recommender` with
``retrieval="two_stage"`` (usearch HNSW indexes), the catalogue's items upserted, real-shaped
content vectors set (bench/vectors.py: around the cached all-MiniLM-L6-v2 vectors), and a warm
model: ``n_events`` purchases and views by ``n_users`` users, each with a taste (the content
neighbours of one item) and a share of Zipf-popular items, so co-visitation, MF, popularity and
the content profiles all carry signal. Then, for ``n_lists`` of those users, one list of 10 with
each path on the same model:

- two-stage (the model's own setting): gather candidates, score them;
- exact: the same model with ``retrieval="exact"``, every row scored with the same function
  (the model is built with ``content_dim=0``: full-width content cosines, as the two-stage path
  computes them for its few rows; from ``retrieval_min_items`` rows on, both paths take the
  min-max signals' 0 from the same per-list sample, ``Recommender._scale_floor``);
- exact as shipped: the same, with the default 128-d PCA projection of the content vectors
  (what the exact path uses by default to go faster; its first list fits the projection,
  outside the timing).

Keys: ``list_ms_<size>`` (two-stage, median over the lists), ``exact_list_ms_<size>``,
``list_ms_<largest>_vs_<smallest>`` (their ratio: the goal is within 2x),
``candidate_recall_at_10`` (share of the exact top-10 in the two-stage top-10, at the largest
size; ``..._vs_projected``: against the exact path as shipped), ``index_mb_per_1m_items``
(the content HNSW index's memory per 1M items, at the largest size).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vectors as V
from recstream.events import Event, Item
from recstream.recommender import Recommender, RecommenderConfig


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


def build(n: int, n_users: int, n_events: int, seed: int) -> tuple[Recommender, list[str], dict]:
    """A warm two-stage model over ``n`` items, its users, and how long each part took."""
    rng = np.random.default_rng(seed)
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    rec = Recommender(RecommenderConfig(retrieval="two_stage", content_dim=0), seed=seed)
    ids = [f"i{r}" for r in range(n)]
    for item_id in ids:
        rec.upsert_item(Item(item_id))
    took["catalogue_s"] = time.perf_counter() - t0
    base, _ = V.centres(seed=seed)
    vectors = V.catalogue(n, base, seed=seed)
    t0 = time.perf_counter()
    rec.set_item_vectors(ids, vectors)  # the content index's bulk build
    took["vectors_s"] = time.perf_counter() - t0
    popular = rng.permutation(n)[:5000]
    zipf = 1.0 / np.arange(1, popular.size + 1)
    zipf /= zipf.sum()
    users = [f"u{u}" for u in range(n_users)]
    tastes = {}
    for u in users:  # a taste: the 30 items nearest one random item (what an HNSW finds)
        tastes[u] = rec.retrieval.content.search(vectors[int(rng.integers(n))], 30)[0]
    t0 = time.perf_counter()
    for e in range(n_events):
        u = users[int(rng.integers(n_users))]
        taste = rng.random() < 0.6
        row = int(rng.choice(tastes[u])) if taste else int(rng.choice(popular, p=zipf))
        kind = "purchase" if rng.random() < 0.3 else "view"
        rec.learn(Event(f"e{e}", u, ids[row], kind, float(e)))
    rec.retrieval.refresh_mf(rec)  # as after the next batch of events
    took["learn_s"] = time.perf_counter() - t0
    return rec, users, {k: round(v, 1) for k, v in took.items()}


def _timed(rec: Recommender, users: list[str]) -> tuple[list[list[str]], dict[str, float]]:
    lists, ms = [], []
    for u in users:
        t0 = time.perf_counter()
        lists.append([r.item_id for r in rec.recommend(u, 10)])
        ms.append((time.perf_counter() - t0) * 1e3)
    ms_arr = np.array(ms[2:])  # the first two warm caches up (the exact path: the projection)
    return lists, {
        "p50_ms": round(float(np.median(ms_arr)), 3),
        "p99_ms": round(float(np.quantile(ms_arr, 0.99)), 3),
    }


def _recall(reference: list[list[str]], found: list[list[str]]) -> float:
    """Mean share of each reference top-10 in the found top-10."""
    hits = [len(set(a) & set(b)) for a, b in zip(reference, found, strict=True)]
    return round(float(np.mean(hits)) / 10, 4)


def run(
    sizes: list[int] | None = None,
    n_users: int = 2000,
    n_events: int = 20_000,
    n_lists: int = 60,
    seed: int = 0,
) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    sizes = sizes or [10_000, 1_000_000]
    out: dict[str, Any] = {"n_users": n_users, "n_events": n_events, "per_size": {}}
    for n in sizes:
        rec, users, took = build(n, n_users, n_events, seed)
        listed = [u for u in users if rec.users.get(u) is not None][:n_lists]
        exact_model = dataclasses.replace(rec.config, retrieval="exact")
        with threadpool_limits(limits=1, user_api="blas"):  # one core, as the event loop has
            staged, staged_t = _timed(rec, listed)
            staged_config, rec.config = rec.config, exact_model
            assert not rec.two_stage_active()
            exact, exact_t = _timed(rec, listed)
            rec.index.reduce_dim = 128  # RecommenderConfig's default content_dim
            projected, projected_t = _timed(rec, listed)
            rec.index.reduce_dim = None
            rec.config = staged_config

        entry = {
            "two_stage_list": staged_t,
            "exact_list": exact_t,
            "exact_projected_list": projected_t,
            "candidate_recall_at_10": _recall(exact, staged),
            "candidate_recall_at_10_vs_projected": _recall(projected, staged),
            "candidates_mean": round(
                float(np.mean([rec.retrieval.gather(rec, u, "purchased").size for u in listed])), 1
            ),
            "index_mb": round(rec.retrieval.memory_bytes() / 2**20, 1),
            **took,
        }
        out["per_size"][_label(n)] = entry
        out[f"list_ms_{_label(n)}"] = staged_t["p50_ms"]
        out[f"exact_list_ms_{_label(n)}"] = exact_t["p50_ms"]
        print(f"[two_stage] {_label(n)}: {entry}", file=sys.stderr, flush=True)
        del rec
    largest = _label(max(sizes))
    out["candidate_recall_at_10"] = out["per_size"][largest]["candidate_recall_at_10"]
    out["candidate_recall_at_10_vs_projected"] = out["per_size"][largest][
        "candidate_recall_at_10_vs_projected"
    ]
    smallest = _label(min(sizes))
    if largest != smallest:  # the goal: list_ms_1m (and 10m) within 2x of list_ms_10k
        ratio = out[f"list_ms_{largest}"] / out[f"list_ms_{smallest}"]
        out[f"list_ms_{largest}_vs_{smallest}"] = round(ratio, 3)
    out["index_mb_per_1m_items"] = round(
        out["per_size"][largest]["index_mb"] * 1_000_000 / max(sizes), 1
    )
    return out


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--events", type=int, default=20_000)
    args = ap.parse_args()
    print(json.dumps(run(sizes=args.size, n_users=args.users, n_events=args.events), indent=2))
