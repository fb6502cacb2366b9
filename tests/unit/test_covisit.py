import numpy as np
import pytest

from recstream.covisit import CoVisitation, SparseRows
from recstream.events import Event


def learn_all(model, stream):
    for n, (u, i, *t) in enumerate(stream):
        model.learn(Event(f"e{n}", u, i, t[0] if t else "purchase", float(n)))


def test_sparse_rows_symmetric_adds():
    m = SparseRows()
    m.add_symmetric(0, [1, 2], [1.0, 2.0])
    m.add_symmetric(1, [0], [0.5])
    assert m.get(0, 1) == m.get(1, 0) == 1.5
    assert m.get(2, 0) == 2.0 and m.get(2, 1) == 0.0
    cols, vals = m.row(0)
    assert dict(zip(cols.tolist(), vals.tolist(), strict=True)) == {1: 1.5, 2: 2.0}
    assert m.nnz == 4


def test_cosine_similarity_by_hand():
    cv = CoVisitation(window=20, types=("purchase",), weights={"purchase": 1.0}, recency=1.0)
    learn_all(cv, [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")])
    # a: 3 purchases, b: 2, c: 1; a&b together twice, a&c once
    assert cv.similarity("a", "b") == pytest.approx(2 / np.sqrt(6))
    assert cv.similarity("a", "c") == pytest.approx(1 / np.sqrt(3))
    assert cv.similarity("b", "c") == 0.0
    assert cv.similarity("a", "zzz") == 0.0


def test_window_limits_which_pairs_count():
    cv = CoVisitation(window=1, weights={"purchase": 1.0}, recency=1.0)
    learn_all(cv, [("u1", "a"), ("u1", "b"), ("u1", "c")])
    assert cv.similarity("a", "b") > 0 and cv.similarity("b", "c") > 0
    assert cv.similarity("a", "c") == 0.0  # two steps apart: outside the window


def test_types_and_weights_filter_events():
    cv = CoVisitation(types=("purchase",), weights={"purchase": 1.0, "view": 1.0})
    learn_all(cv, [("u1", "a", "view"), ("u1", "b", "view"), ("u1", "c", "purchase")])
    assert cv.n_pairs == 0


def test_recommend_recent_items_first_with_reason_and_exclusion():
    cv = CoVisitation(window=5, weights={"purchase": 1.0}, recency=0.5)
    learn_all(cv, [("u1", "x"), ("u1", "x2"), ("u2", "y"), ("u2", "y2"), ("u3", "x"), ("u3", "y")])
    recs = cv.recommend("u3", k=2)
    # u3's latest item is y, so y's neighbour comes first
    assert [r.item_id for r in recs] == ["y2", "x2"]
    assert recs[0].reason == "viewed together with y"
    assert all(r.item_id not in {"x", "y"} for r in recs)


def test_tie_break_falls_back_to_event_counts():
    cv = CoVisitation(weights={"purchase": 1.0})
    learn_all(
        cv, [("u1", "a", "view"), ("u2", "b", "view"), ("u3", "b", "view"), ("u4", "c", "purchase")]
    )
    assert [r.item_id for r in cv.recommend("u4", k=2)] == ["b", "a"]


def test_top_neighbours_are_the_most_similar_and_track_current_values():
    m = SparseRows()
    m.add_symmetric(0, list(range(1, 41)), [float(j) for j in range(1, 41)])
    weight = np.ones(41)
    cols, vals = m.top(0, 5, weight)
    assert sorted(cols.tolist()) == [36, 37, 38, 39, 40]
    m.add(0, 36, 100.0)  # values are read live from the row, not from the cache
    cols, vals = m.top(0, 5, weight)
    assert dict(zip(cols.tolist(), vals.tolist(), strict=True))[36] == 136.0
    weight[1] = 1000.0  # the column weight (1/sqrt(n)) takes part in the selection...
    m.add_symmetric(0, list(range(41, 60)), [0.5] * 19)  # ...once the row grew enough
    assert 1 in m.top(0, 5, np.ones(60) * np.r_[weight, np.ones(19)])[0].tolist()
    assert m.top(0, 100, np.ones(60))[0].shape[0] == 59  # shorter rows are returned whole


def test_max_neighbors_keeps_the_strongest_links():
    full = CoVisitation(window=30, weights={"purchase": 1.0}, recency=1.0)
    knn = CoVisitation(window=30, weights={"purchase": 1.0}, recency=1.0, max_neighbors=3)
    rng = np.random.default_rng(0)
    stream = [(f"u{rng.integers(40)}", f"i{rng.integers(60)}") for _ in range(3000)]
    learn_all(full, stream)
    learn_all(knn, stream)
    assert [r.item_id for r in full.recommend("u1", k=3)] != []
    # the top recommendation comes from some history item's strongest links in both models
    assert knn.recommend("u1", k=1)[0].item_id in {r.item_id for r in full.recommend("u1", k=10)}
