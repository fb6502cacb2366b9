"""Item categories and a user's long-term category taste: the ``category_taste`` feature.

A shop's catalogue names each item's categories (``Item.categories``: genres, departments).
Whether a user keeps to a few of them for a long time is a taste the short content profile (the
last few items) and co-visitation (items bought together) both see only through a narrow
window. :class:`ItemCategories` keeps each item row's categories as small integer ids;
:func:`category_share` is the user's category distribution over their recent events (each
event's weight split evenly across its item's categories, as
:class:`recstream.exposure.Calibration` counts a history, decayed per event like
``content_taste``), and :meth:`ItemCategories.affinity` the mean share of each candidate's
categories: a candidate in the genres the user keeps coming back to scores high.

Every operation is vectorised over rows. A two-stage list reads its candidates' rows
(``O(rows x max_per_item)``); a list over the whole catalogue multiplies a sparse item x
category matrix (scipy CSR, 27 µs at ml-latest-small's 9,742 items and 20 genres, against
370 µs for the padded gather), rebuilt in ``O(categories listed)`` at the first list after the
catalogue changed. A new item is ``O(1)`` amortised.

>>> cats = ItemCategories()
>>> for row, c in enumerate([("horror",), ("war", "comedy"), ("comedy",), ()]):
...     cats.set(row, c)
>>> share = cats.share(rows=[0, 2, 2], weights=[1.0, 1.0, 2.0])
>>> {name: round(float(share[i]), 2) for name, i in cats.ids.items()}
{'horror': 0.25, 'war': 0.0, 'comedy': 0.75}
>>> [round(float(x), 3) for x in cats.affinity(share, n_rows=4)]  # the last has no category
[0.25, 0.375, 0.75, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse

from recstream.index import grow
from recstream.state import decayed_recent

__all__ = ["ItemCategories", "category_share"]


class ItemCategories:
    """Each item row's category ids (at most ``max_per_item``, in the order the item lists
    them; -1 pads), and the vocabulary ``ids`` (name -> id)."""

    def __init__(self, max_per_item: int = 8) -> None:
        self.max_per_item = int(max_per_item)
        self.ids: dict[str, int] = {}
        self._rows = np.full((0, self.max_per_item), -1, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.int32)  # categories per row (0: none)
        self._width = 0  # the widest row so far: the columns a list reads
        self._matrix: scipy.sparse.csr_matrix | None = None  # rows x categories, 1/count each

    def set(self, row: int, categories: Sequence[str]) -> None:
        """Record ``row``'s categories (replacing what it had); duplicates count once."""
        names = list(dict.fromkeys(c for c in categories if c))[: self.max_per_item]
        ids = [self.ids.setdefault(name, len(self.ids)) for name in names]
        self._rows = grow(self._rows, row + 1, fill=-1)
        self._count = grow(self._count, row + 1)
        if self._count[row] == len(ids) and self._rows[row, : len(ids)].tolist() == ids:
            # the same categories (an item re-published with other changes): the matrix stays,
            # where a list would otherwise rebuild it over the whole catalogue
            return
        self._rows[row] = -1
        self._rows[row, : len(ids)] = ids
        self._count[row] = len(ids)
        self._width = max(self._width, len(ids))
        self._matrix = None

    def _csr(self) -> scipy.sparse.csr_matrix:
        """Every row recorded (capacity included) as a sparse matrix, each row's categories at
        1/count: rebuilt only after :meth:`set`, not when the index grows."""
        if self._matrix is None:
            count, ids = self._count, self._rows[:, : self._width]
            data = np.repeat(1.0 / np.maximum(count, 1), count)
            indptr = np.concatenate([[0], np.cumsum(count, dtype=np.int64)])
            self._matrix = scipy.sparse.csr_matrix(
                (data, ids[ids >= 0], indptr), shape=(count.shape[0], len(self.ids))
            )
        return self._matrix

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_matrix"] = None  # a cache: rebuilt at the first list
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def share(self, rows: Sequence[int], weights: Sequence[float]) -> np.ndarray:
        """The category distribution (sums to 1; zeros when nothing has a category) of events on
        ``rows`` with ``weights``: each event's weight split evenly over its item's categories.

        A few dozen events per list: a plain loop over their rows' ids (one gather) costs less
        than the numpy calls a vectorised version needs for so few."""
        acc: dict[int, float] = {}  # only the categories touched: a vocabulary may be large
        capacity = self._count.shape[0]
        inside = [(r, w) for r, w in zip(rows, weights, strict=True) if r < capacity]
        if inside:
            at = np.fromiter((r for r, _ in inside), dtype=np.int64, count=len(inside))
            for (_, w), ids, n in zip(
                inside,
                self._rows[at, : self._width].tolist(),
                self._count[at].tolist(),
                strict=True,
            ):
                if n:
                    x = w / n
                    for c in ids[:n]:
                        acc[c] = acc.get(c, 0.0) + x
        share = np.zeros(len(self.ids))
        if acc:
            share[list(acc)] = list(acc.values())
        total = share.sum()
        return share / total if total > 0 else share

    def affinity(
        self, share: np.ndarray, *, rows: np.ndarray | None = None, n_rows: int = 0
    ) -> np.ndarray:
        """The mean ``share`` of each row's categories (0 without one): rows ``0..n_rows-1``
        (``rows`` None) or ``rows``."""
        if rows is None:
            scores = np.asarray(self._csr() @ share, dtype=np.float64)
            if scores.shape[0] >= n_rows:
                return scores[:n_rows]
            return np.concatenate([scores, np.zeros(n_rows - scores.shape[0])])
        rows = np.asarray(rows, dtype=np.int64)
        inside = rows < self._count.shape[0]
        safe = np.where(inside, rows, 0)
        ids = np.where(inside[:, None], self._rows[safe, : self._width], -1)
        count = np.where(inside, self._count[safe], 0)
        padded = np.append(share, 0.0)  # id -1 (padding) reads this 0
        return padded[ids].sum(axis=1) / np.maximum(count, 1)


def category_share(
    categories: ItemCategories,
    recent: Sequence[tuple[int, str, float]],
    weights: Mapping[str, float],
    decay: float,
) -> np.ndarray:
    """The share of :meth:`ItemCategories.share` over a user's ``recent`` events ``(row, type,
    ts)``, oldest first: each weighted by its type's weight times ``decay ** age`` (age 0: the
    newest), as ``content_taste`` weighs them."""
    decayed = decayed_recent(recent, weights, decay)
    return categories.share([row for row, _ in decayed], [w for _, w in decayed])
