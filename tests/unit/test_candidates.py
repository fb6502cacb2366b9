"""recstream.candidates: bounded, unique candidate sets holding each source's top rows."""

from __future__ import annotations

import numpy as np
import pytest

from recstream.ann import ExactIndex, HNSWIndex
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
from recstream.sparse_rows import SparseRows
from recstream.topn import TopNeighbours

N, DIM, F = 2000, 16, 8


@pytest.fixture
def world():
    """A catalogue of N rows with content vectors, MF factors, counts and co-visitation."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    factors = rng.normal(scale=0.1, size=(N, F)).astype(np.float32)
    biases = rng.normal(scale=0.1, size=N).astype(np.float32)
    content, mf = HNSWIndex(DIM), ExactIndex(F + 1)
    content.upsert(np.arange(N), vectors)
    mf.upsert(np.arange(N), mf_item_vectors(factors, biases))
    popularity = rng.random(N) * 100
    popular = PopularSource(size=100)
    popular.refresh(popularity)
    fresh = FreshSource(size=50)
    for row in range(N):
        fresh.note(row)
    pairs, neighbours = SparseRows(), TopNeighbours(n=20)
    for _ in range(5000):
        row, others = int(rng.integers(0, N)), rng.integers(0, N, 3).tolist()
        others = [o for o in others if o != row]
        pairs.add_symmetric(row, others, [1.0] * len(others))
        neighbours.observe(pairs, row, others)
    sources = {
        "covisit": CovisitSource(neighbours, recency=0.9),
        "content": VectorSource("content", content),
        "mf": VectorSource("mf", mf),
        "popular": popular,
        "fresh": fresh,
    }
    query = Query(
        history=[(int(r), 1.0) for r in rng.integers(0, N, 10)],
        vectors={
            "content": vectors[5],
            "mf": mf_query(rng.normal(scale=0.1, size=F)),
        },
        exclude=rng.integers(0, N, 30).tolist(),
    )
    return sources, query, {"vectors": vectors, "factors": factors, "biases": biases}


def gatherer(sources, quota=100, cap=300, **kw) -> CandidateGatherer:
    return CandidateGatherer([(s, quota) for s in sources.values()], cap=cap, **kw)


def test_unique_bounded_and_without_excluded_rows(world):
    sources, query, _ = world
    for cap in (50, 300, 5000):
        rows = gatherer(sources, cap=cap)(query).rows
        assert len(rows) <= cap
        assert len(np.unique(rows)) == len(rows)
        assert not set(rows.tolist()) & set(query.exclude)
    assert len(gatherer(sources, cap=5000)(query).rows) > 300  # sources do not all overlap


def test_each_source_keeps_its_best_rows_under_a_tight_cap(world):
    sources, query, _ = world
    got = gatherer(sources, quota=100, cap=100)(query)
    rows = set(got.rows.tolist())
    for name, proposed in got.by_source.items():
        assert len(proposed) > 0, name
        assert set(proposed[:10].tolist()) <= rows, name  # each source's top 10 made the cut


def test_sources_return_their_true_top_rows(world):
    sources, query, data = world
    exclude = set(query.exclude)
    got = gatherer(sources)(query).by_source
    # MF: the exact inner product b_i + p.q_i
    p = query.vectors["mf"][:-1]
    mf = data["biases"] + data["factors"] @ p
    mf[list(exclude)] = -np.inf
    assert set(got["mf"][:20].tolist()) == set(np.argsort(-mf)[:20].tolist())
    # content: HNSW against exact cosine (approximate: most of the top 20)
    content = data["vectors"] @ query.vectors["content"]
    content[list(exclude)] = -np.inf
    assert len(set(got["content"][:20].tolist()) & set(np.argsort(-content)[:20].tolist())) >= 18
    # fresh: the latest rows noted, newest first
    latest = [r for r in range(N - 1, N - 51, -1) if r not in exclude]  # the pool holds 50
    assert got["fresh"].tolist() == latest


def test_covisit_source_scores_like_a_full_pass(world):
    sources, query, _ = world
    source = sources["covisit"]
    got = source.propose(query, 1000, set())
    full = np.zeros(N)
    decay = 1.0
    for row, w in reversed(query.history):
        cols, counts = source.neighbours.neighbours(row)
        np.add.at(full, cols, counts * w * decay)
        decay *= 0.9
    want = np.flatnonzero(full > 0)
    assert set(got.tolist()) == set(want.tolist())
    assert np.all(np.diff(full[got]) <= 1e-12)  # best first


def test_popular_pool_follows_offers_and_refresh():
    pool = PopularSource(size=3, refresh_every=4)
    values = np.zeros(10)
    due = []
    for row, w in [(1, 5.0), (2, 1.0), (3, 2.0), (4, 3.0)]:
        values[row] += w
        due.append(pool.offer(row, values[row]))
    assert due == [False, False, False, True]
    assert pool.propose(Query(), 3, set()).tolist() == [1, 4, 3]
    valid = np.ones(10, dtype=bool)
    valid[1] = False  # a deleted item leaves the pool at the next refresh
    pool.refresh(values, valid)
    assert pool.propose(Query(), 3, {4}).tolist() == [3, 2]


def test_inactive_rows_are_dropped(world):
    sources, query, _ = world
    active = np.ones(N, dtype=bool)
    active[N - 10 :] = False  # the newest items were deleted
    rows = gatherer(sources, active=lambda: active)(query).rows
    assert rows.size and not (rows >= N - 10).any()


def test_fresh_source_ignores_republished_items():
    fresh = FreshSource(size=3)
    for row in (1, 2, 3, 1, 4):
        fresh.note(row)
    assert fresh.propose(Query(), 5, set()).tolist() == [4, 3, 2]


def test_a_user_without_history_or_vectors_gets_pools_only(world):
    sources, _, _ = world
    got = gatherer(sources)(Query())
    assert set(got.by_source) == set(sources)
    assert got.by_source["covisit"].size == got.by_source["content"].size == 0
    pools = set(got.by_source["popular"].tolist()) | set(got.by_source["fresh"].tolist())
    assert set(got.rows.tolist()) == pools and len(got.by_source["fresh"]) == 50


def test_cap_must_be_positive(world):
    with pytest.raises(ValueError):
        CandidateGatherer([], cap=0)
