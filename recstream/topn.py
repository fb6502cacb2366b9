"""Top-N of growing counters, maintained per increment: co-visitation neighbour lists and pools.

Co-visitation counts ``c(i, j)`` and popularity counts only ever grow between resets (decay is a
common factor, :mod:`recstream.popularity`), so the ``N`` largest can be kept exactly without
ever scanning: a counter outside the top-N can only enter it by passing the smallest member, and
at that moment its new total is known. :class:`TopN` keeps one such list (``offer`` is O(1) when
the counter is a member or below the minimum, O(N) when it displaces the minimum);
:class:`TopNeighbours` keeps one per item and follows a :class:`~recstream.sparse_rows.
SparseRows` matrix as pairs are counted.

>>> top = TopN(2)
>>> for key, total in [(7, 1.0), (8, 3.0), (9, 2.0), (7, 4.0)]:
...     top.offer(key, total)
>>> top.items()
([7, 8], [4.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recstream.sparse_rows import SparseRows

__all__ = ["TopN", "TopNeighbours"]


class TopN:
    """The ``n`` keys with the largest totals among counters that only grow.

    ``offer(key, total)`` is told a counter's *new total* after each increment. Exact for
    non-decreasing counters; a counter that shrinks (a pruned co-visitation pair restarting from
    zero) is only updated while it is a member, so :meth:`reset` from the true totals restores
    exactness (what :class:`~recstream.candidates.PopularSource` does every few thousand events).
    """

    __slots__ = ("_keys", "_min_pos", "_pos", "_vals", "n")

    def __init__(self, n: int) -> None:
        if n <= 0:
            raise ValueError(f"n must be > 0, got {n}")
        self.n = n
        self._keys: list[int] = []
        self._vals: list[float] = []
        self._pos: dict[int, int] = {}
        self._min_pos = -1  # position of the smallest total, -1: unknown

    def __len__(self) -> int:
        return len(self._keys)

    def _find_min(self) -> int:
        vals = self._vals
        self._min_pos = min(range(len(vals)), key=vals.__getitem__)
        return self._min_pos

    def offer(self, key: int, total: float) -> None:
        """Counter ``key`` now totals ``total``."""
        p = self._pos.get(key)
        if p is not None:
            self._vals[p] = total
            if p == self._min_pos:
                self._min_pos = -1  # the minimum grew: find it again when needed
            return
        if len(self._keys) < self.n:
            self._pos[key] = len(self._keys)
            self._keys.append(key)
            self._vals.append(total)
            self._min_pos = -1
            return
        m = self._min_pos if self._min_pos >= 0 else self._find_min()
        if total > self._vals[m]:
            del self._pos[self._keys[m]]
            self._keys[m] = key
            self._vals[m] = total
            self._pos[key] = m
            self._min_pos = -1

    def reset(self, keys: np.ndarray, totals: np.ndarray) -> None:
        """Replace the list by the top-``n`` of ``(keys, totals)`` (a full recompute)."""
        keys, totals = np.asarray(keys), np.asarray(totals, dtype=np.float64)
        if keys.size > self.n:
            part = np.argpartition(-totals, self.n - 1)[: self.n]
            keys, totals = keys[part], totals[part]
        self._keys = [int(k) for k in keys.tolist()]
        self._vals = [float(v) for v in totals.tolist()]
        self._pos = {k: p for p, k in enumerate(self._keys)}
        self._min_pos = -1

    def items(self) -> tuple[list[int], list[float]]:
        """``(keys, totals)``, largest first (ties: lower key first)."""
        order = sorted(range(len(self._keys)), key=lambda p: (-self._vals[p], self._keys[p]))
        return [self._keys[p] for p in order], [self._vals[p] for p in order]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, totals)`` as numpy arrays, unordered (the cheap form for scoring)."""
        return np.asarray(self._keys, dtype=np.int64), np.asarray(self._vals, dtype=np.float64)


class TopNeighbours:
    """Each item's ``n`` neighbours with the largest co-visitation counts, kept per increment.

    Call :meth:`observe` after ``pairs.add_symmetric(row, others, ...)`` (what
    :meth:`recstream.covisit.CoVisitation.update` does per event): both sides of each counted
    pair are offered their new total, O(window) dict lookups per event. Lists are by raw count
    (what grows monotonically); the candidate source re-weights the few listed neighbours by the
    cosine norm when it reads them.

    >>> pairs, top = SparseRows(), TopNeighbours(n=1)
    >>> for row, others in [(0, [1]), (0, [2]), (2, [0])]:
    ...     pairs.add_symmetric(row, others, [1.0] * len(others))
    ...     top.observe(pairs, row, others)
    >>> top.neighbours(0)[0].tolist(), top.neighbours(1)[0].tolist()
    ([2], [0])
    """

    def __init__(self, n: int = 50) -> None:
        self.n = n
        self._lists: list[TopN | None] = []

    def _list(self, row: int) -> TopN:
        lists = self._lists
        if row >= len(lists):
            lists.extend([None] * (row + 1 - len(lists)))
        top = lists[row]
        if top is None:
            top = lists[row] = TopN(self.n)
        return top

    def observe(self, pairs: SparseRows, row: int, others: Sequence[int]) -> None:
        """Offer the new totals of ``(row, j)`` and ``(j, row)`` for each ``j`` in ``others``."""
        mine = self._list(row)
        get = pairs.get
        for j in others:
            mine.offer(j, get(row, j))
            self._list(j).offer(row, get(j, row))

    def rebuild(self, pairs: SparseRows) -> None:
        """Recompute every list from ``pairs`` (after loading a model that had none)."""
        self._lists = []
        for row in pairs.rows():
            cols, vals = pairs.row(row)
            self._list(row).reset(cols, vals)

    def neighbours(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, counts)`` of ``row``'s listed neighbours, unordered."""
        top = self._lists[row] if row < len(self._lists) else None
        if top is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return top.arrays()
