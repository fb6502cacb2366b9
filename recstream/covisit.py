"""Item co-visitation: items that the same users touch close together in time.

Learning: when a user touches item ``j``, every item ``i`` among the user's previous ``window``
counted events gets ``c(i, j) += w(j) * w(i)`` (symmetric), ``w`` being event-type weights, and
``n(j) += w(j)``. Pairs further apart than ``window`` events are never counted, so the matrix
follows what is bought *together* rather than what is merely popular with the same people.

Similarity is cosine-normalised, ``c(i, j) / sqrt(n(i) n(j))``, so a blockbuster does not
co-occur "most" with everything. A user's score for a candidate ``j`` is the sum of
``sim(i, j)`` over the user's last ``window`` items ``i``, each weighted by its event type and by
``recency ** age`` (age 0 = the latest item): what the user just did matters most.

With ``types=("purchase",)``, unit weights and ``recency=1`` this is the classic item-kNN on
purchase co-occurrence baseline (last 20 purchases, cosine).

Storage is one sparse row per item (numpy arrays of neighbour rows and values, grown in place),
so scoring a user is ``window`` vectorised scatter-adds, never a loop over the catalogue.

>>> from recstream.events import Event
>>> cv = CoVisitation(window=5, types=("purchase",), weights={"purchase": 1.0}, recency=1.0)
>>> stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
>>> for n, (u, i) in enumerate(stream):
...     cv.learn(Event(f"e{n}", u, i, "purchase", float(n)))
>>> round(cv.similarity("a", "b"), 3), round(cv.similarity("a", "c"), 3)
(0.816, 0.577)
>>> [(r.item_id, r.reason) for r in cv.recommend("u1", k=2)]
[('c', 'viewed together with a')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from recstream.deltas import combine_covisit
from recstream.events import Event, ScoredItem
from recstream.index import ItemIndex, grow
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["CoVisitation", "SparseRows"]


class SparseRows:
    """A growable sparse square matrix: per row, numpy arrays of columns and values.

    ``add(i, j, w)`` is O(1) amortised (a dict finds the slot); ``row(i)`` returns array views
    ready for a vectorised scatter-add.
    """

    def __init__(self) -> None:
        self._pos: list[dict[int, int]] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._size: list[int] = []
        self._top: dict[int, tuple[np.ndarray, int]] = {}  # row -> (positions, size when cached)

    def __len__(self) -> int:
        return len(self._pos)

    def _ensure(self, n: int) -> None:
        while len(self._pos) < n:
            self._pos.append({})
            self._cols.append(np.zeros(4, dtype=np.int32))
            self._vals.append(np.zeros(4, dtype=np.float32))
            self._size.append(0)

    def add(self, i: int, j: int, w: float) -> None:
        self._ensure(max(i, j) + 1)
        pos = self._pos[i]
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
        else:
            self._vals[i][p] += w

    def add_symmetric(self, i: int, others: Sequence[int], weights: Sequence[float]) -> None:
        """``add(i, j, w)`` and ``add(j, i, w)`` for each ``(j, w)``: the per-event hot path."""
        if not others:
            return
        self._ensure(max(i, *others) + 1)
        pos_i, size, cols, vals = self._pos[i], self._size, self._cols, self._vals
        for j, w in zip(others, weights, strict=True):
            for a, b, pos in ((i, j, pos_i), (j, i, self._pos[j])):
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
                else:
                    vals[a][p] += w

    def add_pairs(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """``add(i, j, x)`` and ``add(j, i, x)`` for each ``(i, j, x)`` of the three arrays.

        For merging another replica's counts; repeated pairs are summed first.
        """
        if not len(a):
            return
        n = int(max(a.max(), b.max())) + 1
        self._ensure(n)
        # one entry per (row, col), sorted by row: repeated pairs are summed first
        keys = np.concatenate([a, b]).astype(np.int64) * n + np.concatenate([b, a])
        keys, inverse = np.unique(keys, return_inverse=True)
        weights = np.bincount(inverse, np.concatenate([w, w]), minlength=keys.size)
        rows, cols = keys // n, keys % n
        pos_rows, size, cols_rows, vals_rows = self._pos, self._size, self._cols, self._vals
        for r, c, x in zip(rows.tolist(), cols.tolist(), weights.tolist(), strict=True):
            pos = pos_rows[r]
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
            else:
                vals_rows[r][p] += x

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i >= len(self._pos):
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        n = self._size[i]
        return self._cols[i][:n], self._vals[i][:n]

    def top(self, i: int, m: int, col_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` entries of row ``i`` with the largest ``value * col_weight[col]``.

        The selection is cached as *positions* in the row, which never move (rows only grow),
        so the returned values are always current; it is refreshed when the row has grown by
        more than 10%. A popular item's row is thousands of entries long, and selecting once
        per ~10% growth instead of scanning it on every request is what keeps scoring cheap.
        """
        n = self._size[i] if i < len(self._size) else 0
        if n <= m:
            return self.row(i)
        cached = self._top.get(i)
        if cached is None or n > 1.1 * cached[1] + 8:
            cols, vals = self._cols[i][:n], self._vals[i][:n]
            positions = np.argpartition(-(vals * col_weight[cols]), m)[:m]
            cached = self._top[i] = (positions, n)
        positions = cached[0]
        return self._cols[i][positions], self._vals[i][positions]

    def get(self, i: int, j: int) -> float:
        if i >= len(self._pos):
            return 0.0
        p = self._pos[i].get(j)
        return 0.0 if p is None else float(self._vals[i][p])

    @property
    def nnz(self) -> int:
        return sum(self._size)


class CoVisitation(StreamModel):
    """Recency-weighted item co-visitation (item-kNN) recommender; see the module docstring.

    Parameters
    ----------
    window
        How many of the user's previous counted events pair with a new one, and how many of the
        user's latest items score candidates.
    types
        Event types that count (``None``: all types in ``weights``).
    weights
        Event-type weights.
    recency
        Weight multiplier per step back in the user's history when scoring (1 = no recency).
    tie_break
        Order equal scores by the items' event counts (all types), i.e. fall back to popularity.
    max_neighbors
        Score with only each history item's ``max_neighbors`` most similar items (``None``: all),
        the classic item-kNN neighbourhood size; bounds the cost of a request.
    exclude, index, users
        See :class:`recstream.popularity.Popularity`.
    """

    reason_text = "viewed together with {}"
    # Item-side changes since the last export_delta(); None: not tracking (the class default
    # also covers models pickled before deltas existed).
    _journal: dict[str, list] | None = None

    def __init__(
        self,
        window: int = 20,
        types: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        recency: float = 0.9,
        tie_break: bool = True,
        max_neighbors: int | None = None,
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        super().__init__(exclude=exclude, index=index, users=users)
        self.window = window
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self.types = tuple(self.weights) if types is None else tuple(types)
        self.recency = recency
        self.tie_break = tie_break
        self.max_neighbors = max_neighbors
        self.pairs = SparseRows()
        self._n = np.zeros(0, dtype=np.float64)  # weighted event count per item (the norm)
        self._isq = np.zeros(0, dtype=np.float64)  # 1 / sqrt(_n), 0 where _n == 0
        self._events = np.zeros(0, dtype=np.float64)  # events of any type per item (tie-break)
        # Each user's last `window` counted events as (row, weight): kept here rather than in the
        # shared UserStore because it only holds the counted types.
        self._history: dict[str, deque] = {}

    def forget_user(self, user_id: str) -> bool:
        """Drop the user's history (the item-item counts it fed are anonymous aggregates)."""
        return self._history.pop(user_id, None) is not None

    def update(self, user_id: str, row: int, event_type: str) -> None:
        """Count one event (item at ``row``); no user-store bookkeeping (used by the hybrid)."""
        self._events = grow(self._events, row + 1)
        self._events[row] += 1
        journal = self._journal
        if journal is not None:
            journal["events"].append(row)
        if event_type not in self.types:
            return
        w = self.weights.get(event_type, 0.0)
        if w == 0.0:
            return
        history = self._history.get(user_id)
        if history is None:
            history = self._history[user_id] = deque(maxlen=self.window)
        others = [prev for prev, _ in history if prev != row]
        pair_weights = [w * wp for prev, wp in history if prev != row]
        self.pairs.add_symmetric(row, others, pair_weights)
        if journal is not None:
            journal["pairs"].append((row, others, pair_weights, w))
        self._n = grow(self._n, row + 1)
        self._isq = grow(self._isq, row + 1)
        self._n[row] += w
        self._isq[row] = 1.0 / np.sqrt(self._n[row])
        history.append((row, w))

    def learn(self, event: Event) -> None:
        row, _ = self._observe(event)
        self.update(event.user_id, row, event.type)

    # -- item deltas (recstream.deltas): replicas that learn from different users -------------
    def track_deltas(self) -> None:
        """Record item-side changes from now on, for :meth:`export_delta` (idempotent)."""
        if self._journal is None:
            self._journal = {"events": [], "pairs": []}

    def export_delta(self) -> dict:
        """The item-side changes learned since the last export (or :meth:`track_deltas`), keyed
        by item id (format: :mod:`recstream.deltas`); what :meth:`merge_delta` added is not in it.
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        self._journal = {"events": [], "pairs": []}
        a: list[int] = []
        b: list[int] = []
        w: list[float] = []
        for row, others, pair_weights, _ in journal["pairs"]:
            a.extend([row] * len(others))
            b.extend(others)
            w.extend(pair_weights)
        norm_rows = [row for row, *_ in journal["pairs"]]
        parts = (journal["events"], norm_rows, a, b)
        rows = np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))
        at = {
            name: np.searchsorted(rows, np.asarray(p, dtype=np.int64))
            for name, p in zip(("events", "norm", "a", "b"), parts, strict=True)
        }
        ids = self.index.ids
        raw = {
            "items": [ids[r] for r in rows.tolist()],
            "norm": np.bincount(at["norm"], [x for *_, x in journal["pairs"]], rows.size),
            "events": np.bincount(at["events"], minlength=rows.size).astype(np.float64),
            "pair_a": at["a"],
            "pair_b": at["b"],
            "pair_w": np.asarray(w, dtype=np.float64),
        }
        return combine_covisit([raw], [1.0])  # coalesces repeated pairs

    def merge_delta(self, delta: dict) -> None:
        """Add another replica's :meth:`export_delta` (or a combination of several)."""
        items = delta["items"]
        if not items:
            return
        index = self.index
        rows = np.fromiter((index.add(i) for i in items), dtype=np.int64, count=len(items))
        n = len(index)
        self._events = grow(self._events, n)
        self._n = grow(self._n, n)
        self._isq = grow(self._isq, n)
        self._events[rows] += delta["events"]
        norm = np.asarray(delta["norm"], dtype=np.float64)
        self._n[rows] += norm
        changed = rows[norm != 0]
        self._isq[changed] = 1.0 / np.sqrt(self._n[changed])  # as update() computes it
        pair_a = rows[np.asarray(delta["pair_a"], dtype=np.int64)]
        pair_b = rows[np.asarray(delta["pair_b"], dtype=np.int64)]
        self.pairs.add_pairs(pair_a, pair_b, np.asarray(delta["pair_w"], dtype=np.float64))

    def similarity(self, a: str, b: str) -> float:
        """Cosine co-visitation similarity between two item ids."""
        ra, rb = self.index.row(a), self.index.row(b)
        if ra is None or rb is None:
            return 0.0
        self._isq = grow(self._isq, len(self.index))
        return self.pairs.get(ra, rb) * float(self._isq[ra] * self._isq[rb])

    def score_from(self, history: Sequence[tuple[int, float]], n_items: int) -> np.ndarray:
        """Scores over ``n_items`` rows from ``(row, weight)`` pairs, oldest first."""
        self._isq = grow(self._isq, n_items)
        isq = self._isq[:n_items]
        cols_parts, vals_parts = [], []
        decay = 1.0
        for row, weight in reversed(history):
            if row < n_items and isq[row] > 0:
                if self.max_neighbors is None:
                    cols, vals = self.pairs.row(row)
                else:
                    cols, vals = self.pairs.top(row, self.max_neighbors, isq)
                cols_parts.append(cols)
                vals_parts.append(vals * (weight * decay * isq[row]))
            decay *= self.recency
        if cols_parts:
            # one C-level scatter-add over every (neighbour, contribution) pair
            scores = np.bincount(
                np.concatenate(cols_parts), np.concatenate(vals_parts), minlength=n_items
            )[:n_items].astype(np.float64, copy=False)  # (int64 when every part is empty)
        else:
            scores = np.zeros(n_items, dtype=np.float64)
        scores *= isq  # cosine: divide by sqrt(n(j)); items never counted stay 0
        if self.tie_break:
            # Equal scores (typically 0: nothing co-visited) are ordered by how many events the
            # item had, so a short history falls back to popular items rather than to catalogue
            # order. Nonzero cosines are >= ~1e-6 apart, far above this 1e-9 nudge.
            self._events = grow(self._events, n_items)
            events = self._events[:n_items]
            top = events.max() if n_items else 0.0
            if top > 0:
                scores = scores + 1e-9 * events / top
        return scores

    def score(self, user_id: str) -> np.ndarray:
        history = self._history.get(user_id, ())
        return self.score_from(list(history), len(self.index))

    def recommend(
        self, user_id: str, k: int = 10, *, exclude: str | None = None
    ) -> list[ScoredItem]:
        scores, rows = self._rank(user_id, k, exclude)
        history = [r for r, _ in reversed(self._history.get(user_id, ()))]
        out = []
        for r in rows:
            best = self.explain(r, history)
            reason = self.reason_text.format(best) if best else "popular with other users"
            out.append(ScoredItem(self.index.ids[r], float(scores[r]), reason))
        return out

    def explain(self, row: int, history_rows: Sequence[int]) -> str | None:
        """The item of ``history_rows`` that co-occurs most with ``row`` (for the reason text)."""
        best, best_value = None, 0.0
        pos = self.pairs._pos
        if row >= len(pos):
            return None
        # c(h, row) == c(row, h): one dict holds every co-visit count of the candidate
        counts, vals = pos[row], self.pairs._vals[row]
        for h in history_rows:
            p = counts.get(h)
            if p is not None and vals[p] > best_value:
                best, best_value = h, vals[p]
        return self.index.ids[best] if best is not None else None

    @property
    def n_pairs(self) -> int:
        return self.pairs.nnz
