"""Item deltas of the implicit MF: replicas that learn from different users share item factors.

Several workers each learn from their own users; each exports the steps it applied to item
factors and biases since its last export, keyed by item id, and adds the others' steps to its own
copy (format and merge rules: :mod:`recstream.deltas`). This mixin of
:class:`~recstream.mf.ImplicitMF` holds that bookkeeping apart from the learning.
"""

from __future__ import annotations

import numpy as np
from river import stats

from recstream.index import ItemIndex

__all__ = ["ItemDeltas"]


class ItemDeltas:
    """Mixin: :meth:`track_deltas`, :meth:`export_delta`, :meth:`merge_delta`.

    The host provides ``index``, ``_Q``, ``_bi``, ``global_mean``, ``bias``,
    ``_river``, ``_ensure_items()``, ``_sync_rows(rows)`` and ``_river_merge(items, rows)``.
    """

    # Item-side tracking for export_delta() (None: not tracking; class defaults also cover
    # models pickled before deltas existed): rows stepped since the last export, the item
    # factors and biases as of then (plus what was merged since), global-mean count and sum.
    _dirty: set[int] | None = None
    _Q_base: np.ndarray | None = None
    _bi_base: np.ndarray | None = None
    _mean_base: tuple[float, float] = (0.0, 0.0)
    index: ItemIndex
    global_mean: stats.Mean
    bias: bool
    _Q: np.ndarray
    _Q32: np.ndarray
    _bi: np.ndarray
    _river: object | None
    # and the methods _ensure_items(), _sync_rows(rows), _river_merge(items, rows)

    def track_deltas(self) -> None:
        """Record item-side steps from now on, for :meth:`export_delta` (idempotent)."""
        if self._dirty is None:
            self._dirty = set()
            self._Q_base, self._bi_base = self._Q.copy(), self._bi.copy()
            n = float(self.global_mean.n)
            self._mean_base = (n, n * self.global_mean.get())

    def export_delta(self) -> dict:
        """Per item id, the sum of the steps applied to its factors and bias since the last
        export (current value minus the value then; merged steps excluded), and the count and
        sum of the targets behind the global mean (format: :mod:`recstream.deltas`)."""
        if self._dirty is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        rows = np.array(sorted(self._dirty), dtype=np.int64)
        self._dirty = set()
        factors = self._Q[rows] - self._Q_base[rows]
        biases = self._bi[rows] - self._bi_base[rows]
        self._Q_base[rows] = self._Q[rows]
        self._bi_base[rows] = self._bi[rows]
        n = float(self.global_mean.n)
        total = n * self.global_mean.get()
        mean_n, mean_sum = n - self._mean_base[0], total - self._mean_base[1]
        self._mean_base = (n, total)
        ids = self.index.ids
        return {
            "items": [ids[r] for r in rows.tolist()],
            "factors": factors,
            "biases": biases,
            "mean_n": mean_n,
            "mean_sum": mean_sum,
        }

    def merge_delta(self, delta: dict) -> None:
        """Add another replica's steps (:meth:`export_delta`, or several combined) to the item
        factors, biases and global mean; they are not exported again."""
        items = delta["items"]
        index = self.index
        rows = np.fromiter((index.add(i) for i in items), dtype=np.int64, count=len(items))
        if len(rows):
            self._ensure_items()  # an item first seen here starts from its initial value
            factors = np.asarray(delta["factors"], dtype=np.float64)
            biases = np.asarray(delta["biases"], dtype=np.float64)
            self._Q[rows] += factors
            self._bi[rows] += biases
            if self._Q_base is not None:
                self._Q_base[rows] += factors
                self._bi_base[rows] += biases
            self._sync_rows(rows)
            if self._river is not None:  # River's own dicts are the reference engine's truth
                self._river_merge(items, rows.tolist())
        mean_n, mean_sum = float(delta["mean_n"]), float(delta["mean_sum"])
        if mean_n > 0:
            river = self._river if self._river is not None and self.bias else None
            mean = river.global_mean if river is not None else self.global_mean
            mean.update(mean_sum / mean_n, w=mean_n)  # River's weighted update: a merge
            self.global_mean = mean
            self._mean_base = (self._mean_base[0] + mean_n, self._mean_base[1] + mean_sum)
