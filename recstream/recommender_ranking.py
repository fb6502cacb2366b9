"""The learned ranker's step on an event (a mixin of :class:`recstream.recommender.Recommender`).

Test-then-learn: before the model learns a purchase, the ranker takes one step on it, the
purchased item against the candidates the user had (:mod:`recstream.ranker`,
docs/evaluation/ranker.md). This module decides which candidates and features the step sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recstream.events import Event
from recstream.features import feature_matrix

__all__ = ["RankerSteps"]


class RankerSteps:
    """Mixin; expects the Recommender's ``index``, ``users``, ``ranker``, ``config``,
    ``covisit``, ``retrieval``, ``n_events``, ``_feature_cache``, ``two_stage_active`` and
    ``_candidates``."""

    index: Any
    users: Any
    ranker: Any
    config: Any
    covisit: Any
    retrieval: Any
    n_events: int
    _feature_cache: Any

    def _learn_ranker(self, event: Event) -> None:
        """The ranker's step on ``event`` before the model learns it: its item against the
        candidates, the items the user had not touched (the protocol's ``exclude="seen"``).
        An item the user touched before (a purchase after its view) is no step: it was not
        among those candidates, and what brought the user back to it is not what ranks them.
        Two-stage: the candidates are the gathered ones; an item they miss is no step."""
        row = self.index.row(event.item_id)
        state = self.users.get(event.user_id)
        if row is None or not self.index.active[row] or self.ranker is None:
            return  # never recommendable yet: nothing a list could have shown
        if state is not None and row in state.seen:
            return
        X = scores = None
        cached = self._reusable_features(event.user_id)
        if cached is not None:
            X, mask, rows, scores, w = cached
            if not np.array_equal(w, self.ranker.w):
                scores = None  # the weights moved since (a merged delta): score again
        elif self.two_stage_active():  # type: ignore[attr-defined]
            rows = self.retrieval.gather(self, event.user_id, "seen")
            mask = np.ones(rows.size, dtype=bool)
        else:
            rows, mask = None, self._candidates(state, "seen")  # type: ignore[attr-defined]
        if rows is not None and not (rows == row).any():  # (np.isin: ~100 µs for a scalar)
            # Not gathered: no list could have shown it, so no step (as for an item the user
            # had touched). Adding it to the gathered rows taught the ranker what tells an
            # added item from gathered ones (held out on ml-latest-small hr@10 -1.4 %, cold
            # -11 % against exact; skipped: +0.9 % / +0.9 %)
            return
        if X is None:
            X, _ = feature_matrix(self, event.user_id, mask, self.ranker.features, rows=rows)
        positive = row if rows is None else int(np.searchsorted(rows, row))
        c = self.config
        weight = c.event_weights.get(event.type, 1.0)
        if self.covisit.item_events(row + 1)[row] < c.ranker_cold_events:  # any type, per item
            weight *= 1.0 + c.ranker_cold_boost
        self.ranker.learn_list(X, positive, mask, weight=weight, clock=self.n_events, scores=scores)

    def _reusable_features(self, user_id: str) -> tuple | None:
        """``(X, mask, rows, scores, weights)`` of the list just ranked for ``user_id`` at this
        state, taken from the cache; None when there is none to reuse. Only a "seen" list (the
        evaluation protocol's) holds exactly the features a fresh pass would give: a worker's
        "purchased" list scaled them over more candidates, and reusing it would make the model
        depend on how events were batched (one list per batch, not per event), so a replay
        after a restart would not learn the same weights."""
        cache = self._feature_cache
        if cache is None or cache.key is None or cache.key[:2] != (user_id, self.n_events):
            return None
        return cache.take(cache.key) if cache.key[2] == "seen" else None
