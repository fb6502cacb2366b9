"""Bounded candidate sources for two-stage retrieval (issue 12): gather, then score only these.

Each source proposes at most ``quota`` rows for one list, best first, at a cost that does not
grow with the catalogue:

- :class:`CovisitSource`: the listed neighbours (:class:`~recstream.topn.TopNeighbours`) of the
  user's latest items, weighted by recency and cosine-normalised as co-visitation scores them;
- :class:`VectorSource`: an ANN search (:mod:`recstream.ann`) for a query vector: the content
  profile over item vectors, or the user's MF factors over item factors;
- :class:`PopularSource`: a popular-now pool, a :class:`~recstream.topn.TopN` offered each
  counted item's new total and rebuilt from the full counts every ``refresh_every`` events;
- :class:`FreshSource`: the latest items to arrive.

:class:`CandidateGatherer` merges them: sources take turns in proportion to their quotas, so a
cap smaller than the quotas' sum trims every source's tail rather than dropping the last source;
rows are unique, never the user's excluded rows, never inactive ones.

>>> import numpy as np
>>> from recstream.ann import ExactIndex
>>> index = ExactIndex(dim=2)
>>> index.upsert([0, 1, 2, 3], np.array([[1, 0], [0, 1], [0.8, 0.6], [0.6, 0.8]]))
>>> fresh = FreshSource(size=10)
>>> for row in range(4):
...     fresh.note(row)
>>> gather = CandidateGatherer(
...     [(VectorSource("content", index), 2), (fresh, 3)], cap=3)
>>> query = Query(vectors={"content": np.array([1.0, 0.0], dtype=np.float32)}, exclude=[0])
>>> gather(query).rows.tolist()  # content: 2, 3; fresh: 3, 2, 1 (0 excluded)
[2, 3, 1]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recstream.ann import VectorIndex
from recstream.index import isin_rows
from recstream.topn import TopN, TopNeighbours

__all__ = [
    "CandidateGatherer",
    "CandidateSource",
    "Candidates",
    "CovisitSource",
    "FreshSource",
    "PopularSource",
    "Query",
    "VectorSource",
    "mf_item_vectors",
    "mf_query",
]

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Query:
    """What the sources know about one list's user.

    ``history``: ``(row, weight)`` of the user's latest counted items, oldest first (as
    :class:`~recstream.covisit.CoVisitation` keeps them); ``vectors``: query vectors by source
    name (``"content"``: the profile, ``"mf"``: :func:`mf_query` of the user's factors);
    ``exclude``: rows never to propose (the user's purchased or seen items).
    """

    history: Sequence[tuple[int, float]] = ()
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    exclude: Iterable[int] = ()


class CandidateSource(Protocol):
    """A bounded proposer of rows for one list."""

    name: str

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        """At most ``quota`` rows not in ``exclude``, best first."""


def _top(rows: np.ndarray, scores: np.ndarray, quota: int) -> np.ndarray:
    """The ``quota`` best rows, best first, ties by row (small arrays: a sort is cheap)."""
    order = np.lexsort((rows, -scores))[:quota]
    return rows[order]


def _at(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, 0 for rows past the end (arrays that grow lazily)."""
    inside = rows < values.shape[0]
    return np.where(inside, values[np.where(inside, rows, 0)], 0.0) if values.size else 0.0 * rows


def _drop(rows: np.ndarray, scores: np.ndarray, exclude: set[int]) -> tuple:
    if not exclude or not rows.size:
        return rows, scores
    keep = ~isin_rows(rows, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    return rows[keep], scores[keep]


class CovisitSource:
    """Neighbours of the user's latest items, scored as co-visitation scores them.

    Parameters
    ----------
    neighbours
        The per-item lists.
    inv_sqrt_norm
        Returns the current ``1 / sqrt(n(i))`` array (``CoVisitation._isq``), read at only the
        listed rows; ``None``: raw counts.
    recency
        Weight multiplier per step back in the history.
    """

    name = "covisit"

    def __init__(
        self,
        neighbours: TopNeighbours,
        inv_sqrt_norm: Callable[[], np.ndarray] | None = None,
        recency: float = 0.9,
    ) -> None:
        self.neighbours = neighbours
        self.inv_sqrt_norm = inv_sqrt_norm
        self.recency = recency

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        isq = self.inv_sqrt_norm() if self.inv_sqrt_norm is not None else None
        cols_parts, vals_parts = [], []
        decay = 1.0
        for row, weight in reversed(query.history):
            cols, counts = self.neighbours.neighbours(row)
            if cols.size:
                w = weight * decay
                if isq is not None:
                    # cosine: c(i, j) / sqrt(n(i) n(j)), read at the listed rows only
                    w *= float(_at(isq, np.array([row]))[0])
                    counts = counts * _at(isq, cols)
                cols_parts.append(cols)
                vals_parts.append(counts * w)
            decay *= self.recency
        if not cols_parts:
            return _EMPTY
        # sum over history items without a catalogue-sized bincount: unique over a few
        # thousand listed rows at most
        rows, inverse = np.unique(np.concatenate(cols_parts), return_inverse=True)
        scores = np.bincount(inverse, np.concatenate(vals_parts), minlength=rows.size)
        rows, scores = _drop(rows, scores, exclude)
        return _top(rows, scores, quota)


class VectorSource:
    """The rows whose vectors have the largest inner product with ``query.vectors[name]``.

    ``widen``: the search fetches at most ``widen x quota`` extra rows to make up for the
    excluded ones. A user's excluded items lie near their profile, so a user with thousands of
    them gets fewer than ``quota`` rows rather than a search thousands of rows deeper on every
    list (an HNSW search costs about its width).
    """

    def __init__(self, name: str, index: VectorIndex, widen: float = 1.0) -> None:
        self.name = name
        self.index = index
        self.widen = widen

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        vector = query.vectors.get(self.name)
        if vector is None or not len(self.index):
            return _EMPTY
        widen = int(getattr(self, "widen", 1.0) * quota)  # pickles from before: 1x
        rows, _ = self.index.search(vector, quota, exclude=exclude, widen=widen)
        return rows


def mf_item_vectors(factors: np.ndarray, biases: np.ndarray | None = None) -> np.ndarray:
    """Item vectors whose inner product with :func:`mf_query` is MF's ``b_i + p_u . q_i``.

    Searched as they are (an inner-product graph), not moved onto a sphere by an extra
    ``sqrt(M^2 - |x|^2)`` coordinate: on random 32-d factors that transform halved the HNSW
    recall@400 (0.51 vs 0.78 at 100k, docs/retrieval.md), the shared coordinate drowning the
    item-item similarities the graph is built from.

    >>> q, b = np.array([[3.0, 0.0], [0.0, 1.0]]), np.array([0.5, 0.0])
    >>> (mf_item_vectors(q, b) @ mf_query(np.array([1.0, 2.0]))).tolist()
    [3.5, 2.0]
    """
    x = np.asarray(factors, dtype=np.float32)
    if biases is not None:
        x = np.hstack([x, np.asarray(biases, dtype=np.float32).reshape(-1, 1)])
    return np.ascontiguousarray(x, dtype=np.float32)


def mf_query(user_factors: np.ndarray, bias: bool = True) -> np.ndarray:
    """The query for :func:`mf_item_vectors` built with (``bias``) or without biases."""
    p = np.asarray(user_factors, dtype=np.float32)
    return np.append(p, np.float32(1.0)) if bias else p


class PopularSource:
    """A popular-now pool of ``size`` rows, kept per event and rebuilt every ``refresh_every``.

    Call :meth:`offer` with a row's new (inflated) popularity total after each counted event:
    O(1) unless it enters the pool. The rebuild (:meth:`refresh`, one argpartition over the
    counts) restores exactness after deletions, decay-frame rescaling or merged deltas; it is
    O(n) once per ``refresh_every`` events, so a caller can run it off the event loop.
    """

    name = "popular"

    def __init__(self, size: int = 500, refresh_every: int = 5000) -> None:
        self.pool = TopN(size)
        self.refresh_every = refresh_every
        self._since_refresh = 0

    def offer(self, row: int, total: float) -> bool:
        """Note ``row``'s new total; True when a :meth:`refresh` is due."""
        self.pool.offer(row, total)
        self._since_refresh += 1
        return self._since_refresh >= self.refresh_every

    def refresh(self, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Rebuild the pool from every row's popularity (``valid``: rows allowed in it)."""
        values = np.asarray(values, dtype=np.float64)
        rows = np.arange(values.shape[0]) if valid is None else np.flatnonzero(valid)
        self.pool.reset(rows, values[rows])
        self._since_refresh = 0

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        rows, totals = self.pool.arrays()
        rows, totals = _drop(rows, totals, exclude)
        return _top(rows, totals, quota)


class FreshSource:
    """The ``size`` latest rows :meth:`note`-d (item arrivals), newest first."""

    name = "fresh"

    def __init__(self, size: int = 500) -> None:
        self._latest: deque[int] = deque(maxlen=size)
        self._member: set[int] = set()

    def note(self, row: int) -> None:
        if row in self._member:
            return  # a re-published item keeps its place: it is not new
        if len(self._latest) == self._latest.maxlen:
            self._member.discard(self._latest[0])
        self._latest.append(row)
        self._member.add(row)

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        out = []
        for row in reversed(self._latest):
            if row not in exclude:
                out.append(row)
                if len(out) == quota:
                    break
        return np.asarray(out, dtype=np.int64)


@dataclass
class Candidates:
    """Unique candidate rows (merge order) and what each source proposed."""

    rows: np.ndarray
    by_source: dict[str, np.ndarray]


class CandidateGatherer:
    """Merge bounded sources into at most ``cap`` unique rows.

    Parameters
    ----------
    sources
        ``(source, quota)`` pairs; a source's quota is how many rows it proposes.
    cap
        The most rows returned. Rows are merged by *relative rank*: a source's ``r``-th row
        comes at ``r / quota``, so with a cap below the quotas' sum every source keeps its best
        rows and loses its tail (ties: the order of ``sources``).
    active
        Returns the catalogue's active mask (``ItemIndex.active``), read at the proposed rows
        only; ``None``: every row may be recommended.
    """

    def __init__(
        self,
        sources: Sequence[tuple[CandidateSource, int]],
        cap: int = 1000,
        active: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if cap <= 0:
            raise ValueError(f"cap must be > 0, got {cap}")
        self.sources = list(sources)
        self.cap = cap
        self.active = active

    def __call__(self, query: Query) -> Candidates:
        exclude = set(query.exclude)
        by_source: dict[str, np.ndarray] = {}
        parts, ranks = [], []
        for source, quota in self.sources:
            if quota <= 0:
                continue
            rows = np.asarray(source.propose(query, quota, exclude), dtype=np.int64)[:quota]
            by_source[source.name] = rows
            parts.append(rows)
            ranks.append(np.arange(rows.size) / quota)
        if not parts:
            return Candidates(_EMPTY, by_source)
        rows, rank = np.concatenate(parts), np.concatenate(ranks)
        if self.active is not None and rows.size:
            active = self.active()
            inside = rows < active.shape[0]
            keep = inside & active[np.where(inside, rows, 0)]
            rows, rank = rows[keep], rank[keep]
        rows = rows[np.argsort(rank, kind="stable")]  # stable: ties keep the sources' order
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)][: self.cap]
        return Candidates(rows, by_source)
