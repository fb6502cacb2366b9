"""A growable sparse square matrix with an optional cap on each row: co-visitation's storage.

Each row is a pair of numpy arrays (columns, values) grown in place plus a dict from column to
position, so an increment is O(1) amortised and a row is ready for a vectorised scatter-add.

A worker that runs for months sees every item pair sooner or later: with ``max_stored=m`` a row
that grows past ``2 m`` entries keeps only its ``m`` largest values (one ``argpartition``, once per
``m`` new neighbours, so O(1) amortised per increment). A pruned pair that occurs again starts
from zero: the rows then hold the heavy hitters, which are the neighbours that score anyway.

>>> m = SparseRows(max_stored=2)
>>> m.add_symmetric(0, [1, 2, 3], [3.0, 1.0, 2.0])
>>> m.add(0, 4, 0.5)
>>> m.add(0, 5, 0.25)  # row 0 now holds 5 > 2 * 2 entries: its 2 largest stay
>>> cols, vals = m.row(0)
>>> cols.tolist(), vals.tolist(), m.get(1, 0), m.n_pruned
([1, 3], [3.0, 2.0], 3.0, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recstream.index import grow

__all__ = ["SparseRows"]

_UNBOUNDED = 1 << 62


class SparseRows:
    """A growable sparse square matrix: per row, numpy arrays of columns and values.

    ``add(i, j, w)`` is O(1) amortised (a dict finds the slot); ``row(i)`` returns array views
    ready for a vectorised scatter-add. Only rows that hold an entry take memory: a catalogue
    of 10M items whose last item got an event costs one row, not 10M empty ones (each empty
    row was a dict and two small arrays, ~330 bytes: 3.3 GB per matrix at 10M items).

    Parameters
    ----------
    max_stored
        A row that grows past ``2 * max_stored`` entries is pruned to its ``max_stored`` largest
        (module docstring); 0 keeps every entry. Rows are pruned independently, so ``c(i, j)``
        may stay in row ``i`` after leaving row ``j``.
    """

    # Class defaults: a matrix pickled before the cap existed loads unbounded.
    max_stored = 0
    n_pruned = 0  # entries dropped by pruning so far

    def __init__(self, max_stored: int = 0) -> None:
        if max_stored < 0:
            raise ValueError(f"max_stored must be >= 0, got {max_stored}")
        self.max_stored = max_stored
        # row -> its column -> position, columns, values and size; rows without entries absent
        self._pos: dict[int, dict[int, int]] = {}
        self._cols: dict[int, np.ndarray] = {}
        self._vals: dict[int, np.ndarray] = {}
        self._size: dict[int, int] = {}
        self._n = 0  # 1 + the largest row or column written
        self._top: dict[int, tuple[np.ndarray, int]] = {}  # row -> (positions, size when cached)

    def __len__(self) -> int:
        return self._n

    def rows(self) -> list[int]:
        """The rows that hold entries, in order."""
        return sorted(i for i, n in self._size.items() if n)

    @property
    def _limit(self) -> int:
        """The size beyond which a row is pruned."""
        return 2 * self.max_stored if self.max_stored else _UNBOUNDED

    def _new_row(self, i: int) -> dict[int, int]:
        pos = self._pos[i] = {}
        self._cols[i] = np.zeros(4, dtype=np.int32)
        self._vals[i] = np.zeros(4, dtype=np.float32)
        self._size[i] = 0
        return pos

    def _prune(self, i: int) -> None:
        """Keep the ``max_stored`` largest entries of row ``i``, in their previous order."""
        m, n = self.max_stored, self._size[i]
        keep = np.sort(np.argpartition(-self._vals[i][:n], m - 1)[:m])
        cols, vals = self._cols[i][keep], self._vals[i][keep]  # copies (fancy indexing)
        capacity = 2 * m + 1  # the most a row ever holds: it never grows again
        if self._cols[i].shape[0] != capacity:
            self._cols[i] = np.zeros(capacity, dtype=np.int32)
            self._vals[i] = np.zeros(capacity, dtype=np.float32)
        self._cols[i][:m] = cols
        self._vals[i][:m] = vals
        pos = self._pos[i]
        pos.clear()  # in place: the hot loops hold a reference to this dict
        pos.update(zip(cols.tolist(), range(m), strict=True))
        self._size[i] = m
        self._top.pop(i, None)  # cached positions moved
        self.n_pruned += n - m

    def add(self, i: int, j: int, w: float) -> None:
        if i >= self._n or j >= self._n:
            self._n = max(i, j) + 1
        pos = self._pos.get(i)
        if pos is None:
            pos = self._new_row(i)
        p = pos.get(j)
        if p is None:
            p = self._size[i]
            if p == self._cols[i].shape[0]:
                self._cols[i] = grow(self._cols[i], p + 1)
                self._vals[i] = grow(self._vals[i], p + 1)
            self._cols[i][p] = j
            pos[j] = p
            self._size[i] = p + 1
            self._vals[i][p] = w
            if p >= self._limit:
                self._prune(i)
        else:
            self._vals[i][p] += w

    def add_symmetric(self, i: int, others: Sequence[int], weights: Sequence[float]) -> None:
        """``add(i, j, w)`` and ``add(j, i, w)`` for each ``(j, w)``: the per-event hot path."""
        if not others:
            return
        largest = max(i, *others)
        if largest >= self._n:
            self._n = largest + 1
        rows, size, cols, vals = self._pos, self._size, self._cols, self._vals
        pos_i = rows.get(i)
        if pos_i is None:
            pos_i = self._new_row(i)
        limit = self._limit
        for j, w in zip(others, weights, strict=True):
            pos_j = rows.get(j)
            if pos_j is None:
                pos_j = self._new_row(j)
            for a, b, pos in ((i, j, pos_i), (j, i, pos_j)):
                p = pos.get(b)
                if p is None:
                    p = size[a]
                    if p == cols[a].shape[0]:
                        cols[a] = grow(cols[a], p + 1)
                        vals[a] = grow(vals[a], p + 1)
                    cols[a][p] = b
                    vals[a][p] = w
                    pos[b] = p
                    size[a] = p + 1
                    if p >= limit:
                        self._prune(a)
                else:
                    vals[a][p] += w

    def add_pairs(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """``add(i, j, x)`` and ``add(j, i, x)`` for each ``(i, j, x)`` of the three arrays.

        For merging another replica's counts; repeated pairs are summed first.
        """
        if not len(a):
            return
        n = int(max(a.max(), b.max())) + 1
        self._n = max(self._n, n)
        # one entry per (row, col), sorted by row: repeated pairs are summed first
        keys = np.concatenate([a, b]).astype(np.int64) * n + np.concatenate([b, a])
        keys, inverse = np.unique(keys, return_inverse=True)
        weights = np.bincount(inverse, np.concatenate([w, w]), minlength=keys.size)
        rows, cols = keys // n, keys % n
        pos_rows, size, cols_rows, vals_rows = self._pos, self._size, self._cols, self._vals
        limit = self._limit
        for r, c, x in zip(rows.tolist(), cols.tolist(), weights.tolist(), strict=True):
            pos = pos_rows.get(r)
            if pos is None:
                pos = self._new_row(r)
            p = pos.get(c)
            if p is None:
                p = size[r]
                if p == cols_rows[r].shape[0]:
                    cols_rows[r] = grow(cols_rows[r], p + 1)
                    vals_rows[r] = grow(vals_rows[r], p + 1)
                cols_rows[r][p] = c
                vals_rows[r][p] = x
                pos[c] = p
                size[r] = p + 1
                if p >= limit:
                    self._prune(r)
            else:
                vals_rows[r][p] += x

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._size.get(i, 0)
        if not n:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return self._cols[i][:n], self._vals[i][:n]

    def top(self, i: int, m: int, col_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` entries of row ``i`` with the largest ``value * col_weight[col]``.

        The selection is cached as *positions* in the row, which move only when the row is
        pruned (the cache is dropped then); it is refreshed when the row has grown by more than
        10%. A popular item's row is thousands of entries long, and selecting once per ~10%
        growth instead of scanning it on every request is what keeps scoring cheap.
        """
        n = self._size.get(i, 0)
        if n <= m:
            return self.row(i)
        cached = self._top.get(i)
        if cached is None or n > 1.1 * cached[1] + 8:
            cols, vals = self._cols[i][:n], self._vals[i][:n]
            positions = np.argpartition(-(vals * col_weight[cols]), m)[:m]
            cached = self._top[i] = (positions, n)
        positions = cached[0]
        return self._cols[i][positions], self._vals[i][positions]

    def scale(self, factor: float) -> None:
        """Multiply every stored value by ``factor`` (a decayed matrix moving its frame)."""
        for i, n in self._size.items():
            self._vals[i][:n] *= factor

    def get(self, i: int, j: int) -> float:
        pos = self._pos.get(i)
        if pos is None:
            return 0.0
        p = pos.get(j)
        return 0.0 if p is None else float(self._vals[i][p])

    @property
    def nnz(self) -> int:
        return sum(self._size.values())

    def __setstate__(self, state: dict) -> None:
        # Pickled before rows were kept only when used (checkpoints written until 2026-12-03):
        # one list entry per row up to the largest; the rows that hold entries carry over.
        if isinstance(state.get("_pos"), list):
            sizes = state["_size"]
            used = [i for i, n in enumerate(sizes) if n]
            state["_n"] = len(sizes)
            for name in ("_pos", "_cols", "_vals", "_size"):
                values = state[name]
                state[name] = {i: values[i] for i in used}
        self.__dict__.update(state)
