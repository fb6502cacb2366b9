"""Two-stage retrieval, standalone (issue 12, step 1): gather bounded candidates, score only them.

Per catalogue size: a synthetic catalogue with real-shaped content vectors (bench/vectors.py),
MF factors and biases, Zipf-like popularity, a fresh pool and co-visitation neighbour lists for
the users' items. One list = one weighted sum of five signals (content cosine, MF score,
log-popularity, freshness, co-visitation), each on a fixed scale so the two paths score alike:

- exact: every signal over the whole catalogue, then ``top_k`` (the recommender's shape today);
- two-stage: :class:`recstream.candidates.CandidateGatherer` over five sources (usearch HNSW for
  content and MF), then the same sum over the candidate rows only.

Reported: per-list time of both (median, p99; BLAS on one thread), the candidate recall@10 (share
of the exact top-10 in the two-stage top-10), and the content index's build time, memory and
single-item add / update times. Not wired into Recommender yet, so its keys are not the
``list_ms_*`` ones of issue 12.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vectors as V
from recstream.ann import HNSWIndex
from recstream.candidates import (
    CandidateGatherer,
    CovisitSource,
    FreshSource,
    PopularSource,
    Query,
    VectorSource,
    mf_item_vectors,
    mf_query,
)
from recstream.index import top_k
from recstream.topn import TopNeighbours

F = 32  # ImplicitMF's default width
W = {"content": 1.0, "mf": 1.0, "popularity": 0.3, "fresh": 0.2, "covisit": 1.0}
QUOTAS = {"covisit": 200, "content": 400, "mf": 400, "popular": 200, "fresh": 100}
HISTORY = 10


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


class World:
    """Everything one catalogue size needs, built once."""

    def __init__(self, n: int, base: np.ndarray, seed: int, expansion_add: int) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.vectors = V.catalogue(n, base, seed=seed)
        self.factors = rng.normal(scale=0.15, size=(n, F)).astype(np.float32)
        self.biases = rng.normal(scale=0.05, size=n).astype(np.float32)
        self.popularity = rng.pareto(1.2, size=n)  # heavy-tailed, like item traffic
        self.pop_scale = 1.0 / np.log1p(self.popularity.max())
        self.fresh = np.zeros(n)
        self.fresh[n - 500 :] = np.exp(-np.arange(500)[::-1] / 100.0)  # the 500 newest items
        self.build: dict[str, float] = {}
        self.content = HNSWIndex(V.DIM, expansion_add=expansion_add, threads=2)
        self.mf = HNSWIndex(F + 1, expansion_add=expansion_add, threads=2)
        mf_vectors = mf_item_vectors(self.factors, self.biases)
        for name, index, x in (
            ("content", self.content, self.vectors),
            ("mf", self.mf, mf_vectors),
        ):
            t0 = time.perf_counter()
            for start in range(0, n, 100_000):  # chunks: bounded temporaries
                rows = np.arange(start, min(n, start + 100_000))
                index.upsert(rows, x[rows])
            index.threads = 1  # queries run on the caller's thread, as on the event loop
            self.build[f"{name}_build_s"] = round(time.perf_counter() - t0, 1)
        self.neighbours = TopNeighbours(n=50)
        popular = PopularSource(size=500)
        popular.refresh(self.popularity)
        fresh = FreshSource(size=500)
        for row in range(n - 500, n):
            fresh.note(row)
        self.gather = CandidateGatherer(
            [
                (CovisitSource(self.neighbours, recency=0.9), QUOTAS["covisit"]),
                (VectorSource("content", self.content), QUOTAS["content"]),
                (VectorSource("mf", self.mf), QUOTAS["mf"]),
                (popular, QUOTAS["popular"]),
                (fresh, QUOTAS["fresh"]),
            ],
            cap=sum(QUOTAS.values()),
        )

    def user(self, rng: np.random.Generator) -> Query:
        """A user: a history of items near one another, its profile, factors, exclusions."""
        first = int(rng.integers(0, self.n))
        near, _ = self.content.search(self.vectors[first], 50)
        history = rng.choice(near, HISTORY, replace=False)
        for row in history:  # co-visitation lists for the items this user touched
            cols = rng.integers(0, self.n, 50)
            self.neighbours._list(int(row)).reset(cols, rng.random(50) * 10)
        profile = self.vectors[history].mean(axis=0)
        return Query(
            history=[(int(r), 1.0) for r in history],
            vectors={
                "content": profile / np.linalg.norm(profile),
                "mf": mf_query(rng.normal(scale=0.15, size=F)),
            },
            exclude=history.tolist(),
        )

    def _covisit(self, query: Query, rows: np.ndarray | None) -> np.ndarray:
        """Co-visitation scores at ``rows`` (None: a catalogue-sized bincount, the exact path)."""
        cols_parts, vals_parts, decay = [], [], 1.0
        for row, w in reversed(query.history):
            cols, counts = self.neighbours.neighbours(row)
            cols_parts.append(cols)
            vals_parts.append(counts * (w * decay))
            decay *= 0.9
        cols, vals = np.concatenate(cols_parts), np.concatenate(vals_parts)
        if rows is None:
            return np.bincount(cols, vals, minlength=self.n) / 100.0
        order = np.argsort(cols, kind="stable")
        cols, sums = np.unique(cols[order], return_index=True)
        sums = np.add.reduceat(vals[order], sums)
        at = np.minimum(np.searchsorted(cols, rows), cols.size - 1)
        return np.where(cols[at] == rows, sums[at], 0.0) / 100.0

    def score(self, query: Query, rows: np.ndarray | None) -> np.ndarray:
        """The list's score at ``rows`` (None: every row)."""
        sel = slice(None) if rows is None else rows
        p = query.vectors["mf"]
        s = W["content"] * (self.vectors[sel] @ query.vectors["content"])
        s += W["mf"] * (self.factors[sel] @ p[:F] + self.biases[sel])
        s += W["popularity"] * self.pop_scale * np.log1p(self.popularity[sel])
        s += W["fresh"] * self.fresh[sel]
        s += W["covisit"] * self._covisit(query, rows)
        return s

    def exact(self, query: Query) -> np.ndarray:
        return top_k(self.score(query, None), 10, exclude=np.asarray(query.exclude))

    def two_stage(self, query: Query) -> np.ndarray:
        rows = self.gather(query).rows
        return rows[top_k(self.score(query, rows), 10)]


def _timed(fn: Any, queries: list[Query]) -> tuple[list[np.ndarray], dict[str, float]]:
    out, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t0)
    ms = np.array(times[2:]) * 1e3  # the first two warm caches up
    return out, {
        "p50_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.quantile(ms, 0.99)), 3),
    }


def _single_item_ops(world: World, base: np.ndarray, seed: int) -> dict[str, float]:
    """Add / update one item at a time in the built content index (what the encoder does)."""
    fresh = V.catalogue(200, base, seed=seed + 7)
    add, update = [], []
    for i, v in enumerate(fresh[:100]):
        t0 = time.perf_counter()
        world.content.upsert([world.n + i], v[None])
        add.append(time.perf_counter() - t0)
    for i, v in enumerate(fresh[100:]):
        t0 = time.perf_counter()
        world.content.upsert([i * 997 % world.n], v[None])
        update.append(time.perf_counter() - t0)
    world.content.remove(np.arange(world.n, world.n + 100))
    return {"add_one_p50_ms": round(float(np.median(add)) * 1e3, 3),
            "update_one_p50_ms": round(float(np.median(update)) * 1e3, 3)}  # fmt: skip


def run(
    sizes: list[int] | None = None,
    n_users: int = 60,
    seed: int = 0,
    expansion_add: int = 64,
    quick: bool = False,
) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    sizes = sizes or [10_000, 1_000_000]
    base, source = V.centres(seed=seed)
    out: dict[str, Any] = {"vectors": source, "quotas": QUOTAS, "weights": W, "per_size": {}}
    for n in sizes:
        world = World(n, base, seed, expansion_add)
        rng = np.random.default_rng(seed + 1)
        queries = [world.user(rng) for _ in range(n_users)]
        with threadpool_limits(limits=1, user_api="blas"):
            exact, exact_t = _timed(world.exact, queries)
            staged, staged_t = _timed(world.two_stage, queries)
            gather_only = _timed(world.gather, queries)[1]
            profiles = np.array([q.vectors["content"] for q in queries])
            truth = V.exact_topk(world.vectors, profiles, 200)
            found = [world.content.search(p, 200)[0] for p in profiles]
        hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, staged, strict=True)]
        entry = {
            "exact_list": exact_t,
            "two_stage_list": staged_t,
            "gather_only": gather_only,
            "candidates_mean": round(
                float(np.mean([len(world.gather(q).rows) for q in queries])), 1
            ),
            "candidate_recall_at_10": round(float(np.mean(hits)) / 10, 4),
            "content_ann_recall_at_10": round(V.recall(np.array(found), truth, 10), 4),
            "content_ann_recall_at_200": round(V.recall(np.array(found), truth, 200), 4),
            "content_index_mb": round(world.content.memory_bytes() / 2**20, 1),
            "mf_index_mb": round(world.mf.memory_bytes() / 2**20, 1),
            "vectors_mb": round(world.vectors.nbytes / 2**20, 1),
            **world.build,
            **_single_item_ops(world, base, seed),
        }
        out["per_size"][_label(n)] = entry
        print(f"[candidates] {_label(n)}: {entry}", file=sys.stderr, flush=True)
        del world
    return out


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, action="append")
    ap.add_argument("--users", type=int, default=60)
    args = ap.parse_args()
    print(json.dumps(run(sizes=args.size, n_users=args.users), indent=2))
