"""An online ranker: a linear score over per-candidate features, learned from the stream.

The score of a candidate is ``w . x``, ``x`` its features (:mod:`recstream.features`: the
hybrid's signals scaled to [0, 1] over the user's candidates, and a few more). ``w`` starts at a
*prior* (the hybrid's hand-set weights, extra features at 0, so before any step it ranks exactly
like the fixed hybrid) and learns test-then-learn: when a click or purchase arrives, *before* any
signal learns it, the features of every candidate are taken at the state the list was ranked in,
and the ranker takes one step on "the user picked this item among those".

Loss. ``"softmax"`` (the default): the cross-entropy of the picked item among *all* the user's
candidates, ``-log softmax(X w)[picked]``: the model is a multinomial logit of what the user
picks next, and every candidate is a negative in proportion to its probability, so the items
that outrank the positive (the list it would have shown) weigh most. ``"bpr"``: pairwise
logistic ``log(1 + exp(-(s+ - s-)))`` against the ranker's own top ``n_shown`` (the list it would
have shown) plus ``n_sampled`` uniform draws. On the first half of ml-latest-small the pairwise
loss *shrinks* every weight towards 0 and loses hr@10: most positives rank below the whole shown
list, so nearly every pair is violated and a smaller scale is the cheapest way to lower the loss;
the softmax's normaliser over the whole catalogue keeps the scale (docs/evaluation/ranker.md).
Both can add ``l2 / 2 * |w - prior|^2``, a pull towards the prior.

Why numpy weights with River's optimisers, not a River linear model. Ranking scores every
candidate (the whole catalogue: ~10k items on ml-latest-small) per request, which must be one
matrix-vector product (:meth:`OnlineRanker.score`), never one ``predict_one`` per item; and a
listwise or pairwise loss over the candidates is not one of River's ``learn_one(x, y)``
problems. So the weights are one numpy vector, the gradient is computed in numpy (two passes
over the candidates' feature matrix), and River's optimiser (:mod:`river.optim`: SGD, Adam or
AdaGrad, the same choices as the MF) takes the step: on the numpy vector for SGD and Adam, on a
one-key ``{"w": vector}`` dict for AdaGrad (it has no vector path). A step costs about as much
as scoring the list once; the candidates' features cost more, and the hybrid reuses those of the
list it has just ranked (:class:`recstream.features.FeatureCache`).

>>> import numpy as np
>>> ranker = OnlineRanker(["good", "noise"], prior={"noise": 1.0}, lr=0.1, seed=0)
>>> rng = np.random.default_rng(0)
>>> for _ in range(200):  # the positive always has "good" = 1, negatives random
...     negatives = rng.random((5, 2)) * [0.5, 1.0]
...     _ = ranker.learn_one(np.array([1.0, rng.random()]), negatives)
>>> ranker.weights["good"] > ranker.weights["noise"]
True
>>> ranker.score(np.array([[1.0, 0.0], [0.0, 1.0]])).argmax()  # scores many candidates at once
np.int64(0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recstream.mf import OPTIMIZERS, make_optimizer

__all__ = ["LOSSES", "OPTIMIZERS", "OnlineRanker"]

LOSSES = ("softmax", "bpr")


class OnlineRanker:
    """Linear pairwise-logistic ranker, learned one event at a time (module docstring).

    Parameters
    ----------
    features
        Feature names, in the column order of every feature matrix given to the ranker.
    prior
        Starting weights by name (missing names: 0), also the centre of the L2 penalty.
    lr
        Learning rate of the optimiser.
    l2
        Strength of the pull towards ``prior``.
    optimizer
        ``"sgd"``, ``"adam"`` or ``"adagrad"`` (River's).
    loss
        ``"softmax"``: cross-entropy of the positive among all the candidates; ``"bpr"``:
        pairwise logistic against the shown and sampled negatives (module docstring).
    n_shown, n_sampled
        ``"bpr"`` only: how many of the ranker's own top candidates, and how many uniformly
        drawn ones, are the negatives in :meth:`learn_list`.
    seed
        Seeds the negative sampling.
    trace_every
        Record the weights (:attr:`trace`, for plots) at the first step of every
        ``trace_every`` of the ``clock`` the steps are given (the caller's event count; without
        one, the step count); 0: never. It stays bounded: past 2,000 records every other one is
        dropped and the interval doubles.
    """

    _TRACE_MAX = 2000

    def __init__(
        self,
        features: Sequence[str],
        prior: Mapping[str, float] | None = None,
        *,
        lr: float = 0.01,
        l2: float = 0.0,
        optimizer: str = "sgd",
        loss: str = "softmax",
        n_shown: int = 10,
        n_sampled: int = 10,
        seed: int = 42,
        trace_every: int = 500,
    ) -> None:
        self.features = tuple(features)
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"duplicate feature names in {self.features}")
        prior = dict(prior or {})
        unknown = set(prior) - set(self.features)
        if unknown:
            raise ValueError(f"prior names unknown features: {sorted(unknown)}")
        self.prior = np.array([float(prior.get(f, 0.0)) for f in self.features])
        self.w = self.prior.copy()
        self.lr = lr
        self.l2 = l2
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(optimizer, lr)  # the MF's choices, by the same names
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        self.n_shown = n_shown
        self.n_sampled = n_sampled
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.n_steps = 0
        self.trace_every = trace_every
        self.trace: list[tuple[int, int, list[float]]] = []  # (step, clock, weights)
        self._next_trace = 0

    @property
    def weights(self) -> dict[str, float]:
        """The current weights by feature name."""
        return dict(zip(self.features, self.w.tolist(), strict=True))

    # -- scoring -----------------------------------------------------------------------------
    def score(self, X: np.ndarray) -> np.ndarray:
        """Scores of many candidates at once: ``X`` is ``(n_candidates, n_features)``."""
        return X @ self.w

    def predict_one(self, x: Mapping[str, float]) -> float:
        """The score of one candidate given as ``{feature: value}`` (missing features: 0)."""
        values = np.array([float(x.get(f, 0.0)) for f in self.features])
        return float(values @ self.w)

    # -- learning ----------------------------------------------------------------------------
    def learn_one(
        self, positive: np.ndarray, negatives: np.ndarray, *, weight: float = 1.0, clock: int = 0
    ) -> float:
        """One step: ``positive`` ``(n_features,)`` should outrank every row of ``negatives``
        ``(n_negatives, n_features)``. ``weight`` scales the step (event type, cold item),
        ``clock`` is stored with the trace. Returns the loss before the step."""
        negatives = np.atleast_2d(negatives)
        if negatives.shape[0] == 0:
            return 0.0
        if self.loss == "softmax":
            X = np.vstack([positive[None, :], negatives])
            return self._softmax_step(X, X @ self.w, 0, weight, clock)
        diff = positive[None, :] - negatives  # (m, f)
        margin = diff @ self.w
        # d/dw log(1 + exp(-m)) = -sigmoid(-m) * diff; sigmoid(-m) = 1 / (1 + exp(m))
        coef = 1.0 / (1.0 + np.exp(np.clip(margin, -50.0, 50.0)))
        self._step(-(coef @ diff) / diff.shape[0] * weight, clock)
        return float(np.mean(np.logaddexp(0.0, -margin)))

    def learn_list(
        self,
        X: np.ndarray,
        positive: int,
        candidates: np.ndarray,
        *,
        weight: float = 1.0,
        clock: int = 0,
        scores: np.ndarray | None = None,
    ) -> float:
        """A test-then-learn step from one event: ``X`` holds the features of every row
        ``(n_rows, n_features)``, ``positive`` is the event's row and ``candidates`` a boolean
        mask of the rows the user could have been shown (the positive counts as one).
        ``scores``: :meth:`score` of ``X`` at the current weights when the caller has it (the
        list it has just ranked; read, not written), else computed here.

        ``"softmax"``: the negatives are every candidate. ``"bpr"``: this ranker's top
        ``n_shown`` candidates other than the positive (the list it would have shown) and
        ``n_sampled`` candidates drawn uniformly (the same row may come twice)."""
        mask = candidates.copy()
        mask[positive] = True
        if scores is None:
            scores = self.score(X)
        if self.loss == "softmax":
            scores = np.where(mask, scores, -np.inf)
            return self._softmax_step(X, scores, positive, weight, clock)
        mask[positive] = False
        pool = np.flatnonzero(mask)
        parts = []
        if self.n_shown and pool.size:
            k = min(self.n_shown, pool.size)
            if k < pool.size:
                scores = np.where(mask, scores, -np.inf)
                parts.append(np.argpartition(-scores, k - 1)[:k])
            else:
                parts.append(pool)
        if self.n_sampled and pool.size:
            parts.append(pool[self.rng.integers(0, pool.size, self.n_sampled)])
        if not parts:
            return 0.0
        negatives = X[np.concatenate(parts)]
        return self.learn_one(X[positive], negatives, weight=weight, clock=clock)

    def _softmax_step(
        self, X: np.ndarray, scores: np.ndarray, positive: int, weight: float, clock: int
    ) -> float:
        """Cross-entropy of the positive among the rows with a finite score:
        d/dw -log p+ = E_p[x] - x+, with p = softmax(scores). ``scores`` is the caller's own
        array (both callers make a new one) and is overwritten: per step, two list-sized
        arrays fewer, the same values."""
        top = float(scores.max())
        at_positive = scores[positive]
        e = np.exp(np.subtract(scores, top, out=scores), out=scores)  # exp(-inf) = 0: outside
        total = float(e.sum())
        self._step((np.divide(e, total, out=e) @ X - X[positive]) * weight, clock)
        return float(np.log(total) + top - at_positive)

    def _step(self, grad: np.ndarray, clock: int) -> None:
        if self.l2:
            grad = grad + self.l2 * (self.w - self.prior)
        if self.optimizer_name == "adagrad":  # River's AdaGrad has no vector path
            self.optimizer.step({"w": self.w}, {"w": grad})
        else:
            self.w = self.optimizer.step(self.w, grad)
        self.n_steps += 1
        at = clock or self.n_steps
        if self.trace_every and at >= self._next_trace:
            self._record(clock)
            self._next_trace = (at // self.trace_every + 1) * self.trace_every

    def _record(self, clock: int) -> None:
        self.trace.append((self.n_steps, int(clock), self.w.tolist()))
        if len(self.trace) > self._TRACE_MAX:
            self.trace = self.trace[1::2]
            self.trace_every *= 2

    def trace_dict(self, clock: int | None = None) -> dict:
        """The trace as plain data: ``{"features", "prior", "steps", "clock", "weights"}``,
        ending with the current weights (at ``clock``: default, the last one recorded)."""
        trace = list(self.trace)
        last_step, last_clock = (trace[-1][0], trace[-1][1]) if trace else (0, 0)
        if last_step < self.n_steps or (clock is not None and clock > last_clock):
            at = last_clock if clock is None else clock
            trace.append((self.n_steps, at, self.w.tolist()))
        return {
            "features": list(self.features),
            "prior": self.prior.tolist(),
            "steps": [s for s, _, _ in trace],
            "clock": [c for _, c, _ in trace],
            "weights": [w for _, _, w in trace],
        }

    # -- several workers: weight steps as deltas ----------------------------------------------
    def track_deltas(self) -> None:
        """Start recording this ranker's own steps for :meth:`export_delta` (idempotent)."""
        if getattr(self, "_w_at_export", None) is None:
            self._w_at_export = self.w.copy()

    def export_delta(self) -> dict:
        """The sum of this ranker's own steps since the last export (its weights now minus at
        the last export), as plain data; merged steps are not in it. Workers that each learn
        from their own users and add each other's steps learn like one ranker that saw every
        purchase, a few seconds late (the same rule as the MF item steps, recstream/deltas.py).

        >>> a, b = OnlineRanker(["x", "y"], lr=0.5), OnlineRanker(["x", "y"], lr=0.5)
        >>> a.track_deltas(); b.track_deltas()
        >>> _ = a.learn_one(np.array([1.0, 0.0]), np.array([[0.0, 1.0]]))
        >>> b.merge_delta(a.export_delta())
        >>> bool(np.allclose(a.w, b.w)), b.export_delta()["dw"].tolist()  # b's own: none
        (True, [0.0, 0.0])
        """
        if getattr(self, "_w_at_export", None) is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        dw = self.w - self._w_at_export
        self._w_at_export = self.w.copy()
        return {"features": list(self.features), "dw": dw}

    def merge_delta(self, delta: dict) -> None:
        """Add another ranker's :meth:`export_delta` (or a sum of several) to the weights."""
        if list(delta["features"]) != list(self.features):
            raise ValueError(
                f"ranker delta for features {delta['features']}, this ranker has {self.features}"
            )
        dw = np.asarray(delta["dw"], dtype=np.float64)
        self.w = self.w + dw
        if getattr(self, "_w_at_export", None) is not None:
            self._w_at_export = self._w_at_export + dw  # merged steps are not ours to export

    def __repr__(self) -> str:
        w = ", ".join(f"{f}={v:.3g}" for f, v in self.weights.items())
        return f"OnlineRanker({w}; {self.n_steps} steps)"
