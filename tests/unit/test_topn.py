"""recstream.topn: top-N kept per increment equals a brute-force recompute."""

from __future__ import annotations

import numpy as np

from recstream.sparse_rows import SparseRows
from recstream.topn import TopN, TopNeighbours


def _brute_top(totals: dict[int, float], n: int) -> set[int]:
    return {k for k, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]}


def test_topn_matches_brute_force_under_random_increments():
    rng = np.random.default_rng(0)
    top, totals = TopN(8), {}
    for _ in range(5000):
        key = int(rng.zipf(1.5)) % 200  # skewed, like item traffic
        totals[key] = totals.get(key, 0.0) + float(rng.random())  # distinct: no ties
        top.offer(key, totals[key])
        assert len(top) == min(8, len(totals))
    keys, values = top.items()
    assert set(keys) == _brute_top(totals, 8)
    assert values == sorted(values, reverse=True)
    assert values == [totals[k] for k in keys]


def test_topn_reset_restores_a_full_recompute():
    top = TopN(3)
    top.reset(np.array([4, 5, 6, 7]), np.array([1.0, 4.0, 2.0, 3.0]))
    assert top.items() == ([5, 7, 6], [4.0, 3.0, 2.0])
    top.offer(4, 2.5)  # enters above the minimum
    assert top.items()[0] == [5, 7, 4]


def test_covisit_neighbour_lists_match_brute_force():
    """Random sessions counted into SparseRows as CoVisitation.update does; every item's list
    must equal the top-n of its full row."""
    rng = np.random.default_rng(1)
    pairs, top = SparseRows(), TopNeighbours(n=5)
    n_items, window = 60, 4
    histories: dict[int, list[int]] = {}
    for _ in range(3000):
        user, row = int(rng.integers(0, 40)), int(rng.integers(0, n_items))
        history = histories.setdefault(user, [])
        others = [h for h in history[-window:] if h != row]
        weights = rng.random(len(others)).tolist()  # random weights: no exact ties
        pairs.add_symmetric(row, others, weights)
        top.observe(pairs, row, others)
        history.append(row)
    checked = 0
    for item in range(n_items):
        cols, vals = pairs.row(item)
        want = _brute_top(dict(zip(cols.tolist(), vals.tolist(), strict=True)), 5)
        got_rows, got_counts = top.neighbours(item)
        assert set(got_rows.tolist()) == want, item
        np.testing.assert_allclose(
            got_counts, [pairs.get(item, int(j)) for j in got_rows], rtol=1e-6
        )
        checked += bool(want)
    assert checked == n_items


def test_rebuild_equals_incremental():
    rng = np.random.default_rng(2)
    pairs, top = SparseRows(), TopNeighbours(n=3)
    for _ in range(500):
        row, others = int(rng.integers(0, 30)), rng.integers(0, 30, 3).tolist()
        others = [o for o in others if o != row]
        pairs.add_symmetric(row, others, rng.random(len(others)).tolist())
        top.observe(pairs, row, others)
    fresh = TopNeighbours(n=3)
    fresh.rebuild(pairs)
    for item in range(30):
        assert set(fresh.neighbours(item)[0].tolist()) == set(top.neighbours(item)[0].tolist())
