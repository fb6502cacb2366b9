"""Per-candidate features for the learned ranker (:mod:`recstream.ranker`), over the catalogue.

Every feature is one numpy array over a list's *scope*, scaled to about [0, 1] over the
user's candidates (the ``mask``), computed with vector operations (co-visitation scatter-adds,
one matrix-vector product for content), never a Python loop over items. The scope
(:class:`Scope`) is either every item index row (the exact path) or the rows a two-stage list
gathered (:mod:`recstream.retrieval`): then every array is aligned with those rows, and nothing
costs O(catalogue). :func:`feature_matrix` stacks the ones a ranker names into an
``(n_rows, n_features)`` matrix.

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

Sequence and context (issue 11, item 2; each reads a model the recommender keeps only when the
ranker names the feature):

* ``transition`` what people touch *next* after the user's last items: decayed item -> next-item
  transitions (:mod:`recstream.transitions`), ÷ max;
* ``content_attention`` each candidate attends over the user's recent items, the current
  session's counting most (:mod:`recstream.interest`): close to *any* of them scores high, where
  ``content`` compares with one decayed mean; min-max like ``content``;
* ``content_taste`` BERT cosine to the user's *long-term* taste: the event-type-weighted mean of
  the vectors of the user's recent events (``UserStore.recent_size``, 50 by default) decayed by
  ``taste_decay`` (0.9) per event, next to ``content``'s short profile (0.5 per event: the last
  few items); min-max like ``content``. A static taste (a shop's liked genres) shows in the long
  mean, a drifting one in the short profile, and the ranker weighs the two per stream;
* ``category_taste`` the user's long-term *category* taste (:mod:`recstream.categories`): the
  mean share of the candidate's catalogue categories in the categories of the user's recent
  events (decayed like ``content_taste``), ÷ max; 0 for items without categories;
* ``context_hour``, ``context_device`` log of the candidate's lift in the user's current time of
  day and device (:mod:`recstream.context`), unscaled: a log-probability ratio is what a
  multinomial logit adds as it is, and 0 means "no information".

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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from recstream.categories import category_share
from recstream.index import ItemIndex
from recstream.interest import attention_history, attention_scores
from recstream.scaling import Scope, minmax_scale, unit_scale
from recstream.state import decayed_recent

if TYPE_CHECKING:
    from recstream.recommender import Recommender
    from recstream.state import UserState

__all__ = [
    "BASE_FEATURES",
    "DEFAULT_FEATURES",
    "EXTRA_FEATURES",
    "FeatureCache",
    "Scope",
    "feature_matrix",
    "minmax_scale",
    "profile_cosines",
    "unit_scale",
]

BASE_FEATURES = ("covisit", "mf", "content", "popularity", "fresh")
_HISTORY_SCALE = math.log1p(1000.0)  # h reaches 1 at 1,000 events


_Extra = Callable[["Recommender", str, "UserState | None", Scope, dict], np.ndarray]


def _covisit_from(rec: Recommender, history: list[tuple[int, float]], scope: Scope):
    if not history:
        return scope.zeros()
    if scope.rows is None:
        raw = rec.covisit.score_from(history, scope.n_items)
    else:
        raw = rec.covisit.score_at(history, scope.rows)
    return unit_scale(raw, scope.mask, scope.invalid)


def _covisit_session(rec, user_id, state, scope, signals) -> np.ndarray:
    if state is None:
        return scope.zeros()
    cv = rec.covisit
    weights, start = cv.weights, state.session_start
    # the session's counted events, as co-visitation counts them (type weights, window)
    history = [
        (row, weights[t])
        for row, t, ts in state.recent
        if ts >= start and t in cv.types and weights.get(t, 0.0)
    ][-cv.window :]
    # Usually (a session longer than the window) these are exactly the events ``covisit``
    # scored: its column, computed from the same history over the same scope and mask, is
    # this one to the bit, and a second co-visitation pass per list is saved.
    if "covisit" in signals and history == cv.history(user_id):
        return signals["covisit"]
    return _covisit_from(rec, history, scope)


def _covisit_last(rec, user_id, state, scope, signals) -> np.ndarray:
    history = rec.covisit.history(user_id)
    return _covisit_from(rec, history[-1:], scope)


def _item_events(rec, user_id, state, scope, signals) -> np.ndarray:
    if "item_events" not in signals:  # computed once per list (the *_x_new features use it)
        events = scope.at(rec.covisit.item_events(len(rec.index)))
        signals["item_events"] = unit_scale(np.log1p(events), scope.mask, scope.invalid)
    return signals["item_events"]


def _crossed(signal: str, gate: Callable[[UserState | None], float]) -> _Extra:
    def feature(rec, user_id, state, scope, signals) -> np.ndarray:
        g = gate(state)
        s = signals.get(signal)
        return scope.zeros() if s is None or g == 0.0 else g * s

    return feature


def _for_new_items(signal: str) -> _Extra:
    def feature(rec, user_id, state, scope, signals) -> np.ndarray:
        s = signals.get(signal)
        if s is None:
            return scope.zeros()
        return s * (1.0 - _item_events(rec, user_id, state, scope, signals))

    return feature


def _history(state: UserState | None) -> float:
    return 0.0 if state is None else min(1.0, math.log1p(state.n_events) / _HISTORY_SCALE)


def _last_buy(state: UserState | None) -> float:
    return 1.0 if state is not None and state.recent and state.recent[-1][1] == "purchase" else 0.0


def _transition(rec, user_id, state, scope, signals) -> np.ndarray:
    model = rec.transitions
    if model is None:  # a model pickled before it existed, or a ranker built without it
        return scope.zeros()
    if scope.rows is not None:
        return unit_scale(model.score(user_id, scope.rows), scope.mask, scope.invalid)
    # unit_scale over the few rows where the scores can be nonzero (they are >= 0): the same
    # maximum over the mask (or 0) and the same quotients, without catalogue-sized passes
    scores, support = model.score_support(user_id)
    selected = scores[support[scope.mask[support]]]
    top = float(selected.max()) if selected.size else 0.0
    if top <= 0:  # (NaN cannot occur: positive sums over positive in-counts)
        return np.zeros_like(scores)
    scores[support] = scores[support] / top
    return scores


def _content_attention(rec, user_id, state, scope, signals) -> np.ndarray:
    index, c = rec.index, rec.config
    if state is None or not index.n_vectors:
        return scope.zeros()
    history = attention_history(
        state,
        c.event_weights,
        index.has_vector,
        n_items=c.attention_items,
        recency=c.attention_recency,
        session_boost=c.attention_session_boost,
    )
    if not history:
        return scope.zeros()
    sim = attention_scores(index, history, scope.rows, temperature=c.attention_temperature)
    return _cosine_column(sim, scope, index)


def _cosine_column(sim: np.ndarray, scope: Scope, index: ItemIndex) -> np.ndarray:
    """Cosines over the scope, min-max over the candidates with a vector (as ``content``:
    cosines crowd in a narrow band), 0 for rows without one."""
    has = scope.at(index.has_vector)
    return np.where(has, minmax_scale(sim, scope.mask & has, floor=scope.floor_with(has)), 0.0)


def profile_cosines(index: ItemIndex, profile: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Cosines of ``profile`` with every row (``rows`` None: in the index's projection, as the
    exact path scores content) or with ``rows`` only (a two-stage list: full width, no
    projection to keep fitted)."""
    if rows is None:
        return index.similarity(profile, approx=True)
    return index.similarity_at(profile, rows)


def taste_profile(
    state: UserState, weights: Mapping[str, float], index: ItemIndex, decay: float
) -> np.ndarray | None:
    """The L2-normalised mean of the vectors of ``state.recent``'s events, each weighted by its
    type's weight times ``decay ** age`` (age 0: the newest event), or None without a vector.

    A pure function of the state every user already keeps: no second profile per user.

    >>> from collections import deque
    >>> from recstream.state import UserState
    >>> index = ItemIndex(dim=2)
    >>> index.set_vectors(["a", "b"], np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> state = UserState(recent=deque([(0, "view", 1.0), (1, "purchase", 2.0)]))
    >>> [round(float(x), 3) for x in taste_profile(state, {}, index, decay=0.5)]
    [0.447, 0.894]
    """
    has = index.has_vector
    rows, w = [], []
    for row, weight in decayed_recent(state.recent, weights, decay):  # types as the profile
        if weight > 0.0 and row < has.shape[0] and has[row]:
            rows.append(row)
            w.append(weight)
    if not rows:
        return None
    mean = np.asarray(w, dtype=np.float32) @ index.vectors_at(rows)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def _content_taste(rec, user_id, state, scope, signals) -> np.ndarray:
    index = rec.index
    if state is None or not index.n_vectors:
        return scope.zeros()
    profile = taste_profile(state, rec.users.weights, index, rec.config.taste_decay)
    if profile is None:
        return scope.zeros()
    return _cosine_column(profile_cosines(index, profile, scope.rows), scope, index)


def _category_taste(rec, user_id, state, scope, signals) -> np.ndarray:
    categories = rec.categories
    if state is None or categories is None or not len(categories):
        return scope.zeros()
    share = category_share(categories, state.recent, rec.users.weights, rec.config.taste_decay)
    values = categories.affinity(share, rows=scope.rows, n_rows=scope.n_items)
    return unit_scale(values, scope.mask, scope.invalid)


def _context(key: str) -> _Extra:
    def feature(rec, user_id, state, scope, signals) -> np.ndarray:
        model = rec.context
        if model is None:
            return scope.zeros()
        # clipped: a lift of e**3 or more says nothing the ranker could use more of
        return np.clip(model.score(user_id, key, scope.rows), -3.0, 3.0)

    return feature


EXTRA_FEATURES: dict[str, _Extra] = {
    "covisit_session": _covisit_session,
    "covisit_last": _covisit_last,
    "item_events": _item_events,
    **{f"hist_x_{s}": _crossed(s, _history) for s in BASE_FEATURES},
    **{f"lastbuy_x_{s}": _crossed(s, _last_buy) for s in BASE_FEATURES},
    **{f"{s}_x_new": _for_new_items(s) for s in BASE_FEATURES},
    "transition": _transition,
    "content_attention": _content_attention,
    "content_taste": _content_taste,
    "category_taste": _category_taste,
    "context_hour": _context("hour"),
    "context_device": _context("device"),
}
# The learned ranker's default features (chosen on the first halves only:
# docs/evaluation/ranker.md). category_taste since 2026-12-02: on the shop's first half +10.7 %
# hr@10, ml-latest-small's unchanged; it made the ranker drop new items' content lift, which
# the new-item slot (recstream/new_item_slot.py) now makes up for.
DEFAULT_FEATURES = (
    *BASE_FEATURES,
    "covisit_session",
    "item_events",
    "content_x_new",
    "fresh_x_new",
    "transition",
    "category_taste",
)


def feature_matrix(
    rec: Recommender,
    user_id: str,
    mask: np.ndarray,
    names: Sequence[str],
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(X, signals)``: ``X`` the ``(n_rows, len(names))`` features for ``user_id`` of every
    item row (``rows`` None) or of ``rows`` (a two-stage list's candidates), scaled over the
    candidates ``mask`` (over the same scope); ``signals`` the hybrid's base signals (those the
    user has), for the reasons of a list."""
    scope = Scope(len(rec.index), mask, rows, floor=rec._scale_floor(mask, rows))
    signals = rec._signals(
        user_id, mask, every=True, rows=rows, invalid=scope.invalid, floor=scope.floor
    )
    memo = dict(signals)  # the extra features' shared parts (item_events) join it
    state = rec.users.get(user_id)
    # feature-major (each column contiguous), used through the transposed view: each column
    # is written into its row once, as np.stack would have copied it (float32 ones cast)
    X = np.empty((len(names), scope.size))
    for j, name in enumerate(names):
        if name in signals:
            X[j] = signals[name]
        elif name in EXTRA_FEATURES:
            X[j] = EXTRA_FEATURES[name](rec, user_id, state, scope, memo)
        elif name in BASE_FEATURES:  # a signal this user has none of yet (no history)
            X[j] = 0.0
        else:
            raise ValueError(f"unknown feature {name!r}")
    return X.T, signals


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
