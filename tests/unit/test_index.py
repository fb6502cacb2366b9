import numpy as np
import pytest

from recstream.index import ItemIndex, grow, isin_rows, top_k, unique_rows


def test_top_k_orders_best_first_and_breaks_ties_by_row():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert top_k(scores, 3).tolist() == [1, 4, 0]


def test_top_k_respects_exclude_and_valid_and_short_catalogues():
    scores = np.array([3.0, 2.0, 1.0, 0.0])
    valid = np.array([True, True, False, True])
    assert top_k(scores, 10, exclude=[0], valid=valid).tolist() == [1, 3]
    assert top_k(scores, 0).tolist() == []
    assert top_k(np.zeros(0), 5).tolist() == []


def test_top_k_many_ties_and_nan():
    scores = np.zeros(1000)
    scores[[500, 7]] = 1.0
    scores[3] = np.nan
    assert top_k(scores, 4).tolist() == [7, 500, 0, 1]
    assert top_k(np.full(5, np.nan), 3).tolist() == []


def test_top_k_matches_full_sort_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=5000)
    assert top_k(scores, 25).tolist() == np.argsort(-scores, kind="stable")[:25].tolist()
    ties = rng.integers(0, 4, size=5000).astype(float)  # thousands of ties at every value
    for k in (1, 10, 1300, 5000):
        assert top_k(ties, k).tolist() == np.argsort(-ties, kind="stable")[:k].tolist()


def test_grow_keeps_content_and_amortises():
    a = np.arange(3.0)
    b = grow(a, 5)
    assert b.shape[0] >= 5 and b[:3].tolist() == [0.0, 1.0, 2.0]
    assert grow(b, 2) is b


def test_index_rows_are_stable_and_deleted_items_masked():
    index = ItemIndex()
    assert [index.add(i) for i in "abcab"] == [0, 1, 2, 0, 1]
    index.delete("b")
    assert index.active.tolist() == [True, False, True]
    assert "b" in index and index.row("b") == 1
    index.add("b")  # a late event does not bring it back...
    assert index.active.tolist() == [True, False, True]
    assert index.activate("b") == 1  # ...an upsert does, same row
    assert index.active.tolist() == [True, True, True]


def test_set_vectors_normalises_grows_and_searches():
    index = ItemIndex()
    index.add("a")
    index.set_vectors(["a", "new"], np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert len(index) == 2 and index.n_vectors == 2
    np.testing.assert_allclose(index.vector("a"), [0.6, 0.8], rtol=1e-6)
    assert [i for i, _ in index.search(np.array([0.0, 1.0]), k=2)] == ["new", "a"]
    assert index.search(np.array([0.0, 1.0]), k=2, exclude=["new"])[0][0] == "a"
    index.add("novector")
    assert index.similarity(np.array([1.0, 0.0]))[2] == 0.0
    with pytest.raises(ValueError, match="dimension"):
        index.set_vectors(["a"], np.ones((1, 3)))
    with pytest.raises(ValueError, match="shape"):
        index.set_vectors(["a", "b"], np.ones((1, 2)))


def test_projected_similarity_preserves_the_neighbours():
    rng = np.random.default_rng(1)
    # 300 vectors living near a 6-d subspace of a 48-d space: 8 dims capture them
    basis = rng.normal(size=(6, 48))
    x = rng.normal(size=(300, 6)) @ basis + 0.01 * rng.normal(size=(300, 48))
    index = ItemIndex(reduce_dim=8)
    index.set_vectors([f"i{n}" for n in range(300)], x)
    exact = index.similarity(index.vector("i0"))
    approx = index.similarity(index.vector("i0"), approx=True)
    np.testing.assert_allclose(approx, exact, atol=0.02)
    assert top_k(approx, 10).tolist() == top_k(exact, 10).tolist()
    # vectors added after the fit are projected too
    index.set_vectors(["late"], x[:1])
    assert index.similarity(index.vector("i0"), approx=True)[-1] == pytest.approx(1.0, abs=0.02)


def test_i8_storage_takes_a_quarter_of_the_memory_and_scores_like_f32():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 48))
    ids = [f"i{n}" for n in range(500)]
    full, small = ItemIndex(reduce_dim=8), ItemIndex(reduce_dim=8, vector_dtype="i8")
    full.set_vectors(ids, x)
    small.set_vectors(ids, x)
    assert small.vector_bytes() == 500 * 48 + 500 * 4 and full.vector_bytes() == 500 * 48 * 4
    np.testing.assert_allclose(small.vectors, full.vectors, atol=5e-3)  # a float32 copy
    q = full.vector("i0")
    assert small.vector("i0").dtype == np.float32
    for approx in (False, True):
        a, b = full.similarity(q, approx=approx), small.similarity(q, approx=approx)
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, atol=5e-3)
    rows = np.array([3, 7, 400])
    np.testing.assert_allclose(small.similarity_at(q, rows), full.similarity_at(q, rows), atol=5e-3)
    np.testing.assert_allclose(small.vectors_at(rows), full.vectors_at(rows), atol=5e-3)
    for at in (None, rows):
        np.testing.assert_allclose(
            small.item_similarities(rows, at), full.item_similarities(rows, at), atol=5e-3
        )
    assert [i for i, _ in small.search(q, k=5)] == [i for i, _ in full.search(q, k=5)]
    # the refit off the loop projects the dequantised rows, as the one in place does
    fresh = ItemIndex(reduce_dim=8, vector_dtype="i8")
    fresh.set_vectors(ids, x)
    fresh.background_refit = True
    fresh.finish_refit(fresh.begin_refit()())
    np.testing.assert_allclose(fresh.similarity(q, approx=True), a, atol=5e-3)
    with pytest.raises(ValueError, match="vector_dtype"):
        ItemIndex(vector_dtype="f16")


def test_unique_rows_is_np_unique():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 3000):
        for high in (3, 10**6):
            rows = rng.integers(0, high, n)
            got, want = unique_rows(rows), np.unique(rows)
            assert got.dtype == want.dtype and np.array_equal(got, want), (n, high)


def test_isin_rows_is_np_isin():
    rng = np.random.default_rng(4)
    for n, m in ((0, 5), (5, 0), (1, 1), (3000, 1000), (200, 7)):
        rows, values = rng.integers(0, 400, n), rng.integers(0, 400, m)
        assert np.array_equal(isin_rows(rows, values), np.isin(rows, values)), (n, m)
