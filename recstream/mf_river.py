"""The reference engine of the implicit MF: River's own ``BiasedMF`` / ``FunkMF`` ``learn_one``.

``engine="river"`` (:class:`recstream.mf_ranker.ImplicitMFRanker`) learns every pair with
:meth:`river.reco.BiasedMF.learn_one` (:class:`river.reco.FunkMF` without biases) -- the positive,
then each negative -- and mirrors the touched rows into the numpy matrices the scoring reads.
It is the yardstick of the default numpy engine (same River loss, initialiser and optimisers on
numpy rows): with ``n_negatives=0`` both give identical factors (tests/unit/test_mf.py).

River's dicts are this engine's truth, keyed by user and item id; the mixin keeps them in step
when a user is forgotten, exported or imported, and when item deltas are merged.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from river import optim, reco

from recstream.optim_state import key_state, pop_key_state, set_key_state

__all__ = ["OPTIMIZERS", "RiverEngine", "make_optimizer"]

OPTIMIZERS = ("sgd", "adam", "adagrad")


def make_optimizer(name: str, lr: float) -> optim.base.Optimizer:
    """A River optimiser by name.

    >>> type(make_optimizer("adagrad", 0.05)).__name__
    'AdaGrad'
    """
    if name == "sgd":
        return optim.SGD(lr)
    if name == "adam":
        return optim.Adam(lr)
    if name == "adagrad":
        return optim.AdaGrad(lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


class RiverEngine:
    """Mixin of :class:`~recstream.mf_ranker.ImplicitMFRanker`: the ``engine="river"`` parts.

    It reads the host's hyper-parameters and numpy mirror (``_P``, ``_Q``, ``_Q32``, ``_bi``,
    ``_bu``, ``global_mean``) and owns ``_river``, River's model (None with the numpy engine).
    """

    _river: reco.BiasedMF | reco.FunkMF | None = None
    n_factors: int
    lr: float
    l2: float
    optimizer: str
    bias: bool
    init_sigma: float
    seed: int
    clip_gradient: float
    _P: np.ndarray
    _Q: np.ndarray
    _bi: np.ndarray
    _bu: np.ndarray

    def _make_river_model(self) -> reco.BiasedMF | reco.FunkMF:
        """River's own model with the same hyper-parameters."""

        def initializer() -> optim.initializers.Normal:
            return optim.initializers.Normal(mu=0.0, sigma=self.init_sigma, seed=self.seed)

        if self.bias:
            return reco.BiasedMF(
                n_factors=self.n_factors,
                bias_optimizer=make_optimizer(self.optimizer, self.lr),
                latent_optimizer=make_optimizer(self.optimizer, self.lr),
                loss=optim.losses.Squared(),
                l2_bias=self.l2,
                l2_latent=self.l2,
                latent_initializer=initializer(),
                clip_gradient=self.clip_gradient,
                seed=self.seed,
            )
        return reco.FunkMF(
            n_factors=self.n_factors,
            optimizer=make_optimizer(self.optimizer, self.lr),
            loss=optim.losses.Squared(),
            l2=self.l2,
            initializer=initializer(),
            clip_gradient=self.clip_gradient,
            seed=self.seed,
        )

    def _river_user_optimizers(self) -> list[Any]:
        """River's own optimisers of the user parameters, keyed by user id."""
        model = self._river
        if self.bias:
            return [model.u_latent_optimizer, model.u_bias_optimizer]
        return [model.u_optimizer]

    def _learn_river(self, u: int, user_id: Hashable, ids: Sequence[Hashable], rows, ys) -> None:
        """One ``learn_one`` per (item, target), in order; then mirror the rows into numpy."""
        model = self._river
        if user_id not in model.u_latents:
            # Start River's vectors from the mirror's initial rows, so both engines agree.
            model.u_latents[user_id] = self._P[u].copy()
        for r, y in zip(rows, ys, strict=True):
            item_id = ids[r]
            if item_id not in model.i_latents:
                model.i_latents[item_id] = self._Q[r].copy()
            model.learn_one(user_id, item_id, y)
            self._Q[r] = model.i_latents[item_id]
            if self.bias:
                self._bi[r] = model.i_biases[item_id]
        self._P[u] = model.u_latents[user_id]
        if self.bias:
            self._bu[u] = model.u_biases[user_id]
            self.global_mean = model.global_mean

    def _river_forget(self, user_id: Hashable) -> None:
        model = self._river
        model.u_latents.pop(user_id, None)
        if self.bias:
            model.u_biases.pop(user_id, None)
        for opt in self._river_user_optimizers():
            pop_key_state(opt, user_id)

    def _river_export(self, user_id: Hashable) -> dict[str, dict]:
        opts = self._river_user_optimizers()
        return {
            "factors": key_state(opts[0], user_id),
            "bias": key_state(opts[1], user_id) if self.bias else {},
        }

    def _river_import(
        self, user_id: Hashable, factors: np.ndarray, bias: float, optimizer: Mapping
    ) -> None:
        model = self._river
        model.u_latents[user_id] = factors.copy()
        if self.bias:
            model.u_biases[user_id] = bias
        for opt, part in zip(self._river_user_optimizers(), ("factors", "bias"), strict=False):
            set_key_state(opt, user_id, optimizer.get(part, {}))

    def _river_merge(self, items: Sequence[Hashable], rows: Sequence[int]) -> None:
        """Copy merged item rows into River's dicts (an item River has not met keeps none)."""
        model = self._river
        for item_id, r in zip(items, rows, strict=True):
            if item_id in model.i_latents:
                model.i_latents[item_id] = self._Q[r].copy()
            if self.bias:
                model.i_biases[item_id] = float(self._bi[r])
