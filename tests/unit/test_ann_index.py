"""recstream.ann: the HNSW index against the exact reference; upsert, remove, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from recstream.ann import ExactIndex, HNSWIndex, VectorIndex, make_index


def clustered(n: int, dim: int = 32, centres: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors in ``centres`` Gaussian clusters (sentence embeddings are clustered too)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + rng.normal(scale=0.5, size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=["exact", "hnsw"])
def index(request) -> VectorIndex:
    return make_index(request.param, 32)


def test_both_implement_the_protocol():
    assert isinstance(ExactIndex(4), VectorIndex)
    assert isinstance(HNSWIndex(4), VectorIndex)


def test_hnsw_recall_against_exact():
    x = clustered(3000)
    queries = clustered(50, seed=1)
    exact, hnsw = ExactIndex(32), HNSWIndex(32, expansion_search=128)
    rows = np.arange(len(x))
    exact.upsert(rows, x)
    hnsw.upsert(rows, x)
    hits10 = hits100 = 0
    for q in queries:
        truth, _ = exact.search(q, 100)
        found, scores = hnsw.search(q, 100)
        hits10 += len(set(found[:10].tolist()) & set(truth[:10].tolist()))
        hits100 += len(set(found.tolist()) & set(truth.tolist()))
        assert np.all(np.diff(scores) <= 1e-6)  # best first
        np.testing.assert_allclose(scores, x[found] @ q, atol=1e-5)  # scores are inner products
    assert hits10 / (10 * len(queries)) >= 0.95
    assert hits100 / (100 * len(queries)) >= 0.9


def test_upsert_replaces_a_vector(index):
    x = clustered(200)
    index.upsert(np.arange(200), x)
    target = -x[7]  # far from every stored vector but row 7's new one
    index.upsert([7], target[None])
    rows, scores = index.search(target, 1)
    assert rows.tolist() == [7] and scores[0] == pytest.approx(1.0, abs=1e-5)
    old_rows, _ = index.search(x[7], 5)
    assert 7 not in old_rows.tolist()  # the old vector is gone
    assert len(index) == 200


def test_repeated_rows_in_one_upsert_keep_the_last(index):
    x = clustered(3)
    index.upsert([5, 5, 6], x)
    assert len(index) == 2
    assert index.search(x[1], 1)[0].tolist() == [5]


def test_remove_removes(index):
    x = clustered(200)
    index.upsert(np.arange(200), x)
    index.remove([3, 4, 999])  # an unknown row is ignored
    assert len(index) == 198
    for r in (3, 4):
        assert r not in index.search(x[r], 20)[0].tolist()
    index.upsert([3], x[3][None])  # a removed row can come back
    assert index.search(x[3], 1)[0].tolist() == [3]


def test_exclude_and_short_results(index):
    x = clustered(10)
    index.upsert(np.arange(10), x)
    rows, _ = index.search(x[0], 5, exclude=[0, 1])
    assert len(rows) == 5 and not {0, 1} & set(rows.tolist())
    assert len(index.search(x[0], 50)[0]) == 10
    assert index.search(x[0], 0)[0].size == 0


def test_widen_bounds_the_search_for_many_exclusions():
    x = clustered(2000)
    hnsw, exact = HNSWIndex(32), ExactIndex(32)
    for index in (hnsw, exact):
        index.upsert(np.arange(len(x)), x)
    nearest, _ = exact.search(x[0], 1500)
    excluded = set(nearest[:1000].tolist())  # the query's 1,000 nearest rows
    full, _ = hnsw.search(x[0], 10, exclude=excluded)  # searched 1,010 deep
    assert len(full) == 10 and not excluded & set(full.tolist())
    bounded, _ = hnsw.search(x[0], 10, exclude=excluded, widen=20)  # at most 30 rows fetched
    assert len(bounded) < 10 and not excluded & set(bounded.tolist())
    assert len(exact.search(x[0], 10, exclude=excluded, widen=20)[0]) == 10  # a full pass


def test_dimension_is_checked(index):
    with pytest.raises(ValueError, match="dimension"):
        index.upsert([0], np.zeros((1, 3), dtype=np.float32))


def test_hnsw_pickles_with_its_graph():
    x = clustered(300)
    index = HNSWIndex(32, expansion_add=48, expansion_search=64)
    index.upsert(np.arange(300), x)
    copy = pickle.loads(pickle.dumps(index))
    assert len(copy) == 300 and copy.expansion_search == 64
    # usearch's bytes keep no widths: the restored graph must insert with this index's own
    assert (copy._index.expansion_add, copy._index.expansion_search) == (48, 64)
    assert copy.search(x[42], 5)[0].tolist() == index.search(x[42], 5)[0].tolist()
    assert index.memory_bytes() > x.nbytes


def test_make_index_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="exact"):
        make_index("faiss", 4)


def test_i8_storage_keeps_recall_and_cosine_scores_in_a_quarter_of_the_memory():
    x = clustered(3000)
    queries = clustered(50, seed=1)
    rows = np.arange(len(x))
    exact, f32 = ExactIndex(32), HNSWIndex(32, expansion_search=128)
    i8 = HNSWIndex(32, dtype="i8", metric="cos", expansion_search=128)
    for index in (exact, f32, i8):
        index.upsert(rows, x)
    hits = 0
    for q in queries:
        truth, _ = exact.search(q, 10)
        # i8 rounds near-ties apart (its own top-10 held 0.94 of the exact one here), but a
        # candidate source asks for hundreds and rescores them on the full vectors: the exact
        # top-10 must be in a slightly wider search
        found, scores = i8.search(q, 20)
        hits += len(set(found.tolist()) & set(truth.tolist()))
        np.testing.assert_allclose(scores, x[found] @ q, atol=0.02)  # cosines, 1/127 steps
    assert hits / (10 * len(queries)) >= 0.95
    saved = len(pickle.dumps(f32)) - len(pickle.dumps(i8))  # memory_bytes: arenas hide it here
    assert saved >= 0.95 * x.size * 3  # 1 byte per component instead of 4 (the graph stays)
    restored = pickle.loads(pickle.dumps(i8))
    assert restored.metric == "cos" and restored.search(queries[0], 5)[0].tolist() == (
        i8.search(queries[0], 5)[0].tolist()
    )
    with pytest.raises(ValueError, match="i8"):
        HNSWIndex(32, dtype="i8")  # inner products in usearch's integer units: refused
    with pytest.raises(ValueError, match="metric"):
        HNSWIndex(32, metric="l2sq")


def test_hnsw_saves_to_a_file_and_loads_the_same_graph(tmp_path):
    x = clustered(500)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = HNSWIndex(32, dtype="i8", metric="cos", expansion_add=48, expansion_search=96)
    index.upsert(np.arange(500), x)
    index.remove([3, 7])
    path = tmp_path / "content.usearch"
    index.save(path)
    loaded = HNSWIndex.load(path)
    assert (loaded.dtype, loaded.metric, loaded.expansion_add, loaded.expansion_search) == (
        "i8",
        "cos",
        48,
        96,
    )
    assert len(loaded) == len(index) == 498
    assert (loaded._index.expansion_add, loaded._index.expansion_search) == (48, 96)
    for q in x[:20]:
        rows, scores = loaded.search(q, 10, exclude=[0])
        expected_rows, expected_scores = index.search(q, 10, exclude=[0])
        assert rows.tolist() == expected_rows.tolist()
        np.testing.assert_array_equal(scores, expected_scores)
        assert 3 not in rows and 7 not in rows
    other = tmp_path / "other.usearch"
    HNSWIndex(8).save(other)
    (tmp_path / "other.usearch.json").write_text((tmp_path / "content.usearch.json").read_text())
    with pytest.raises(ValueError, match="32-d"):
        HNSWIndex.load(other)  # settings of one index, graph of another
