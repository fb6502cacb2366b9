"""Item -> next-item transitions: what users touch next after the item they just touched.

Learning: when a user touches item ``j`` and the user's previous counted item is ``p != j``,
``T(p, j) += w(p) w(j)`` (``w``: event-type weights), and every count decays exponentially on
the event clock: one made ``a`` events ago weighs ``2 ** (-a / half_life)``, so the model
follows what people do next *now*. Unlike co-visitation (symmetric, over a window of 20) it is
directed and first-order: the order of the stream is the signal. A repeated touch of the latest
item (the view, click, purchase of a shop funnel) is no transition; its stronger type raises the
count of the transition that led to it to the stronger weight.

Scoring: from the user's last ``n_last`` distinct counted items ``p_0`` (the latest), ``p_1``...

    score(j) = sum_k recency**k w(p_k) T(p_k, j) / out(p_k) / in(j) ** beta

``T(p, j) / out(p)`` is the (decayed) share of ``p``'s next steps that went to ``j``;
``beta`` damps destinations that everything leads to (0: the plain ``P(j | p)``).

Decay is O(1) per event: counts are stored inflated by ``2 ** (t / half_life)`` relative to a
reference clock, as :class:`recstream.popularity.Popularity` stores them, and the whole matrix
is rescaled once per 60 half-lives. Memory: each item row keeps ~``2 * max_stored`` successors
(:class:`~recstream.sparse_rows.SparseRows`, largest counts kept); each user the last
``n_last`` items. Per-user state is portable (:meth:`Transitions.export_user`), item-side
changes travel as deltas (:meth:`Transitions.export_delta`, :mod:`recstream.deltas`).

>>> from recstream.events import Event
>>> tr = Transitions(half_life=None, weights={"purchase": 1.0}, beta=0.0)
>>> stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
>>> for n, (u, i) in enumerate(stream):
...     tr.learn(Event(f"e{n}", u, i, "purchase", float(n)))
>>> round(tr.probability("a", "b"), 3), tr.probability("b", "a")  # directed
(0.667, 0.0)
>>> tr.learn(Event("e6", "u4", "a", "purchase", 6.0))
>>> [r.item_id for r in tr.recommend("u4", k=2)]  # after a: b (twice), then c (once)
['b', 'c']
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from recstream.events import Event
from recstream.index import ItemIndex, grow
from recstream.sparse_rows import SparseRows
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["Transitions"]

# 2**60 is far from float32's limit (2**128) yet keeps precision: rescale past this exponent.
_MAX_EXPONENT = 60.0


class Transitions(StreamModel):
    """Decayed item -> next-item transition counts (module docstring).

    Parameters
    ----------
    half_life
        Half-life of a count in events of the clock (``None``: no decay).
    types
        Event types that count (``None``: all types in ``weights``).
    weights
        Event-type weights.
    n_last
        How many of the user's last distinct counted items score candidates.
    recency
        Weight multiplier per step back among those items.
    beta
        Divide a destination's score by its decayed in-count to this power (0: ``P(j | p)``).
    max_stored
        Keep at most ~``2 * max_stored`` successors per item, the largest counts (0: all).
    exclude, index, users
        See :class:`recstream.popularity.Popularity`.
    """

    reason_text = "often picked next"
    # (from row, to row, weight, clock) of every count since the last export_delta(); None:
    # not tracking
    _journal: list[tuple[int, int, float, float]] | None = None

    def __init__(
        self,
        half_life: float | None = 5000.0,
        types: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        n_last: int = 3,
        recency: float = 0.5,
        beta: float = 0.5,
        max_stored: int = 100,
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        super().__init__(exclude=exclude, index=index, users=users)
        if half_life is not None and half_life <= 0:
            raise ValueError(f"half_life must be > 0 or None, got {half_life}")
        if n_last < 1:
            raise ValueError(f"n_last must be >= 1, got {n_last}")
        self.half_life = half_life
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self.types = tuple(self.weights) if types is None else tuple(types)
        self.n_last = n_last
        self.recency = recency
        self.beta = beta
        self.pairs = SparseRows(max_stored)
        self._out = np.zeros(0, dtype=np.float64)  # inflated row sums of T
        self._in = np.zeros(0, dtype=np.float64)  # inflated column sums of T
        self._t = 0.0  # the latest clock value seen
        self._t_ref: float | None = None  # clock value at which the inflation factor is 1
        # Each user's last distinct counted items as (row, weight), oldest first.
        self._last: dict[str, deque] = {}

    @property
    def _keep(self) -> int:
        # Each user's deque keeps one item more than n_last when n_last is 1: a stronger type of
        # the latest item upgrades the transition that led to it, whose source must still be
        # known (scoring reads only the last n_last). A property: nothing new to pickle.
        return max(self.n_last, 2)

    # -- learning ----------------------------------------------------------------------------
    def learn(self, event: Event) -> None:
        row, _ = self._observe(event)
        self.update(event.user_id, row, event.type)

    def update(self, user_id: str, row: int, event_type: str, clock: float | None = None) -> None:
        """Count one event (item at ``row``) at ``clock`` (default: this model's event count);
        no user-store bookkeeping (the hybrid calls this with its own clock)."""
        if event_type not in self.types:
            return
        w = self.weights.get(event_type, 0.0)
        if w == 0.0:
            return
        self._t = max(self._t, float(self.n_events if clock is None else clock))
        last = self._last.get(user_id)
        if last is None:
            last = self._last[user_id] = deque(maxlen=self._keep)
        step = _push(last, row, w)
        if step is not None:
            self._count(step[0], row, step[1])

    def _exponent(self) -> float:
        """The clock's exponent in the inflated frame, rescaling first past the bound."""
        if self.half_life is None:
            return 0.0
        if self._t_ref is None:
            self._t_ref = self._t
        exponent = (self._t - self._t_ref) / self.half_life
        if exponent > _MAX_EXPONENT:
            factor = 2.0 ** (-exponent)
            self.pairs.scale(factor)
            self._out *= factor
            self._in *= factor
            self._t_ref, exponent = self._t, 0.0
        return exponent

    def _count(self, prev: int, row: int, w: float) -> None:
        if self._journal is not None:
            self._journal.append((prev, row, w, self._t))
        x = w * 2.0 ** self._exponent()
        # _add for one pair, without its three 1-element arrays and two ufunc.at calls (per
        # event): the same additions
        n = len(self.index)
        self._out = grow(self._out, n)
        self._in = grow(self._in, n)
        self._out[prev] += x
        self._in[row] += x
        self.pairs.add(prev, row, x)

    def _add(self, a: np.ndarray, b: np.ndarray, v: np.ndarray) -> None:
        """Add inflated values ``v`` to ``T(a, b)`` (and to the row and column sums)."""
        n = len(self.index)
        self._out = grow(self._out, n)
        self._in = grow(self._in, n)
        np.add.at(self._out, a, v)
        np.add.at(self._in, b, v)
        for i, j, x in zip(a.tolist(), b.tolist(), v.tolist(), strict=True):
            self.pairs.add(i, j, x)

    # -- scoring -----------------------------------------------------------------------------
    def history(self, user_id: str) -> list[tuple[int, float]]:
        """The user's last ``n_last`` distinct counted items as ``(row, weight)``, oldest
        first."""
        return list(self._last.get(user_id, ()))[-self.n_last :]

    def probability(self, a: str, b: str) -> float:
        """The decayed share of ``a``'s next steps that went to ``b``."""
        ra, rb = self.index.row(a), self.index.row(b)
        if ra is None or rb is None or ra >= self._out.shape[0] or self._out[ra] <= 0:
            return 0.0
        return self.pairs.get(ra, rb) / float(self._out[ra])

    def score(self, user_id: str, rows: np.ndarray | None = None) -> np.ndarray:
        """:meth:`score_from` the user's last items."""
        return self.score_from(self.history(user_id), rows)

    def score_support(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, support)``: :meth:`score` over every index row (a new array, the
        caller's), and the sorted rows outside which it is 0: the few hundred successors of the
        user's last items, for a caller that scales it without a catalogue-sized pass."""
        parts = self._parts(self.history(user_id))
        n = len(self.index)
        if parts is None:
            return np.zeros(n), np.zeros(0, dtype=np.int64)
        return self._dense(*parts, n)

    def score_from(
        self, history: Sequence[tuple[int, float]], rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores from ``(row, weight)`` items (oldest first): over every index row when
        ``rows`` is None, else aligned with ``rows``. The cost follows the history items'
        stored successors (at most ``n_last x 2 max_stored``), plus ``len(rows)`` or the
        catalogue for the result."""
        n = len(self.index)
        parts = self._parts(history)
        size = n if rows is None else len(rows)
        if parts is None:
            return np.zeros(size)
        cols, vals = parts
        if rows is None:
            return self._dense(cols, vals, n)[0]
        at = np.asarray(rows, dtype=np.int64)
        support, inverse = np.unique(cols, return_inverse=True)
        sums = np.bincount(inverse, vals, minlength=support.size)
        pos = np.minimum(np.searchsorted(support, at), support.size - 1)
        return self._damp(np.where(support[pos] == at, sums[pos], 0.0), at)

    def _parts(self, history: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray] | None:
        """``(cols, vals)``: every stored successor of the last ``n_last`` history items with
        its contribution, newest item first; None when none has any."""
        n_out = self._out.shape[0]
        cols_parts, vals_parts = [], []
        decay = 1.0
        for row, weight in reversed(history[-self.n_last :]):
            if row < n_out and self._out[row] > 0:
                cols, vals = self.pairs.row(row)
                cols_parts.append(cols)
                vals_parts.append(vals * (weight * decay / self._out[row]))
            decay *= self.recency
        if not cols_parts:
            return None
        return np.concatenate(cols_parts).astype(np.int64), np.concatenate(vals_parts).astype(
            np.float64
        )

    def _dense(self, cols: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores over the n rows, their support)``. The in-count damping is elementwise, so
        it is applied on the support only (0 elsewhere either way): a catalogue-sized gather
        and three catalogue-sized ``where`` passes less per list, the same values."""
        scores = np.bincount(cols, vals, minlength=n)[:n]
        support = np.flatnonzero(scores)
        scores[support] = self._damp(scores[support], support)
        return scores, support

    def _damp(self, scores: np.ndarray, at: np.ndarray) -> np.ndarray:
        """``scores`` (aligned with rows ``at``) over their in-count ** beta (0 without one)."""
        if not self.beta:
            return scores
        inside = at < self._in.shape[0]
        into = np.where(inside, self._in[np.where(inside, at, 0)], 0.0)
        # the frame's factor is common to every destination: dividing it out changes the
        # values only, never the order, but keeps scores comparable over time
        into = into * self._decay_now()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(into > 0, scores / into**self.beta, 0.0)

    def _decay_now(self) -> float:
        if self.half_life is None or self._t_ref is None:
            return 1.0
        return 2.0 ** (-(self._t - self._t_ref) / self.half_life)

    # -- portable user state -----------------------------------------------------------------
    def user_ids(self) -> list[str]:
        """The users with a last item here."""
        return list(self._last)

    def forget_user(self, user_id: str) -> bool:
        """Drop the user's last items (the counts they fed are anonymous aggregates)."""
        return self._last.pop(user_id, None) is not None

    def export_user(self, user_id: str) -> list[tuple[str, float]] | None:
        """The user's last items as ``(item_id, weight)``, oldest first (one more than
        ``n_last`` when that is 1: the source of the latest transition); None if unknown."""
        last = self._last.get(user_id)
        if last is None:
            return None
        ids = self.index.ids
        return [(ids[row], float(w)) for row, w in last]

    def last_items(self, events: Sequence[tuple[str, str]]) -> list[tuple[str, float]]:
        """The ``(item_id, weight)`` list :meth:`export_user` would give for a user whose
        events were ``(item_id, type)``, oldest first: for user data from before this model.

        >>> Transitions().last_items([("a", "view"), ("b", "view"), ("b", "purchase")])
        [('a', 0.25), ('b', 1.0)]
        """
        last: deque = deque(maxlen=self._keep)
        for item_id, type_ in events:
            w = self.weights.get(type_, 0.0) if type_ in self.types else 0.0
            if w:
                _push(last, item_id, w)
        return list(last)

    def import_user(self, user_id: str, last: Sequence[Sequence]) -> None:
        """Replace the user's last items with :meth:`export_user`'s list (unknown items are
        added, as :meth:`learn` adds them)."""
        add = self.index.add
        self._last[user_id] = deque(
            ((add(str(item_id)), float(w)) for item_id, w in last), maxlen=self._keep
        )

    # -- item deltas (recstream.deltas): replicas that learn from different users -------------
    def track_deltas(self) -> None:
        """Record counts from now on, for :meth:`export_delta` (idempotent)."""
        if self._journal is None:
            self._journal = []

    def export_delta(self) -> dict:
        """The counts made since the last export (or :meth:`track_deltas`): per directed pair
        of item ids the decayed sum as of this model's clock ``at`` (``pair_a`` -> ``pair_b``,
        positions in ``items``); what :meth:`merge_delta` added is not in it.

        >>> a, b = Transitions(half_life=1), Transitions(half_life=1)
        >>> a.track_deltas()
        >>> for n, i in enumerate("xyx"):
        ...     a.learn(Event(f"e{n}", "u1", i, "purchase", float(n)))
        >>> d = a.export_delta()
        >>> d["items"], d["pair_a"].tolist(), d["pair_b"].tolist(), d["pair_w"].tolist()
        (['x', 'y'], [0, 1], [1, 0], [0.5, 1.0])
        >>> b.merge_delta(d)
        >>> round(b.probability("y", "x"), 3), b.score_from([(1, 1.0)]).round(3).tolist()
        (1.0, [1.0, 0.0])
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        self._journal = []
        m = len(journal)
        a = np.fromiter((x[0] for x in journal), dtype=np.int64, count=m)
        b = np.fromiter((x[1] for x in journal), dtype=np.int64, count=m)
        w = np.fromiter((x[2] for x in journal), dtype=np.float64, count=m)
        if self.half_life is not None:
            stamps = np.fromiter((x[3] for x in journal), dtype=np.float64, count=m)
            w = w * 2.0 ** (-(self._t - stamps) / self.half_life)
        rows, at = np.unique(np.concatenate([a, b]), return_inverse=True)
        keys, inverse = np.unique(at[:m] * max(rows.size, 1) + at[m:], return_inverse=True)
        ids = self.index.ids
        return {
            "items": [ids[r] for r in rows.tolist()],
            "pair_a": keys // max(rows.size, 1),
            "pair_b": keys % max(rows.size, 1),
            "pair_w": np.bincount(inverse, w, minlength=keys.size),
            "at": self._t,
            "half_life": self.half_life,
        }

    def merge_delta(self, delta: dict) -> None:
        """Add another replica's :meth:`export_delta` (or a combination of several)."""
        if delta["half_life"] != self.half_life:
            raise ValueError(f"half-life {delta['half_life']} != this model's {self.half_life}")
        items = delta["items"]
        if not items:
            return
        index = self.index
        rows = np.fromiter((index.add(i) for i in items), dtype=np.int64, count=len(items))
        at = float(delta["at"])
        self._t = max(self._t, at)
        values = np.asarray(delta["pair_w"], dtype=np.float64)
        if self.half_life is not None:
            # into this model's frame (inflated by 2 ** ((at - t_ref) / half_life)), rescaled
            # first when the inflation would overflow, exactly as a count is
            values = values * 2.0 ** (self._exponent() - (self._t - at) / self.half_life)
        pair_a = rows[np.asarray(delta["pair_a"], dtype=np.int64)]
        pair_b = rows[np.asarray(delta["pair_b"], dtype=np.int64)]
        self._add(pair_a, pair_b, values)

    @property
    def n_pairs(self) -> int:
        return self.pairs.nnz


def _push(last: deque, key: Hashable, w: float) -> tuple[Hashable, float] | None:
    """Make ``key`` (weight ``w``) the newest of the distinct items ``last``; returns the
    transition it makes, ``(previous item, weight)``, or None."""
    if last and last[-1][0] == key:  # the same item again: a stronger type upgrades it
        w_old = last[-1][1]
        if w <= w_old:
            return None
        last[-1] = (key, w)
        # the transition that led here now counts at the stronger weight: add the difference
        return (last[-2][0], last[-2][1] * (w - w_old)) if len(last) > 1 else None
    step = (last[-1][0], last[-1][1] * w) if last else None
    for k, (other, _) in enumerate(last):  # distinct: an item touched again moves to the end
        if other == key:
            del last[k]
            break
    last.append((key, w))
    return step
