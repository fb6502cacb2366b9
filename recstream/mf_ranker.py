"""The implicit MF as a River estimator: :class:`ImplicitMFRanker`, a River ``Ranker``.

River's recommender API -- ``learn_one(user, item, y)``, ``predict_one(user, item)``,
``rank(user, items)`` -- over the engine the hybrid uses (:class:`recstream.mf.ImplicitMF` is this
class plus the hybrid's shared item index, user store and event API). It follows River's
conventions: every ``__init__`` argument is a same-named attribute, ``clone()`` gives a fresh model,
``_unit_test_params`` feeds River's estimator checks, which tests/unit/test_mf_ranker.py runs: the
ones River yields for a Ranker (general checks and ``check_reco_routine``) and, through a
``learn_one(x, y)`` adapter, its dataset checks, which River yields for no Ranker
(docs/evaluation/mf.md).

The model is River's biased MF, ``mu + b_u + b_i + p_u . q_i`` (:class:`river.reco.BiasedMF`;
without biases :class:`river.reco.FunkMF`), learned with River's squared loss, optimisers and
normal initialiser. Implicit feedback: ``learn_one(user, item, y)`` with ``y > 0`` is a positive
with target ``y`` learned together with ``n_negatives`` sampled negatives (target 0: items the
user has not taken, half drawn from the recent positives -- "popular, but not for you" -- half
uniformly); ``y <= 0`` is one explicit step towards ``y``, e.g. an item the user was shown and
passed over. Scoring many items is one matrix-vector product over numpy rows.

>>> mf = ImplicitMFRanker(n_factors=4, lr=0.05, n_negatives=2, seed=1)
>>> ab = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a")]
>>> cd = [("u4", "c"), ("u4", "d"), ("u5", "c"), ("u5", "d"), ("u6", "c")]
>>> for user, item in (ab + cd) * 30:
...     mf.learn_one(user, item, 1.0)
>>> mf.rank("u3", {"b", "d"}), mf.rank("u6", {"b", "d"})  # each took what its group took
(['b', 'd'], ['d', 'b'])
>>> mf.predict_one("u3", "b") > mf.predict_one("u3", "d")
True
"""

from __future__ import annotations

import copy
from collections.abc import Container, Hashable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from river import optim, reco, stats

from recstream.index import ItemIndex, grow
from recstream.mf_river import RiverEngine, make_optimizer
from recstream.mf_users import UserRows
from recstream.state import RecentSet

__all__ = ["ImplicitMFRanker"]


class ImplicitMFRanker(UserRows, RiverEngine, reco.base.Ranker):
    """Incremental biased MF for implicit feedback, as a River ranker (module docstring).

    Parameters
    ----------
    n_factors
        Latent dimension ``k``.
    lr
        Learning rate of the optimiser.
    l2
        L2 regularisation of the latent factors (and of the biases when ``bias=True``).
    n_negatives
        Negatives sampled per positive.
    optimizer
        ``"sgd"``, ``"adam"`` or ``"adagrad"`` (River's).
    bias
        Learn the user/item biases (BiasedMF) or not (FunkMF).
    init_sigma
        Standard deviation of River's normal initialiser.
    engine
        ``"numpy"`` (default, fast: River's loss, initialiser and optimisers on numpy rows, the
        positive and its negatives as one mini-batch) or ``"river"`` (``BiasedMF.learn_one``
        per pair: :mod:`recstream.mf_river`).
    seed
        Seeds the initialiser and the negative sampler.
    clip_gradient
        Clips the loss gradient, as River's models do.
    negative_pool
        Recent positives kept to draw popularity-proportional negatives from.
    max_seen
        Per user, the positives remembered (most recent) so that none is drawn as a negative.
    """

    # This class's own per-user positives (None in recstream.mf.ImplicitMF: its user store).
    _seen: dict[Hashable, RecentSet] | None = None

    def __init__(
        self,
        n_factors: int = 32,
        lr: float = 0.02,
        l2: float = 0.01,
        n_negatives: int = 4,
        optimizer: str = "sgd",
        bias: bool = True,
        init_sigma: float = 0.1,
        engine: str = "numpy",
        seed: int = 42,
        clip_gradient: float = 1e12,
        negative_pool: int = 5000,
        max_seen: int = 1000,
    ) -> None:
        self._init_engine(
            n_factors, lr, l2, n_negatives, optimizer, bias, init_sigma, engine, seed,
            clip_gradient, negative_pool,
        )  # fmt: skip
        self.index = ItemIndex()
        self.max_seen = max_seen
        self._seen = {}

    def _init_engine(
        self,
        n_factors: int,
        lr: float,
        l2: float,
        n_negatives: int,
        optimizer: str,
        bias: bool,
        init_sigma: float,
        engine: str,
        seed: int,
        clip_gradient: float,
        negative_pool: int,
    ) -> None:
        """The parameters and state every engine needs (also :class:`recstream.mf.ImplicitMF`'s
        constructor calls it); the order of the draws is what makes a seed reproducible."""
        if engine not in ("numpy", "river"):
            raise ValueError(f"engine must be 'numpy' or 'river', got {engine!r}")
        reco.base.Ranker.__init__(self, seed=seed)  # self.seed; self._rng draws the negatives
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.n_negatives = n_negatives
        self.optimizer = optimizer
        self.bias = bias
        self.init_sigma = init_sigma
        self.engine = engine
        self.clip_gradient = clip_gradient
        self.initializer = optim.initializers.Normal(mu=0.0, sigma=init_sigma, seed=seed)
        base = make_optimizer(optimizer, lr)
        # One optimiser per parameter group, as River's BiasedMF does (adaptive state per key).
        self._opt_u = copy.deepcopy(base)
        self._opt_i = copy.deepcopy(base)
        self._opt_bu = copy.deepcopy(base)
        self._opt_bi = copy.deepcopy(base)
        self.global_mean = stats.Mean()
        self.loss = optim.losses.Squared()
        self._plain_sgd = type(base) is optim.SGD
        self._Q = np.zeros((0, n_factors), dtype=np.float64)  # item factors, by index row
        # float32 copy of _Q for ranking: learning stays in float64 (River's precision), while
        # scoring every item reads half the bytes and runs ~4x faster
        self._Q32 = np.zeros((0, n_factors), dtype=np.float32)
        self._bi = np.zeros(0, dtype=np.float64)
        self._n_init = 0  # item rows initialised so far
        self._P = np.zeros((0, n_factors), dtype=np.float64)  # user factors
        self._bu = np.zeros(0, dtype=np.float64)
        self._user_rows: dict[Hashable, int] = {}
        self._n_user_rows = 0  # rows allocated (forgotten users' included)
        self._free_rows = []
        self._pool: list[int] = []  # recent positive item rows: popularity-proportional negatives
        self._pool_size = negative_pool
        self._pool_pos = 0
        self._river = self._make_river_model() if engine == "river" else None

    @property
    def negative_pool(self) -> int:
        # A property over the field older pickles hold, so River's get_params/clone see it.
        return self._pool_size

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"n_factors": 4}
        yield {"n_factors": 4, "optimizer": "adagrad", "lr": 0.05, "bias": False}
        yield {"n_factors": 4, "engine": "river", "n_negatives": 1}

    # -- River's Ranker API --------------------------------------------------------------------
    def learn_one(
        self, user: Hashable, item: Hashable, y: float | bool, x: dict | None = None
    ) -> None:
        """Learn that ``user`` took ``item`` with strength ``y > 0`` (with sampled negatives),
        or one step towards ``y <= 0`` (e.g. 0: shown and passed over). ``x`` is ignored: the
        model is not contextual."""
        row = self.index.add(item)
        self._learn(user, row, float(y))
        if y > 0 and self._seen is not None:
            seen = self._seen.get(user)
            if seen is None:
                seen = self._seen[user] = RecentSet()
            seen.touch(row, cap=self.max_seen)

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:
        """``mu + b_u + b_i + p_u . q_i``; an unknown user or item has no terms of its own."""
        return self.predict(user, item)

    def rank(
        self, user: Hashable, items: Iterable[Hashable], x: dict | None = None
    ) -> list[Hashable]:
        """``items`` by decreasing :meth:`predict_one` (ties keep their order), vectorised."""
        items = list(items)
        rows = [self.index.row(i) for i in items]
        known = [r for r in rows if r is not None]
        values = dict(zip(known, self.score_at(user, np.array(known, dtype=np.int64)), strict=True))
        keys = [values[r] if r is not None else 0.0 for r in rows]  # unknown: b_i = q_i = 0
        order = sorted(range(len(items)), key=keys.__getitem__, reverse=True)
        return [items[j] for j in order]

    # -- parameters ----------------------------------------------------------------------------
    def _ensure_items(self) -> None:
        n = len(self.index)
        if n <= self._n_init:
            return
        self._Q = grow(self._Q, n)
        self._Q32 = grow(self._Q32, n)
        self._bi = grow(self._bi, n)
        for r in range(self._n_init, n):
            # River's initialiser, one row at a time in row order: reproducible for a seed
            self._Q[r] = self.initializer(shape=self.n_factors)
        self._Q32[self._n_init : n] = self._Q[self._n_init : n]
        if getattr(self, "_Q_base", None) is not None:  # deltas: a new row's base is its start
            self._Q_base = grow(self._Q_base, n)
            self._bi_base = grow(self._bi_base, n)
            self._Q_base[self._n_init : n] = self._Q[self._n_init : n]
            self._bi_base[self._n_init : n] = self._bi[self._n_init : n]
        self._n_init = n

    def _sync_rows(self, rows: np.ndarray | Sequence[int]) -> None:
        """Refresh the scoring copy of item ``rows`` after their float64 values changed."""
        self._Q32[rows] = self._Q[rows]

    @property
    def item_factors(self) -> np.ndarray:
        """(n_items, k) item factors by index row (the numpy mirror)."""
        self._ensure_items()
        return self._Q[: len(self.index)]

    # -- learning ------------------------------------------------------------------------------
    def _seen_rows(self, user_id: Hashable) -> Container[int]:
        """The user's items that must not be drawn as negatives."""
        seen = self._seen.get(user_id) if self._seen is not None else None
        return seen if seen is not None else ()

    def _negatives(self, user_id: Hashable, positive: int) -> list[int]:
        seen = self._seen_rows(user_id)
        n_items = len(self.index)
        active = self.index.active
        out: list[int] = []
        for _ in range(self.n_negatives * 3):  # bounded retries when the user has seen a lot
            if len(out) == self.n_negatives:
                break
            if self._pool and self._rng.random() < 0.5:
                r = self._pool[self._rng.randrange(len(self._pool))]
            else:
                r = self._rng.randrange(n_items)
            if r != positive and r not in seen and active[r] and r not in out:
                out.append(r)
        return out

    def _learn(self, user_id: Hashable, row: int, y: float) -> None:
        """One step: a positive (``y > 0``) with its sampled negatives, or ``y`` alone."""
        self._ensure_items()
        positive = y > 0
        rows = [row, *self._negatives(user_id, row)] if positive and self.n_negatives else [row]
        self._step(user_id, rows, [y] + [0.0] * (len(rows) - 1))
        if not positive:
            return
        if len(self._pool) < self._pool_size:
            self._pool.append(row)
        else:
            self._pool[self._pool_pos] = row
            self._pool_pos = (self._pool_pos + 1) % self._pool_size

    def learn_shown(self, user_id: Hashable, rows: Sequence[int]) -> None:
        """The user was shown the items at ``rows`` and took none of them (e.g. bought another
        item from the list): one mini-batch step of each towards 0 -- explicit negatives, "seen
        and passed over", more informative than sampled ones. Items the user has taken are
        skipped, as for sampled negatives."""
        seen = self._seen_rows(user_id)
        rows = [r for r in dict.fromkeys(int(r) for r in rows) if r not in seen]
        if rows:
            self._ensure_items()
            self._step(user_id, rows, [0.0] * len(rows))

    def _step(self, user_id: Hashable, rows: list[int], ys: list[float]) -> None:
        """Learn ``ys`` at item ``rows`` with the engine; keep the scoring copy and deltas."""
        if self._river is not None:
            self._learn_river(self._user_row(user_id), user_id, self.index.ids, rows, ys)
        else:
            self._learn_numpy(user_id, rows, ys)
        self._sync_rows(rows)
        dirty = getattr(self, "_dirty", None)  # item deltas (recstream.mf_deltas)
        if dirty is not None:
            dirty.update(rows)

    def _learn_numpy(self, user_id: Hashable, rows: list[int], ys: list[float]) -> None:
        u = self._user_row(user_id)
        p = self._P[u].copy()  # the item gradients use the user vector before its step
        q = self._Q[rows]  # a copy (fancy indexing): the parameters before the step
        for y in ys:
            self.global_mean.update(y)
        pred = q @ p
        if self.bias:
            pred = pred + self.global_mean.get() + self._bu[u] + self._bi[rows]
        g = self.loss.gradient(np.asarray(ys), pred)  # River's Squared: 2 (pred - y)
        g = np.clip(g, -self.clip_gradient, self.clip_gradient)
        grad_u = g @ q + self.l2 * p
        grad_q = g[:, None] * p + self.l2 * q
        if self._plain_sgd:
            # River's SGD step is ``w -= lr * g``: the same update, vectorised over the rows
            # (a River ``step`` call costs more than the arithmetic at this size).
            for opt in (self._opt_u, self._opt_i):
                opt.n_iterations += 1
            self._P[u] -= self._opt_u.learning_rate * grad_u
            self._Q[rows] -= self._opt_i.learning_rate * grad_q
        else:
            # River's adaptive optimisers update the rows of _P/_Q in place through the views in
            # these dicts, keeping their per-key state (Adam's moments, AdaGrad's sums).
            self._opt_u.step({u: self._P[u]}, {u: grad_u})
            self._opt_i.step({r: self._Q[r] for r in rows}, dict(zip(rows, grad_q, strict=True)))
        if self.bias:
            grad_bu = float(g.sum()) + self.l2 * self._bu[u]
            grad_bi = g + self.l2 * self._bi[rows]
            if self._plain_sgd:
                for opt in (self._opt_bu, self._opt_bi):
                    opt.n_iterations += 1
                self._bu[u] -= self._opt_bu.learning_rate * grad_bu
                self._bi[rows] -= self._opt_bi.learning_rate * grad_bi
            else:
                bu = self._opt_bu.step({u: self._bu[u]}, {u: grad_bu})
                self._bu[u] = bu[u]
                bi = self._opt_bi.step(
                    {r: self._bi[r] for r in rows}, dict(zip(rows, grad_bi.tolist(), strict=True))
                )
                self._bi[rows] = [bi[r] for r in rows]

    # -- scoring -------------------------------------------------------------------------------
    def score(self, user_id: Hashable) -> np.ndarray:
        """``b_i + p_u . q_i`` for every row (user terms are constant, so omitted)."""
        self._ensure_items()
        n = len(self.index)
        u = self._user_rows.get(user_id)
        scores = self._bi[:n].copy() if self.bias else np.zeros(n)
        if u is not None:
            scores += self._Q32[:n] @ self._P[u].astype(np.float32)
        return scores

    def score_at(self, user_id: Hashable, rows: np.ndarray) -> np.ndarray:
        """:meth:`score` at ``rows`` only: O(len(rows)) for a list over a few candidates."""
        self._ensure_items()
        rows = np.asarray(rows, dtype=np.int64)
        u = self._user_rows.get(user_id)
        scores = self._bi[rows].astype(np.float64) if self.bias else np.zeros(rows.size)
        if u is not None:
            scores += self._Q32[rows] @ self._P[u].astype(np.float32)
        return scores

    def item_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """``[q_i, b_i]`` (or ``q_i`` without biases) at ``rows``, float32: the vectors an
        inner-product index searches with ``[p_u, 1]`` (:func:`recstream.candidates.mf_query`).
        """
        self._ensure_items()
        rows = np.asarray(rows, dtype=np.int64)
        q = self._Q32[rows]
        if not self.bias:
            return np.ascontiguousarray(q, dtype=np.float32)
        return np.hstack([q, self._bi[rows].astype(np.float32).reshape(-1, 1)])

    def predict(self, user_id: Hashable, item_id: Hashable) -> float:
        """``mu + b_u + b_i + p_u . q_i`` for one pair (River's ``predict_one``)."""
        self._ensure_items()
        r = self.index.row(item_id)
        u = self._user_rows.get(user_id)
        value = self.global_mean.get() if self.bias else 0.0
        if u is not None and self.bias:
            value += self._bu[u]
        if r is not None and self.bias:
            value += self._bi[r]
        if u is not None and r is not None:
            value += float(self._Q[r] @ self._P[u])
        return float(value)
