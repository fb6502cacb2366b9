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
``max_stored`` bounds each row (:mod:`recstream.sparse_rows`): without it a long-running worker's
rows grow towards the whole catalogue. Item deltas carry the increments, not the stored rows, so
they are the same with or without the cap.

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
from recstream.index import ItemIndex, grow, unique_rows
from recstream.sparse_rows import SparseRows
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["CoVisitation", "SparseRows"]


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
    max_stored
        Store at most ~``2 * max_stored`` neighbours per item, keeping the largest counts
        (:class:`~recstream.sparse_rows.SparseRows`; 0: all); bounds memory.
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
        max_stored: int = 0,
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
        self.pairs = SparseRows(max_stored)
        self._n = np.zeros(0, dtype=np.float64)  # weighted event count per item (the norm)
        self._isq = np.zeros(0, dtype=np.float64)  # 1 / sqrt(_n), 0 where _n == 0
        self._events = np.zeros(0, dtype=np.float64)  # events of any type per item (tie-break)
        # Each user's last `window` counted events as (row, weight): kept here rather than in the
        # shared UserStore because it only holds the counted types.
        self._history: dict[str, deque] = {}

    def forget_user(self, user_id: str) -> bool:
        """Drop the user's history (the item-item counts it fed are anonymous aggregates)."""
        return self._history.pop(user_id, None) is not None

    def export_user(self, user_id: str) -> list[tuple[str, float]] | None:
        """The user's counted window as ``(item_id, weight)``, oldest first; None if unknown."""
        history = self._history.get(user_id)
        if history is None:
            return None
        ids = self.index.ids
        return [(ids[row], float(w)) for row, w in history]

    def import_user(self, user_id: str, history: Sequence[tuple[str, float]]) -> None:
        """Replace the user's window with :meth:`export_user`'s list (unknown items are added,
        as :meth:`learn` adds them)."""
        add = self.index.add
        self._history[user_id] = deque(
            ((add(item_id), float(w)) for item_id, w in history), maxlen=self.window
        )

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
        rows = unique_rows(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))
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

    def neighbourhood(self, history: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``: :meth:`score_from`'s nonzero part, sorted by row, without a
        catalogue-sized array: the union of the history items' stored neighbours (at most
        ``window x 2 max_stored`` rows). No tie break (ties are what the other signals settle).
        """
        n_isq = self._isq.shape[0]
        cols_parts, vals_parts = [], []
        decay = 1.0
        for row, weight in reversed(history):
            if row < n_isq and self._isq[row] > 0:
                if self.max_neighbors is None:
                    cols, vals = self.pairs.row(row)
                else:
                    cols, vals = self.pairs.top(row, self.max_neighbors, self._isq)
                cols_parts.append(cols)
                vals_parts.append(vals * (weight * decay * self._isq[row]))
            decay *= self.recency
        if not cols_parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rows, inverse = np.unique(np.concatenate(cols_parts), return_inverse=True)
        scores = np.bincount(inverse, np.concatenate(vals_parts), minlength=rows.size)
        inside = rows < n_isq
        scores = scores * np.where(inside, self._isq[np.where(inside, rows, 0)], 0.0)
        keep = scores != 0
        return rows[keep].astype(np.int64), scores[keep]

    def score_at(self, history: Sequence[tuple[int, float]], rows: np.ndarray) -> np.ndarray:
        """:meth:`score_from` at ``rows`` only (without its tie break), from
        :meth:`neighbourhood`: the cost follows the history's neighbours, not the catalogue.

        >>> cv = CoVisitation()
        >>> for n, (u, i) in enumerate([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")]):
        ...     cv.learn(Event(str(n), u, i, "purchase", float(n)))
        >>> hist = cv.history("u2")
        >>> full = cv.score_from(hist, len(cv.index))
        >>> rows = np.array([2, 1])
        >>> bool(np.allclose(cv.score_at(hist, rows), full[rows]))
        True
        """
        rows = np.asarray(rows, dtype=np.int64)
        support, scores = self.neighbourhood(history)
        if not support.size or not rows.size:
            return np.zeros(rows.size)
        at = np.minimum(np.searchsorted(support, rows), support.size - 1)
        return np.where(support[at] == rows, scores[at], 0.0)

    def history(self, user_id: str) -> list[tuple[int, float]]:
        """The user's counted history, oldest first: ``(row, weight)`` of their last
        ``window`` events of the counted types (empty for an unknown user)."""
        return list(self._history.get(user_id, ()))

    def user_ids(self) -> list[str]:
        """The users with a history here."""
        return list(self._history)

    def item_events(self, n_items: int) -> np.ndarray:
        """Events of any type per item row, for the first ``n_items`` rows (a view: read only)."""
        self._events = grow(self._events, n_items)
        return self._events[:n_items]

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
        get = self.pairs.get
        # Read c(h, row) in h's row, the one that scored the candidate: with max_stored, rows
        # are pruned apart and row ``row`` may no longer hold h.
        for h in history_rows:
            value = get(h, row)
            if value > best_value:
                best, best_value = h, value
        return self.index.ids[best] if best is not None else None

    @property
    def n_pairs(self) -> int:
        return self.pairs.nnz
