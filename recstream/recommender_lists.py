"""A list from the model: its scope, scores, the new-item slot and the top K (a mixin of
:class:`recstream.recommender.Recommender`).

The scope is every item row (``retrieval="exact"``) or the candidates the two-stage path
gathers (:mod:`recstream.retrieval`); the scores are the fixed weighted sum of the signals
(:mod:`recstream.recommender_signals`) or the learned ranker's score of the features
(:mod:`recstream.features`); the top K may be re-ranked for diversity (MMR) and keep a slot for
a new item (:mod:`recstream.new_item_slot`). The model's state and its updates stay in
:mod:`recstream.recommender`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recstream.diversify import mmr
from recstream.events import ScoredItem
from recstream.features import feature_matrix
from recstream.index import isin_rows, top_k
from recstream.new_item_slot import reserve_new_items
from recstream.reasons import explain
from recstream.state import EXCLUDE_MODES

__all__ = ["ListScoring"]


class ListScoring:
    """Mixin; expects the Recommender's ``index``, ``users``, ``config``, ``covisit``,
    ``retrieval``, ``ranker``, ``new_items``, ``n_events``, ``exclude``, ``_feature_cache``,
    ``_weights`` and ``_signals``."""

    index: Any
    users: Any
    config: Any
    covisit: Any
    retrieval: Any
    ranker: Any
    n_events: int
    exclude: str
    _feature_cache: Any

    def two_stage_active(self) -> bool:
        """Whether lists gather candidates now (``retrieval`` and the catalogue's size)."""
        if self.retrieval is None or self.config.retrieval == "exact":
            return False
        if self.config.retrieval == "two_stage":
            return True
        return len(self.index) >= self.config.retrieval_min_items  # "auto" (rows, not active)

    def recommend(
        self, user_id: str, k: int = 10, *, exclude: str | None = None, reasons: bool = True
    ) -> list[ScoredItem]:
        """The ``k`` best items for ``user_id``, best first, each with a short reason
        (``reasons=False``: empty ones, for a caller that reads only the items and scores,
        such as the evaluation: ~5 % of its time)."""
        mode = exclude or self.exclude
        if mode not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {mode!r}")
        if len(self.index) == 0 or k <= 0:
            return []
        state = self.users.get(user_id)
        # the scope: every row (exact) or the gathered candidates (two-stage); positions below
        # index into it, `rows` maps them back to item rows
        rows = self.retrieval.gather(self, user_id, mode) if self.two_stage_active() else None
        new_rows = self._new_rows()  # once per list: the slot's candidates (rows)
        if rows is not None and new_rows.size:
            rows = self._with_new_rows(rows, new_rows, state, mode)
        valid = self._candidates(state, mode) if rows is None else np.ones(rows.size, bool)
        total, signals, weights = self._score(user_id, valid, mode, rows)
        diversity = getattr(self.config, "diversity", 0.0)  # pickles from before the knob
        if diversity and self.index.dim is not None:
            pool = top_k(total, max(k, self.config.diversity_pool), valid=valid)
            at = pool if rows is None else rows[pool]
            vectors, has = self.index.vectors_at(at), self.index.has_vector[at]
            picked = pool[mmr(np.arange(pool.size), total[pool], vectors, has, k, diversity)]
        else:
            picked = top_k(total, k, valid=valid)
        if new_rows.size and picked.size > 1:
            # rows of the catalogue -> positions in the scope, the valid ones
            new = new_rows if rows is None else np.flatnonzero(isin_rows(rows, new_rows))
            kept = reserve_new_items(picked, total, new[valid[new]], self.config.new_item_slots)
            if kept is not picked:  # the slot changed the list
                self.new_items.slot_lists += 1
            picked = kept
        items = picked if rows is None else rows[picked]
        if reasons:
            local = {name: s[picked] for name, s in signals.items()}
            texts = explain(self, items, user_id, state, local, weights, at=np.arange(picked.size))
        else:
            texts = [""] * picked.size
        ids = self.index.ids
        return [
            ScoredItem(ids[r], float(total[p]), reason)
            for r, p, reason in zip(items, picked, texts, strict=True)
        ]

    def _score(
        self, user_id: str, valid: np.ndarray, mode: str, rows: np.ndarray | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        """``(total, signals, weights)`` over the scope: the fixed weighted sum of the signals,
        or the learned ranker's score of the features (kept for its step on the next event)."""
        if self.ranker is None:
            weights = self._weights()
            signals = self._signals(user_id, valid, rows=rows)
            total = np.zeros(valid.shape[0], dtype=np.float64)
            for name, s in signals.items():
                total += weights[name] * s
            return total, signals, weights
        X, signals = feature_matrix(self, user_id, valid, self.ranker.features, rows=rows)
        weights = {name: self.ranker.weights.get(name, 0.0) for name in signals}
        total = self.ranker.score(X)
        if self._feature_cache is not None:  # the step on this user's next event reuses X
            # and the scores too, while the weights they were computed with are the ranker's
            w = self.ranker.w.copy()
            self._feature_cache.put((user_id, self.n_events, mode), (X, valid, rows, total, w))
        return total, signals, weights

    def _new_rows(self) -> np.ndarray:
        """The rows new now (recstream/new_item_slot.py); none with the slot off."""
        log = getattr(self, "new_items", None)  # pickles from before the slot: none
        if log is None:
            return np.zeros(0, dtype=np.int64)
        events = self.covisit.item_events(len(self.index))
        return log.rows(self.n_events, events, self.config.ranker_cold_events)

    def _with_new_rows(self, rows: np.ndarray, new: np.ndarray, state, mode: str) -> np.ndarray:
        """Two-stage candidates plus the new items ``new`` the gathering missed (a handful),
        so the slot does not depend on the fresh pool having kept them."""
        new = new[~isin_rows(new, rows) & self.index.active[new]]
        if new.size and state is not None:
            excluded = state.excluded(mode)
            new = np.array([r for r in new.tolist() if r not in excluded], dtype=np.int64)
        return np.concatenate([rows, new]) if new.size else rows

    def _candidates(self, state, mode: str) -> np.ndarray:
        """The rows that may be recommended: active items less the user's excluded ones."""
        valid = self.index.active.copy()
        if state is not None:
            excluded = state.excluded(mode)
            if excluded:
                valid[np.fromiter(excluded, dtype=np.intp, count=len(excluded))] = False
        return valid
