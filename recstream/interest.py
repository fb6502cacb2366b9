"""Attention-like interest: the user's recent items, each weighted by its relevance to a candidate.

The hybrid's content profile is one decayed mean of the user's item vectors: a user who watched
two westerns and three cartoons has a profile halfway between, near neither. Here every
candidate ``j`` attends over the user's recent items ``i`` (target attention, as in DIN):

    s_ij = cos(i, j),    a_ij = softmax_i(s_ij / temperature + log prior_i),
    interest(j) = sum_i a_ij s_ij

so a candidate close to *any* recent item scores high, with the items of the current session
and the latest ones counting most through their prior (event-type weight, ``recency ** age``,
``session_boost`` inside the current session). A large temperature gives the prior-weighted
mean cosine (the profile's view); a small one the best match among the recent items.

It is computed for all candidates at once: one ``(n, r) x (r, m)`` product in the index's
PCA projection (:meth:`recstream.index.ItemIndex.item_similarities`) and a softmax over the
``m`` recent items, never a Python loop over items (over 9,742 items, m = 10, 128 dimensions:
0.46 ms at best on the development machine, the product 0.29 ms of it).

>>> import numpy as np
>>> from recstream.index import ItemIndex
>>> index = ItemIndex(dim=2)
>>> index.set_vectors(list("abcd"), np.array([[1, 0], [0, 1], [0.9, 0.44], [0.7, 0.7]]))
>>> history = [(0, 1.0), (1, 1.0)]  # the user touched a and b
>>> attention_scores(index, history, temperature=0.05).round(2).tolist()
[1.0, 1.0, 0.9, 0.71]
>>> attention_scores(index, history, temperature=100.0).round(2).tolist()  # ~ the mean
[0.5, 0.5, 0.67, 0.71]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recstream.index import ItemIndex
from recstream.state import UserState

__all__ = ["attention_history", "attention_scores"]


def attention_history(
    state: UserState,
    weights: Mapping[str, float],
    has_vector: np.ndarray,
    *,
    n_items: int = 10,
    recency: float = 0.9,
    session_boost: float = 2.0,
) -> list[tuple[int, float]]:
    """The user's last ``n_items`` distinct items with a vector as ``(row, prior)``, newest
    first: prior = the strongest event type's weight x ``recency ** age`` (age 0: the newest
    distinct item) x ``session_boost`` for an item touched in the current session.

    >>> from collections import deque
    >>> state = UserState(recent=deque([(0, "view", 1.0), (1, "view", 2.0), (0, "purchase", 9.0)]))
    >>> state.session_start = 5.0
    >>> attention_history(state, {"view": 0.5, "purchase": 1.0}, np.array([True, True]))
    [(0, 2.0), (1, 0.45)]
    """
    best: dict[int, tuple[float, bool]] = {}  # row -> (weight, in session), newest first
    n_rows = has_vector.shape[0]
    for row, type_, ts in reversed(state.recent):
        if row >= n_rows or not has_vector[row]:
            continue
        w = weights.get(type_, 0.0)
        if w <= 0.0 and row not in best:
            continue  # a type that does not count must not take one of the n_items places
        if row in best:
            old_w, in_session = best[row]
            best[row] = (max(old_w, w), in_session)
        elif len(best) < n_items:
            best[row] = (w, ts >= state.session_start)
    out = []
    for age, (row, (w, in_session)) in enumerate(best.items()):
        prior = w * recency**age * (session_boost if in_session else 1.0)
        if prior > 0:
            out.append((row, prior))
    return out


def attention_scores(
    index: ItemIndex,
    history: Sequence[tuple[int, float]],
    rows: np.ndarray | None = None,
    *,
    temperature: float = 0.1,
) -> np.ndarray:
    """``interest(j)`` (module docstring) of every index row (``rows`` None) or of ``rows``,
    from ``history`` = ``(row, prior > 0)`` of the recent items; zeros without any."""
    n = len(index) if rows is None else len(rows)
    if not history:
        return np.zeros(n)
    query = np.fromiter((r for r, _ in history), dtype=np.int64, count=len(history))
    prior = np.fromiter((p for _, p in history), dtype=np.float64, count=len(history))
    # (m, n) float32, recent items by candidates: every reduction below runs over the m rows
    # element-wise along n, 2.4x faster than reducing each candidate's short row of m
    sims = np.ascontiguousarray(index.item_similarities(query, rows).T)
    logits = sims * np.float32(1.0 / temperature)
    logits += np.log(prior).astype(np.float32)[:, None]
    logits -= logits.max(axis=0)  # a stable softmax over the recent items
    attention = np.exp(logits, out=logits)
    out = np.einsum("ij,ij->j", attention, sims) / attention.sum(axis=0)
    return out.astype(np.float64)
