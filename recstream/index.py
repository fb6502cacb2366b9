"""Item index: item ids <-> matrix rows, item vectors, exact top-K on numpy.

Every model in :mod:`recstream` keeps its per-item numbers in numpy arrays whose row ``r`` is the
item ``index.ids[r]``; sharing one :class:`ItemIndex` between models (the hybrid does) means one
score array per signal over the same rows, so signals combine with plain vector arithmetic and
ranking the whole catalogue is one O(n) partition (:func:`top_k`).

Rows are never reused: a deleted item keeps its row and is masked out (``active`` is False), so
arrays held by other models never need re-indexing. Arrays grow geometrically, so adding items
one at a time from the stream is amortised O(1).

>>> import numpy as np
>>> index = ItemIndex(dim=2)
>>> index.add("a"), index.add("b"), index.add("c"), index.add("a")
(0, 1, 2, 0)
>>> index.set_vectors(["a", "b", "c"], np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32))
>>> [(i, round(s, 2)) for i, s in index.search(np.array([1.0, 0.0]), k=2)]
[('a', 1.0), ('c', 0.6)]
>>> index.delete("a")
>>> [i for i, _ in index.search(np.array([1.0, 0.0]), k=2)]
['c', 'b']
>>> index.add("a"), bool(index.active[0]), index.activate("a"), bool(index.active[0])
(0, False, 0, True)
>>> top_k(np.array([0.1, 0.9, 0.5, 0.7]), 2, exclude=np.array([1]))
array([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from recstream.projection import Refit, fit_basis, refit_due, refit_work, scaled_matmul
from recstream.rows import grow, isin_rows, top_k, unique_rows

__all__ = ["VECTOR_DTYPES", "ItemIndex", "grow", "isin_rows", "top_k", "unique_rows"]

# How an ItemIndex may store its item vectors: "i8" takes a quarter of float32's memory (10M x
# 384 items: 3.9 GB against 15.4), for catalogues whose vectors would not fit otherwise.
VECTOR_DTYPES = {"f32": np.float32, "i8": np.int8}


class ItemIndex:
    """Item id <-> row mapping, an ``active`` mask and an optional (n, dim) vector matrix.

    Parameters
    ----------
    dim
        Dimension of item vectors; ``None`` until the first :meth:`set_vectors` call fixes it.
    reduce_dim
        When set (and smaller than ``dim``), :meth:`similarity` with ``approx=True`` scores in a
        ``reduce_dim``-dimensional projection on the top (uncentred) principal directions of the
        stored vectors: the projection that best preserves dot products. A 384-d BERT matrix
        projected to 64-d makes a full-catalogue scan ~6x cheaper while keeping the ranking of
        similar items; exact vectors stay available for everything else.
    vector_dtype
        How the vectors are stored: ``"f32"``, or ``"i8"``: a quarter of the memory, each row
        scaled so that its largest component is 127, with its scale kept as a float32. Scores
        are computed in float32 on the stored values times the row's scale (a unit vector's
        cosines move by ~1e-3).

    >>> index = ItemIndex(vector_dtype="i8")
    >>> index.set_vectors(["a", "b"], np.array([[3.0, 4.0], [1.0, 0.0]]))
    >>> [round(float(v), 4) for v in index.vector("a")]  # 0.6 x 127 / 0.8 = 95.25: 95
    [0.5984, 0.8]
    >>> [round(float(v), 4) for v in index.similarity_at(np.array([0.6, 0.8]), [0, 1])]
    [0.9991, 0.6]
    """

    # A worker refits the projection off its event loop (recstream/projection.py): then
    # _projection() never refits in the caller's thread, and _refit_dirty records the rows
    # written while a refit runs. Class-level defaults: pickles from before load without them.
    background_refit: bool = False
    _refit_dirty: set[int] | None = None
    vector_dtype: str = "f32"  # class-level: pickles from before the setting load as f32
    _scale: np.ndarray | None = None  # "i8": each row's value = stored int8 x its scale

    def __init__(
        self, dim: int | None = None, reduce_dim: int | None = None, vector_dtype: str = "f32"
    ) -> None:
        if vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype must be one of {sorted(VECTOR_DTYPES)}")
        self.vector_dtype = vector_dtype
        self.dim = dim
        self.reduce_dim = reduce_dim
        self._basis: np.ndarray | None = None  # (dim, reduce_dim) projection
        self._basis_n = 0  # number of vectors the basis was fitted on
        self._proj = np.zeros((0, 0), dtype=np.float32)  # projected vectors by row
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self._active = np.zeros(0, dtype=bool)
        self._has_vector = np.zeros(0, dtype=bool)
        self._vectors = np.zeros((0, dim or 0), dtype=VECTOR_DTYPES[vector_dtype])
        if vector_dtype == "i8":
            self._scale = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.rows

    @property
    def active(self) -> np.ndarray:
        """Boolean mask over rows: False for deleted items."""
        return self._active[: len(self.ids)]

    @property
    def has_vector(self) -> np.ndarray:
        """Boolean mask over rows: True once the item has a content vector."""
        return self._has_vector[: len(self.ids)]

    @property
    def vectors(self) -> np.ndarray:
        """(n_items, dim) float32; rows without a vector are zeros. A view with ``"f32"``
        storage; with ``"i8"`` a copy of the whole catalogue: use :meth:`vectors_at`."""
        if self._scale is None:
            return self._vectors[: len(self.ids)]
        return self.vectors_at(np.arange(len(self.ids)))

    def vectors_at(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """(len(rows), dim) float32 vectors of ``rows`` (a copy with ``"i8"`` storage)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._scale is None:
            return self._vectors[rows]
        return self._vectors[rows].astype(np.float32) * self._scale[rows, None]

    def _times(self, right: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Every row's (or ``rows``') float32 vector times ``right``, without a float32 copy of
        an ``"i8"`` matrix: the product on the stored values, then each row's scale."""
        at = slice(len(self.ids)) if rows is None else rows
        scale = None if self._scale is None else self._scale[at]
        return scaled_matmul(self._vectors[at], right, scale)

    def vector_bytes(self) -> int:
        """Bytes the stored vectors of the catalogue's rows take (and their scales)."""
        n = len(self.ids)
        scale = 0 if self._scale is None else self._scale[:n].nbytes
        return int(self._vectors[:n].nbytes + scale)

    @property
    def n_vectors(self) -> int:
        return int(np.count_nonzero(self.has_vector))

    def add(self, item_id: str, *, active: bool = True) -> int:
        """Row of ``item_id``, appending it when unknown (a deleted item stays deleted).

        ``active=False`` appends an unknown item masked out of every ranking: a signal to learn
        from, not yet an item to recommend (:meth:`activate` makes it one).
        """
        row = self.rows.get(item_id)
        if row is not None:
            return row
        row = len(self.ids)
        self.ids.append(item_id)
        self.rows[item_id] = row
        self._active = grow(self._active, row + 1, fill=False)
        self._has_vector = grow(self._has_vector, row + 1, fill=False)
        self._active[row] = active
        if self.dim is not None:
            self._grow_vectors(row + 1)
        return row

    def _grow_vectors(self, n: int) -> None:
        self._vectors = grow(self._vectors, n)
        if self._scale is not None:
            self._scale = grow(self._scale, n)

    def add_many(self, item_ids: Iterable[str]) -> np.ndarray:
        return np.array([self.add(i) for i in item_ids], dtype=np.int64)

    def row(self, item_id: str) -> int | None:
        return self.rows.get(item_id)

    def activate(self, item_id: str) -> int:
        """Add ``item_id`` or bring a deleted item back; returns its row."""
        row = self.add(item_id)
        self._active[row] = True
        return row

    def delete(self, item_id: str) -> None:
        """Mask the item out of every ranking; its row (and arrays in other models) stay."""
        row = self.rows.get(item_id)
        if row is not None:
            self._active[row] = False

    def set_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store L2-normalised vectors for ``item_ids`` (added when unknown)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(item_ids):
            raise ValueError(
                f"vectors must have shape (len(item_ids), dim), got {vectors.shape} "
                f"for {len(item_ids)} ids"
            )
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._vectors = np.zeros(
                (self._active.shape[0], self.dim), dtype=VECTOR_DTYPES[self.vector_dtype]
            )
            if self._scale is not None:
                self._scale = np.zeros(self._active.shape[0], dtype=np.float32)
        elif vectors.shape[1] != self.dim:
            raise ValueError(f"vector dimension {vectors.shape[1]} != index dimension {self.dim}")
        # Normalise defensively: cosine similarity is a dot product only for unit vectors.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        rows = np.array([self.rows.get(i, -1) for i in item_ids], dtype=np.int64)
        new = [i for i, r in zip(item_ids, rows, strict=True) if r < 0]
        if new:
            for item_id in new:
                self.add(item_id)
            rows = np.array([self.rows[i] for i in item_ids], dtype=np.int64)
        self._grow_vectors(len(self.ids))
        if self._scale is None:
            self._vectors[rows] = vectors
        else:  # the largest component of each row at +-127
            scale = np.abs(vectors).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            self._vectors[rows] = np.rint(vectors / scale[:, None]).astype(np.int8)
            self._scale[rows] = scale
        self._has_vector[rows] = True
        if self._refit_dirty is not None:  # a refit runs: these rows are projected again
            self._refit_dirty.update(rows.tolist())
        if self._basis is not None:
            self._proj = grow(self._proj, len(self.ids))
            self._proj[rows] = vectors @ self._basis

    def _projection(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(basis, projected rows), refitted whenever the vector count grew by a quarter (in
        place; with ``background_refit`` the last basis is kept until :meth:`finish_refit`, and
        None, full-width vectors, until the first one arrives)."""
        if not self._projects():
            return None
        if refit_due(self.n_vectors, self._basis_n, self._basis is not None):
            if self.background_refit:
                if self._basis is None:
                    return None
            else:
                with_vector = np.flatnonzero(self.has_vector)
                self._basis = fit_basis(self.vectors_at(with_vector), self.reduce_dim)
                self._basis_n = self.n_vectors
                self._proj = np.ascontiguousarray(self._times(self._basis))
        self._proj = grow(self._proj, len(self.ids))
        return self._basis, self._proj[: len(self.ids)]

    def _projects(self) -> bool:
        return self.reduce_dim is not None and self.dim is not None and self.reduce_dim < self.dim

    # -- the refit off the loop (recstream/projection.py) ---------------------------------------
    def begin_refit(self) -> Callable[[], Refit] | None:
        """When a refit is due and none is running: the work to run in a thread (it reads the
        vectors; rows written meanwhile are recorded). Always follow with :meth:`finish_refit`
        (its result, or None when the work failed or was cancelled)."""
        if not self._projects() or self._refit_dirty is not None:
            return None
        if not refit_due(self.n_vectors, self._basis_n, self._basis is not None):
            return None
        self._refit_dirty = set()
        vectors, has, reduce_dim = self._vectors, self.has_vector.copy(), int(self.reduce_dim)
        scale = None if self._scale is None else self._scale[: has.shape[0]].copy()
        return lambda: refit_work(vectors, has, reduce_dim, scale)

    def finish_refit(self, refit: Refit | None) -> None:
        """Swap a finished refit in (between two events): the basis, the rows it projected,
        and the rows written since projected again with it. O(rows changed meanwhile)."""
        dirty, self._refit_dirty = self._refit_dirty or set(), None
        if refit is None:
            return
        projected = grow(refit.projected, len(self.ids))
        again = sorted(dirty | set(range(refit.n_rows, len(self.ids))))
        if again:
            projected[again] = self.vectors_at(again) @ refit.basis
        self._basis, self._basis_n, self._proj = refit.basis, refit.n_vectors, projected

    def __getstate__(self) -> dict:
        # a checkpoint taken while a refit runs: the restored index just refits again, and a
        # model loaded elsewhere (an evaluation) refits in place
        state = dict(self.__dict__)
        state.pop("_refit_dirty", None)
        state.pop("background_refit", None)
        return state

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self.rows.get(item_id)
        if row is None or not self._has_vector[row]:
            return None
        return self.vectors_at([row])[0]  # a fresh array: the row may be written again

    def similarity(self, query: np.ndarray, *, approx: bool = False) -> np.ndarray:
        """Cosine similarity of every row with ``query`` (0 for rows without a vector).

        ``approx=True`` uses the ``reduce_dim`` projection when configured (see the class).
        """
        if self.dim is None or not len(self.ids):
            return np.zeros(len(self.ids), dtype=np.float32)
        query = np.asarray(query, dtype=np.float32)
        if approx:
            projection = self._projection()
            if projection is not None:
                basis, proj = projection
                return proj @ (query @ basis)
        return self._times(query)

    def similarity_at(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``rows`` with ``query`` on the full vectors (0 without a
        vector): O(len(rows)), no projection to refit."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.dim is None or not rows.size:
            return np.zeros(rows.size, dtype=np.float32)
        return self._times(np.asarray(query, dtype=np.float32), rows)

    def item_similarities(
        self, query_rows: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Cosines ``(n, len(query_rows))`` of every row (``rows`` None) or of ``rows`` with the
        items at ``query_rows``, in the ``reduce_dim`` projection when there is one (as
        :meth:`similarity` with ``approx=True``: the same numbers); 0 for rows without a vector.
        One ``(n, r) x (r, m)`` product: many queries for the price of one pass.

        >>> index = ItemIndex(dim=2)
        >>> index.set_vectors(["a", "b", "c"], np.array([[1, 0], [0, 1], [0.6, 0.8]]))
        >>> sims = index.item_similarities(np.array([0, 2]), rows=np.array([1]))
        >>> sims.shape, [round(float(x), 2) for x in sims[0]]
        ((1, 2), [0.0, 0.8])
        """
        query_rows = np.asarray(query_rows, dtype=np.int64)
        n = len(self.ids) if rows is None else len(rows)
        if self.dim is None or not len(self.ids):
            return np.zeros((n, query_rows.size), dtype=np.float32)
        projection = self._projection()
        at = None if rows is None else np.asarray(rows, dtype=np.int64)
        if projection is None:
            return self._times(self.vectors_at(query_rows).T, at)
        matrix = projection[1]
        return (matrix if at is None else matrix[at]) @ matrix[query_rows].T

    def search(
        self, query: np.ndarray, k: int = 10, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The ``k`` active items with a vector most similar to ``query``, best first."""
        scores = self.similarity(query)
        excluded = [self.rows[i] for i in exclude if i in self.rows]
        rows = top_k(scores, k, exclude=excluded, valid=self.active & self.has_vector)
        return [(self.ids[r], float(scores[r])) for r in rows]
