"""Vector indexes keyed by item-index rows: the exact numpy reference and a usearch HNSW graph.

Both implement :class:`VectorIndex`: ``upsert`` stores (or replaces) the vectors of some rows,
``remove`` drops rows, ``search`` returns the ``k`` rows with the largest inner product with a
query, best first. Keys are :class:`~recstream.index.ItemIndex` rows, which are never reused, so
an index never has to re-key anything when the catalogue changes.

:class:`ExactIndex` scans every stored row: O(n) per query, exact; it is the reference the tests
and benchmarks compare against, and the cheaper choice for small catalogues. :class:`HNSWIndex`
(usearch) answers in roughly O(log n) with recall < 1, and takes single-row updates in well
under a millisecond, which is what an encoder publishing vectors item by item needs.
docs/retrieval.md compares usearch with faiss-cpu and hnswlib and says why usearch.

>>> import numpy as np
>>> vectors = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
>>> exact, hnsw = ExactIndex(dim=2), HNSWIndex(dim=2)
>>> for index in (exact, hnsw):
...     index.upsert([0, 1, 2], vectors)
...     index.upsert([1], np.array([[0.8, 0.6]], dtype=np.float32))  # row 1 moves
...     index.remove([0])
>>> rows, scores = exact.search(np.array([1.0, 0.0], dtype=np.float32), k=2)
>>> rows.tolist(), [round(float(s), 2) for s in scores]
([1, 2], [0.8, 0.6])
>>> hnsw.search(np.array([1.0, 0.0], dtype=np.float32), k=2)[0].tolist(), len(hnsw)
([1, 2], 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recstream.index import grow, isin_rows, top_k

__all__ = ["ExactIndex", "HNSWIndex", "VectorIndex", "make_index"]

Rows = Sequence[int] | np.ndarray


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product search over vectors keyed by item rows."""

    dim: int

    def upsert(self, rows: Rows, vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``rows[i]``, replacing what the row held."""

    def remove(self, rows: Rows) -> None:
        """Forget ``rows`` (unknown rows are ignored)."""

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[int] | None = None,
        widen: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)`` of the ``k`` largest inner products not in ``exclude``, best
        first. ``widen``: at most this many extra rows fetched to make up for excluded ones
        (None: as many as are excluded), so fewer than ``k`` can come back."""

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int:
        """Bytes the index holds (vectors and any graph)."""


def _prepare(rows: Rows, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows as int64 and vectors as C-contiguous float32, the last of repeated rows winning."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), -1)
    if vectors.shape[1] != dim:
        raise ValueError(f"vector dimension {vectors.shape[1]} != index dimension {dim}")
    if rows.size and rows.min() < 0:
        raise ValueError("rows must be >= 0")
    # np.unique keeps the first occurrence: applied to the reversed rows, the last one wins,
    # as it would with one upsert per row
    _, last = np.unique(rows[::-1], return_index=True)
    keep = np.sort(len(rows) - 1 - last)
    return rows[keep], vectors[keep]


class ExactIndex:
    """Exact inner-product search by a full numpy pass: the reference implementation.

    Parameters
    ----------
    dim
        Vector width.
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._present = np.zeros(0, dtype=bool)
        self._count = 0

    def upsert(self, rows: Rows, vectors: np.ndarray) -> None:
        rows, vectors = _prepare(rows, vectors, self.dim)
        if not rows.size:
            return
        n = int(rows.max()) + 1
        self._vectors = grow(self._vectors, n)
        self._present = grow(self._present, n, fill=False)
        self._count += int(np.count_nonzero(~self._present[rows]))
        self._vectors[rows] = vectors
        self._present[rows] = True

    def remove(self, rows: Rows) -> None:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rows = np.unique(rows[(rows >= 0) & (rows < self._present.shape[0])])
        self._count -= int(np.count_nonzero(self._present[rows]))
        self._present[rows] = False

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[int] | None = None,
        widen: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        del widen  # a full pass skips the excluded rows at no extra cost
        n = self._present.shape[0]
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self._vectors[:n] @ np.asarray(query, dtype=np.float32)
        excluded = None if exclude is None else np.fromiter(exclude, dtype=np.int64)
        if excluded is not None:
            excluded = excluded[(excluded >= 0) & (excluded < n)]
        rows = top_k(scores, k, exclude=excluded, valid=self._present)
        return rows, scores[rows]

    def __len__(self) -> int:
        return self._count

    def memory_bytes(self) -> int:
        return int(self._vectors.nbytes + self._present.nbytes)


class HNSWIndex:
    """Approximate inner-product search on a usearch HNSW graph, keyed by row.

    Parameters
    ----------
    dim
        Vector width.
    dtype
        How usearch stores vectors: ``"f32"`` (exact scores), ``"f16"`` (half the memory, the
        recall measured in docs/retrieval.md) or ``"i8"`` (a quarter: each component scaled by
        127, so for unit vectors only, with ``metric="cos"``).
    metric
        ``"ip"`` (inner product: any vectors, the MF index's ``[q_i, b_i]``) or ``"cos"``
        (the same ranking for unit vectors; what ``"i8"`` needs for scores on the cosine scale).
    connectivity
        Graph degree ``M``: more is higher recall, more memory and slower inserts.
    expansion_add, expansion_search
        Candidate-list widths while inserting and searching (``efConstruction``, ``ef``); a
        search uses at least ``k`` whatever ``expansion_search`` says.
    threads
        Threads per call (1: the caller's, which is what the event loop wants).

    Notes
    -----
    usearch draws node levels from its own generator, which takes no seed: two builds of the
    same vectors give the same rows up to recall, not necessarily the same near-ties.
    """

    def __init__(
        self,
        dim: int,
        *,
        dtype: str = "f32",
        metric: str = "ip",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 256,
        threads: int = 1,
    ) -> None:
        self.dim = int(dim)
        if metric not in ("ip", "cos"):
            raise ValueError(f"metric must be 'ip' or 'cos', got {metric!r}")
        if dtype == "i8" and metric != "cos":
            # usearch's i8 inner products come back in its integer units, not cosines
            raise ValueError("dtype 'i8' needs metric 'cos' (unit vectors)")
        self.dtype = dtype
        self.metric = metric
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self.threads = threads
        self._index = self._new()

    def _new(self) -> Any:
        # imported here: `import recstream` stays cheap, and the exact path needs no usearch
        from usearch.index import Index

        return Index(
            ndim=self.dim,
            metric=self.metric,
            dtype=self.dtype,
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def upsert(self, rows: Rows, vectors: np.ndarray) -> None:
        rows, vectors = _prepare(rows, vectors, self.dim)
        if not rows.size:
            return
        keys = rows.astype(np.uint64)
        # a key holds one vector (multi=False): replacing is remove + add; usearch reuses the
        # freed slot, so updates do not grow the index
        stored = np.asarray(self._index.contains(keys), dtype=bool).reshape(-1)
        if stored.any():
            self._index.remove(keys[stored])
        self._index.add(keys, vectors, threads=self.threads)

    def remove(self, rows: Rows) -> None:
        keys = np.asarray(rows, dtype=np.int64).reshape(-1)
        keys = np.unique(keys[keys >= 0]).astype(np.uint64)
        if keys.size:
            self._index.remove(keys)

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: Iterable[int] | None = None,
        widen: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        excluded = set() if exclude is None else set(exclude)
        # a graph search costs about its width: a user with thousands of excluded items would
        # make every list of theirs search thousands of rows deeper, unless bounded by `widen`
        extra = len(excluded) if widen is None else min(len(excluded), max(widen, 0))
        count = min(k + extra, len(self._index))
        if count <= 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # a graph search keeps `expansion` candidates: at least `count`, else it returns fewer
        self._index.expansion_search = max(self.expansion_search, count)
        found = self._index.search(np.asarray(query, dtype=np.float32), count, threads=self.threads)
        rows = np.asarray(found.keys, dtype=np.int64)
        scores = (1.0 - np.asarray(found.distances, dtype=np.float32)).astype(np.float32)
        if excluded:
            keep = ~isin_rows(rows, np.fromiter(excluded, dtype=np.int64))
            rows, scores = rows[keep], scores[keep]
        # best first, ties by row, as ExactIndex orders them
        order = np.lexsort((rows, -scores))[:k]
        return rows[order], scores[order]

    def __len__(self) -> int:
        return len(self._index)

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    # A graph to a file and back without a copy in memory (a 10M-item graph is ~7.6 GB, and
    # pickling goes through bytes): usearch's own file, and this wrapper's settings beside it,
    # since usearch's file keeps neither the expansion widths nor anything of ours.
    def save(self, path: str | Path) -> None:
        """Write the graph to ``path`` (usearch's format) and the settings to ``path.json``.

        >>> import tempfile
        >>> index = HNSWIndex(dim=2, expansion_search=64)
        >>> index.upsert([4, 7], np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> path = Path(tempfile.mkdtemp()) / "content.usearch"
        >>> index.save(path)
        >>> again = HNSWIndex.load(path)
        >>> len(again), again.expansion_search, again.search(np.array([0.0, 1.0]), 1)[0].tolist()
        (2, 64, [7])
        """
        path = Path(path)
        self._index.save(str(path))
        _settings_path(path).write_text(json.dumps(self._settings()))

    @classmethod
    def load(cls, path: str | Path) -> HNSWIndex:
        """An index written by :meth:`save`."""
        path = Path(path)
        index = cls.__new__(cls)
        index.__dict__.update(json.loads(_settings_path(path).read_text()))
        index._restore(str(path))
        if index._index is None or index._index.ndim != index.dim:
            raise ValueError(f"{path}: not a {index.dim}-d usearch index")
        return index

    def _settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_index"}

    def _restore(self, source: str | bytearray) -> None:
        """The graph from a file or usearch's bytes, with this index's widths (usearch keeps
        neither: a restored graph would insert with its default ``expansion_add``)."""
        from usearch.index import Index

        self._index = Index.restore(source)
        if self._index is not None:
            self._index.expansion_add = self.expansion_add
            self._index.expansion_search = self.expansion_search

    # pickling (Recommender.save pickles its models): the graph travels as usearch's own bytes
    def __getstate__(self) -> dict[str, Any]:
        return {**self._settings(), "graph": bytes(self._index.save())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        graph = state.pop("graph")
        state.setdefault("metric", "ip")  # pickled before the metric was a parameter
        self.__dict__.update(state)
        self._restore(bytearray(graph))


def _settings_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def make_index(kind: str, dim: int, **options: Any) -> VectorIndex:
    """``"exact"`` (:class:`ExactIndex`) or ``"hnsw"`` (:class:`HNSWIndex` with ``options``)."""
    if kind == "exact":
        return ExactIndex(dim)
    if kind == "hnsw":
        return HNSWIndex(dim, **options)
    raise ValueError(f"index kind must be 'exact' or 'hnsw', got {kind!r}")
