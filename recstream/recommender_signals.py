"""The hybrid's signals for one list, scaled (a Recommender mixin).

Each signal is scaled over the list's candidates: ÷ max for the non-negative ones
(co-visitation, popularity), min-max for the signed ones (MF, content), whose 0 comes from the
list's uniform sample from ``retrieval_min_items`` rows on (:meth:`SignalScales._scale_floor`),
so the exact and the two-stage paths score alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recstream.features import profile_cosines
from recstream.index import isin_rows
from recstream.retrieval import scale_sample
from recstream.scaling import minmax_scale as _minmax
from recstream.scaling import outside
from recstream.scaling import unit_scale as _unit

__all__ = ["SignalScales"]


class SignalScales:
    """Mixin; expects the Recommender's ``config``, ``index``, ``users``, ``covisit``, ``mf``,
    ``popularity``, ``fresh``, ``retrieval``, ``seed`` and ``n_events``."""

    config: Any
    index: Any
    users: Any
    covisit: Any
    mf: Any
    popularity: Any
    fresh: Any
    retrieval: Any
    seed: int
    n_events: int

    def _signals(
        self,
        user_id: str,
        valid: np.ndarray,
        every: bool = False,
        rows: np.ndarray | None = None,
        invalid: np.ndarray | None = None,
        floor: np.ndarray | bool | None = True,
    ) -> dict[str, np.ndarray]:
        """The signals scaled over ``valid``: those with a weight, or ``every`` one (ranker).

        Over every catalogue row (``rows`` None), or over ``rows`` only (a two-stage list:
        arrays aligned with ``rows``, ``valid`` a mask over them, nothing catalogue-sized).
        ``invalid``: ``outside(valid)`` when the caller has it (computed here otherwise).
        ``floor``: :meth:`_scale_floor` when the caller has it (True: computed here).
        """
        c = self.config
        if invalid is None:  # one pass per list, then no boolean gather per signal
            invalid = outside(valid)
        if floor is True:
            floor = self._scale_floor(valid, rows)
        out: dict[str, np.ndarray] = {}
        now = float(self.n_events)
        every_row = rows is None
        pop = self.popularity.values(now) if every_row else self.popularity.values_at(rows, now)
        out["popularity"] = _unit(np.log1p(pop), valid, invalid)
        # already in [0, 1]
        out["fresh"] = self.fresh.values(now) if every_row else self.fresh.values_at(rows, now)
        state = self.users.get(user_id)
        if state is None:
            return out
        if c.w_covisit or every:
            if every_row:
                covisit = self.covisit.score(user_id)
            else:
                covisit = self.covisit.score_at(self.covisit.history(user_id), rows)
            out["covisit"] = _unit(covisit, valid, invalid)
        if c.w_mf or every:
            mf = self.mf.score(user_id) if every_row else self.mf.score_at(user_id, rows)
            out["mf"] = _minmax(mf, valid, invalid, floor)
        profile = state.profile()
        if (c.w_content or every) and profile is not None and self.index.dim is not None:
            if every_row and not self.index.n_vectors:
                return out
            sim = profile_cosines(self.index, profile, rows)
            has = self.index.has_vector if every_row else self.index.has_vector[rows]
            # min-max over the candidates: raw cosines of sentence embeddings crowd into a
            # narrow band, so only their spread carries information
            scaled = valid & has
            low = None if floor is None else floor & has
            out["content"] = np.where(has, _minmax(sim, scaled, outside(scaled), low), 0.0)
        return out

    def _weights(self) -> dict[str, float]:
        c = self.config
        return {
            "covisit": c.w_covisit,
            "mf": c.w_mf,
            "content": c.w_content,
            "popularity": c.w_popularity,
            "fresh": c.w_fresh,
        }

    def _scale_floor(self, valid: np.ndarray, rows: np.ndarray | None) -> np.ndarray | None:
        """Where the min-max signals (MF, content) take their 0: None below
        ``retrieval_min_items`` rows (over the candidates ``valid``, as always); from there on
        over the list's uniform sample (:func:`~recstream.retrieval.scale_sample`, the rows a
        two-stage list scores besides its candidates) on *both* paths. A two-stage list cannot
        see the whole catalogue's minimum, and a floor taken from its sample is higher, which
        narrows those signals' spread and made them outweigh popularity next to the exact
        path (candidate recall, BENCHMARKS.md): one floor for both paths scores alike."""
        c = self.config
        n = len(self.index)
        if n < c.retrieval_min_items or not c.retrieval_sample:
            return None
        seed = self.retrieval.seed if self.retrieval is not None else self.seed
        drawn = scale_sample(n, seed, self.n_events, c.retrieval_sample)
        if rows is None:
            floor = np.zeros(valid.shape[0], dtype=bool)
            floor[drawn[drawn < floor.shape[0]]] = True
        else:
            floor = isin_rows(rows, drawn)
        floor &= valid
        return floor if floor.any() else None
