"""Per-candidate features for the learned ranker (:mod:`recstream.ranker`), over the catalogue.

Every feature is one numpy array over the item index rows, scaled to about [0, 1] over the
user's candidates (the ``mask``), computed with vector operations (co-visitation scatter-adds,
one matrix-vector product for content), never a Python loop over items. :func:`feature_matrix`
stacks the ones a ranker names into an ``(n_items, n_features)`` matrix.

The hybrid's five signals (:data:`BASE_FEATURES`, exactly as the fixed hybrid scales them):

* ``covisit`` co-visitation with the user's last 20 events (recency 0.9 per step), ÷ max;
* ``mf`` the implicit MF score, min-max; ``content`` BERT cosine to the user's profile, min-max;
* ``popularity`` log of the decayed counts, ÷ max; ``fresh`` ``2 ** (-age / half-life)``.

Further features (:data:`EXTRA_FEATURES`):

* ``covisit_session`` co-visitation with the items of the user's *current session* only
  (``context.session_id``, or no gap over 30 minutes: :class:`recstream.state.UserStore`), ÷ max;
* ``covisit_last`` co-visitation with the user's last counted item only (what people touch
  right after it: how recently the user touched the candidate's neighbours), ÷ max;
* ``item_events`` log of the item's event count over the whole stream (all types), ÷ max;
* ``hist_x_<signal>`` a signal times ``h = min(1, log(1 + n) / log(1 + 1000))``, ``n`` the user's
  events so far. A user-level value alone adds the same to every candidate, so it cannot change a
  ranking; crossed with a signal it lets that signal weigh more (or less) for long histories;
* ``lastbuy_x_<signal>`` a signal where the user's last event was a purchase, else 0;
* ``<signal>_x_new`` a signal times ``1 - item_events``: 1 for items nobody touched yet, 0 for
  the most touched one. It lets content and freshness weigh more for the items that have
  nothing else (cold items), without raising them for every item.

>>> from recstream.events import Event, Item
>>> from recstream.recommender import Recommender
>>> rec = Recommender()
>>> for i in "abc":
...     _ = rec.upsert_item(Item(i))
>>> for n, i in enumerate("ab"):
...     rec.learn(Event(f"e{n}", "u1", i, "purchase", float(n)))
>>> rec.learn(Event("e2", "u2", "a", "purchase", 2.0))
>>> X, _ = feature_matrix(rec, "u2", rec.index.active, ("covisit", "covisit_last", "hist_x_mf"))
>>> X.shape, X[:, 0].round(3).tolist()  # rows a, b, c: b was bought with a
((3, 3), [0.0, 1.0, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recstream.recommender import Recommender
    from recstream.state import UserState

__all__ = [
    "BASE_FEATURES",
    "DEFAULT_FEATURES",
    "EXTRA_FEATURES",
    "FeatureCache",
    "feature_matrix",
    "minmax_scale",
    "unit_scale",
]

BASE_FEATURES = ("covisit", "mf", "content", "popularity", "fresh")
_HISTORY_SCALE = math.log1p(1000.0)  # h reaches 1 at 1,000 events


# (Boolean indexing then plain reductions is ~2x faster than ``np.max(x, where=mask)``.)
def unit_scale(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale ``x`` so its maximum over ``mask`` is 1 (non-negative signals); zeros stay zero."""
    selected = x[mask]
    top = float(selected.max()) if selected.size else 0.0
    return x / top if top > 0 else np.zeros_like(x)


def minmax_scale(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Min-max scale ``x`` to [0, 1] over ``mask`` (signed signals such as MF scores)."""
    selected = x[mask]
    if not selected.size:
        return np.zeros_like(x)
    lo, hi = float(selected.min()), float(selected.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


_Extra = Callable[["Recommender", str, "UserState | None", np.ndarray, dict], np.ndarray]


def _covisit_from(rec: Recommender, history: list[tuple[int, float]], mask: np.ndarray):
    n = len(rec.index)
    if not history:
        return np.zeros(n)
    return unit_scale(rec.covisit.score_from(history, n), mask)


def _covisit_session(rec, user_id, state, mask, signals) -> np.ndarray:
    if state is None:
        return np.zeros(len(rec.index))
    cv = rec.covisit
    weights, start = cv.weights, state.session_start
    # the session's counted events, as co-visitation counts them (type weights, window)
    history = [
        (row, weights[t])
        for row, t, ts in state.recent
        if ts >= start and t in cv.types and weights.get(t, 0.0)
    ]
    return _covisit_from(rec, history[-cv.window :], mask)


def _covisit_last(rec, user_id, state, mask, signals) -> np.ndarray:
    history = rec.covisit.history(user_id)
    return _covisit_from(rec, history[-1:], mask)


def _item_events(rec, user_id, state, mask, signals) -> np.ndarray:
    if "item_events" not in signals:  # computed once per list (the *_x_new features use it)
        events = rec.covisit.item_events(len(rec.index))
        signals["item_events"] = unit_scale(np.log1p(events), mask)
    return signals["item_events"]


def _crossed(signal: str, gate: Callable[[UserState | None], float]) -> _Extra:
    def feature(rec, user_id, state, mask, signals) -> np.ndarray:
        g = gate(state)
        s = signals.get(signal)
        return np.zeros(len(rec.index)) if s is None or g == 0.0 else g * s

    return feature


def _for_new_items(signal: str) -> _Extra:
    def feature(rec, user_id, state, mask, signals) -> np.ndarray:
        s = signals.get(signal)
        if s is None:
            return np.zeros(len(rec.index))
        return s * (1.0 - _item_events(rec, user_id, state, mask, signals))

    return feature


def _history(state: UserState | None) -> float:
    return 0.0 if state is None else min(1.0, math.log1p(state.n_events) / _HISTORY_SCALE)


def _last_buy(state: UserState | None) -> float:
    return 1.0 if state is not None and state.recent and state.recent[-1][1] == "purchase" else 0.0


EXTRA_FEATURES: dict[str, _Extra] = {
    "covisit_session": _covisit_session,
    "covisit_last": _covisit_last,
    "item_events": _item_events,
    **{f"hist_x_{s}": _crossed(s, _history) for s in BASE_FEATURES},
    **{f"lastbuy_x_{s}": _crossed(s, _last_buy) for s in BASE_FEATURES},
    **{f"{s}_x_new": _for_new_items(s) for s in BASE_FEATURES},
}
# The learned ranker's default features (chosen on the first half of ml-latest-small only:
# docs/evaluation/ranker.md).
DEFAULT_FEATURES = (
    *BASE_FEATURES,
    "covisit_session",
    "item_events",
    "content_x_new",
    "fresh_x_new",
)


def feature_matrix(
    rec: Recommender, user_id: str, mask: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(X, signals)``: ``X`` the ``(n_items, len(names))`` features of every item row for
    ``user_id``, scaled over the candidates ``mask``; ``signals`` the hybrid's base signals
    (those the user has), for the reasons of a list."""
    signals = rec._signals(user_id, mask, every=True)
    memo = dict(signals)  # the extra features' shared parts (item_events) join it
    state = rec.users.get(user_id)
    n = len(rec.index)
    columns = []
    for name in names:
        if name in signals:
            columns.append(signals[name])
        elif name in EXTRA_FEATURES:
            columns.append(EXTRA_FEATURES[name](rec, user_id, state, mask, memo))
        elif name in BASE_FEATURES:  # a signal this user has none of yet (no history)
            columns.append(np.zeros(n))
        else:
            raise ValueError(f"unknown feature {name!r}")
    # stacked feature-major (contiguous copies), used through the transposed view
    return np.stack(columns).T, signals


class FeatureCache:
    """The features of the last list ranked, for the ranker's step on the event that follows.

    The evaluation (and a shop that asks for a list and then reports the click) ranks a user's
    candidates and then learns the user's event at the same model state: the step reuses those
    features instead of computing them again. The owner keys it on everything that changes them
    and clears it whenever the model changes otherwise. Never pickled (a model file does not
    carry a stale matrix).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple | None = None

    def put(self, key: tuple, value: tuple) -> None:
        self.key, self.value = key, value

    def take(self, key: tuple) -> tuple | None:
        """The value stored under ``key`` (then forgotten), or None."""
        value = self.value if self.key == key else None
        self.clear()
        return value

    def clear(self) -> None:
        self.key = self.value = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.clear()
