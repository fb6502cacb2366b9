"""Incremental matrix factorisation for implicit feedback, as a River estimator.

The implicit MF is :class:`~recstream.mf_ranker.ImplicitMFRanker`, a River recommender
(:class:`river.reco.base.Ranker`: ``learn_one(user, item, y)``, ``predict_one(user, item)``,
``rank(user, items)``; River's estimator checks pass, tests/unit/test_mf_ranker.py). Its model is
River's biased MF, ``score(u, i) = mu + b_u + b_i + p_u . q_i`` (:class:`river.reco.BiasedMF`;
without biases :class:`river.reco.FunkMF`), learned one event at a time with River's squared
loss, River optimisers (``"sgd"``, ``"adam"``, ``"adagrad"``: :mod:`river.optim`) and River's
initialiser (:class:`river.optim.initializers.Normal`). :class:`ImplicitMF`, the hybrid's MF
signal, *is* that ranker plus the hybrid's shared item index and user store, the event API
(``learn(event)``, ``update(user, row, type)``, ``recommend``) and item deltas
(:mod:`recstream.mf_deltas`).

Implicit feedback. Events are not ratings, so each event becomes a *graded positive* with
target ``y = weights[type]`` (purchase 1, click 0.5, view 0.25 by default) and ``n_negatives``
sampled *negatives* with target 0: items the user has not interacted with, drawn half from the
recent event stream (popularity-proportional: the informative negatives, "popular but not for
you") and half uniformly from the catalogue. Without negatives a positive-only MF drifts towards
scoring everything high (see :class:`ISGD`).

Why two engines. ``engine="river"`` calls :meth:`river.reco.BiasedMF.learn_one` for the positive
and then each negative -- River's reference algorithm (:mod:`recstream.mf_river`) -- and mirrors
the touched item factors into a numpy matrix. The default ``engine="numpy"`` runs the same
update with River's loss, initialiser and optimiser objects on rows of numpy matrices: adaptive
optimisers (Adam, AdaGrad) get ``{key: row_view}`` dicts from which their ``step`` updates the
rows in place (keeping their per-key state); for plain SGD, whose River step is just
``w -= lr * g``, the same update is one vectorised statement. It differs from River's in one
respect: the positive and its negatives form one mini-batch (the user gradient is their sum)
instead of ``1 + n_negatives`` sequential ``learn_one`` calls. With ``n_negatives=0`` both engines
give identical factors for every optimiser (the unit tests check this). Learning ml-latest-small
with 4 negatives, River's engine does ~11.6k events/s (SGD) / 5.3k (Adam) and the numpy one ~21k
/ 8k on one core: the hybrid's whole per-event budget at 2000 events/s is 500 us, so the faster
path is the default. Either way item factors live in one ``(n_items, k)`` matrix (plus a float32
copy for ranking), so scoring every item for a user is one matrix-vector product.

>>> from recstream.events import Event
>>> mf = ImplicitMF(n_factors=4, lr=0.05, n_negatives=2, seed=1)
>>> mf.add_items("abcdefgh")
>>> stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a")] * 30
>>> for n, (u, i) in enumerate(stream):
...     mf.learn(Event(str(n), u, i, "purchase", float(n)))
>>> [r.item_id for r in mf.recommend("u3", k=1)]  # users like u3 also bought b
['b']
>>> from river import reco
>>> isinstance(mf, reco.base.Ranker), mf.rank("u3", ["c", "b"])
(True, ['b', 'c'])
"""

from __future__ import annotations

import re
from collections.abc import Container, Hashable, Iterator, Mapping
from typing import Any

from recstream.events import Event
from recstream.index import ItemIndex
from recstream.mf_deltas import ItemDeltas
from recstream.mf_ranker import ImplicitMFRanker
from recstream.mf_river import OPTIMIZERS, make_optimizer
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["ISGD", "OPTIMIZERS", "ImplicitMF", "ImplicitMFRanker", "make_optimizer"]

_ADDRESS = re.compile(r"<[\w.]*?(\w+) object at 0x[0-9a-fA-F]+>")


class ImplicitMF(ItemDeltas, ImplicitMFRanker, StreamModel):
    """Incremental biased MF with graded positives and sampled negatives (module docstring).

    River's API (``learn_one``, ``predict_one``, ``rank``) works here too; ``learn_one`` steps
    the model only, without the user-store bookkeeping of :meth:`learn`. River's estimator
    checks pass on this class as on :class:`~recstream.mf_ranker.ImplicitMFRanker`
    (tests/unit/test_mf_ranker.py). ``index`` and ``users`` are the hybrid's shared state, not
    hyper-parameters: River's ``_get_params`` reports them as None, so ``clone()`` gives a
    fresh model with its own (a copy of the hybrid's catalogue and users would not be fresh).

    Parameters
    ----------
    n_factors, lr, l2, n_negatives, optimizer, bias, init_sigma, engine, seed, clip_gradient,
    negative_pool
        As in :class:`~recstream.mf_ranker.ImplicitMFRanker`.
    weights
        Event-type targets; a type with weight 0 is not learned.
    exclude, index, users
        See :class:`recstream.popularity.Popularity`.
    """

    reason_text = "matches your taste"

    def __init__(
        self,
        n_factors: int = 32,
        lr: float = 0.02,
        l2: float = 0.01,
        n_negatives: int = 4,
        optimizer: str = "sgd",
        weights: Mapping[str, float] | None = None,
        bias: bool = True,
        init_sigma: float = 0.1,
        engine: str = "numpy",
        seed: int = 42,
        *,
        clip_gradient: float = 1e12,
        negative_pool: int = 5000,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        StreamModel.__init__(self, exclude=exclude, index=index, users=users)
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self._init_engine(
            n_factors, lr, l2, n_negatives, optimizer, bias, init_sigma, engine, seed,
            clip_gradient, negative_pool,
        )  # fmt: skip

    def _get_params(self) -> dict[str, Any]:
        return {**super()._get_params(), "index": None, "users": None}

    def __repr__(self) -> str:
        # River's repr prints every argument's attribute: the shared index and user store would
        # show object addresses, which differ between a model and its clone.
        return _ADDRESS.sub(r"<\1>", super().__repr__())

    def _seen_rows(self, user_id: Hashable) -> Container[int]:
        # The hybrid's user store already holds every item the user touched.
        state = self.users.get(user_id)
        return state.seen if state is not None else ()

    def update(self, user_id: str, row: int, event_type: str) -> None:
        """Learn one event (item at ``row``) without user-store bookkeeping (for the hybrid).

        Negatives are drawn before the caller adds this event to the user's seen set, which
        does not matter: ``row`` itself is never drawn.
        """
        y = self.weights.get(event_type, 0.0)
        if y == 0.0:
            return
        self._learn(user_id, row, y)

    def learn(self, event: Event) -> None:
        row = self.index.add(event.item_id)
        self.update(event.user_id, row, event.type)
        self._observe(event)


class ISGD(ImplicitMF):
    """ISGD (Vinagre et al., 2014): positive-only incremental MF, the classic streaming baseline.

    FunkMF (no biases) learning each purchase with target 1 and no negatives, by plain SGD.
    ``lr`` and ``l2`` are given in the paper's convention (update ``lr * (err q - l2 p)``); River's
    squared-loss gradient carries a factor 2, so the River optimiser gets ``lr / 2``.

    Parameters
    ----------
    n_factors, lr, l2
        The paper's k, learning rate and regularisation.
    types
        Event types that are positives.
    seed, exclude, index, users
        As in :class:`ImplicitMF`.
    """

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"n_factors": 4}
        yield {"n_factors": 4, "types": ("click", "purchase"), "lr": 0.1}

    @property
    def types(self) -> tuple[str, ...]:
        # Derived from the weights (which models pickled before this property also hold), so
        # River's get_params and clone see the argument.
        return tuple(t for t, w in self.weights.items() if w)

    def _get_params(self) -> dict[str, Any]:
        # The paper's values, as given: the attributes hold River's (lr / 2, 2 l2), which the
        # learning step reads; a clone built from these converts them again.
        return {**super()._get_params(), "lr": 2 * self.lr, "l2": self.l2 / 2}

    def __init__(
        self,
        n_factors: int = 10,
        lr: float = 0.05,
        l2: float = 0.01,
        types: tuple[str, ...] = ("purchase",),
        seed: int = 42,
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        super().__init__(
            n_factors=n_factors,
            lr=lr / 2,
            l2=2 * l2,
            n_negatives=0,
            optimizer="sgd",
            weights={t: 1.0 for t in types},
            bias=False,
            seed=seed,
            exclude=exclude,
            index=index,
            users=users,
        )
