"""SparseRows: memory only for rows that hold entries, and checkpoints of the earlier layout."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np

from recstream.sparse_rows import SparseRows


def test_a_high_row_costs_one_row_not_every_row_below_it():
    m = SparseRows()
    tracemalloc.start()
    m.add_symmetric(5_000_000, [3], [1.0])  # the last items of a 5M catalogue
    m.add(4_000_000, 7, 2.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # three rows (~1 KB); one dict and two arrays per row below 5M would be ~1.6 GB
    assert peak < 100_000
    assert len(m) == 5_000_001  # 1 + the largest index written, as before
    assert m.rows() == [3, 4_000_000, 5_000_000]
    assert m.get(5_000_000, 3) == m.get(3, 5_000_000) == 1.0
    assert m.get(2_000_000, 3) == 0.0 and m.row(2_000_000)[0].size == 0
    assert m.nnz == 3


def test_a_matrix_pickled_in_the_earlier_layout_loads_the_same():
    # The layout of checkpoints written until 2026-12-03: one entry per row up to the largest.
    pos = [{1: 0, 2: 1}, {0: 0}, {}, {}]
    cols = [np.array([1, 2, 0, 0], np.int32), np.array([0, 0, 0, 0], np.int32)]
    cols += [np.zeros(4, np.int32), np.zeros(4, np.int32)]
    vals = [np.array([2.0, 0.5, 0, 0], np.float32), np.array([2.0, 0, 0, 0], np.float32)]
    vals += [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    old = SparseRows.__new__(SparseRows)
    old.__setstate__(
        {"max_stored": 2, "n_pruned": 1, "_pos": pos, "_cols": cols, "_vals": vals,
         "_size": [2, 1, 0, 0], "_top": {}}
    )  # fmt: skip
    loaded = pickle.loads(pickle.dumps(old))
    assert len(loaded) == 4 and loaded.rows() == [0, 1] and loaded.nnz == 3
    assert loaded.get(0, 1) == 2.0 and loaded.get(0, 2) == 0.5 and loaded.get(1, 0) == 2.0
    assert (loaded.max_stored, loaded.n_pruned) == (2, 1)
    loaded.add_symmetric(3, [0], [1.0])  # and it goes on learning
    assert loaded.get(3, 0) == loaded.get(0, 3) == 1.0 and loaded.rows() == [0, 1, 3]
    cols0, vals0 = loaded.row(0)
    assert cols0.tolist() == [1, 2, 3] and vals0.tolist() == [2.0, 0.5, 1.0]
