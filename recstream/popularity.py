"""Popularity: what everybody is buying now (time-decayed), and the plain purchase-count baseline.

The score of an item is the sum of the event-type weights of its events, each multiplied by
``0.5 ** (age / half_life)``. Age is measured on the chosen ``clock``: ``"events"`` (how many
events ago: independent of the traffic's time scale, the default) or ``"time"`` (seconds of event
time, ``Event.ts``). With ``half_life=None`` nothing decays: ``Popularity(weights={"purchase":
1.0}, half_life=None)`` is the classic "most purchased so far" baseline.

Decay costs O(1) per event: instead of shrinking every count, new events are *inflated* by
``2 ** (t / half_life)`` relative to a reference time, and the array is rescaled (and the reference
moved) before the factor can overflow. Ranking is unchanged by the common factor.

>>> from recstream.events import Event
>>> pop = Popularity(weights={"purchase": 1.0}, half_life=None)
>>> for n, (u, i) in enumerate([("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c")]):
...     pop.learn(Event(f"e{n}", u, i, "purchase", float(n)))
>>> [(r.item_id, r.score) for r in pop.recommend("u3", k=2)]
[('a', 2.0), ('b', 1.0)]
>>> [r.item_id for r in pop.recommend("u2", k=2)]  # never an item the user already purchased
['c']
>>> fresh = Popularity(half_life=2, clock="events")
>>> for n, i in enumerate(["a", "a", "a", "b", "b"]):
...     fresh.learn(Event(f"e{n}", "u1", i, "view", float(n)))
>>> [r.item_id for r in fresh.recommend("u9", k=2)]  # b is hotter now although a has more
['b', 'a']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recstream.events import Event
from recstream.index import ItemIndex, grow
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["Popularity"]

# 2**60 is far from float64's limit (2**1023) yet keeps precision: rescale past this exponent.
_MAX_EXPONENT = 60.0


class Popularity(StreamModel):
    """Time-decayed, event-type-weighted popularity.

    Parameters
    ----------
    weights
        Event-type weights; types missing from the mapping count 0.
    half_life
        Half-life on ``clock`` (events or seconds); ``None`` disables decay.
    clock
        ``"events"`` or ``"time"``.
    exclude
        ``"purchased"`` or ``"seen"``: which of the user's items are never recommended.
    index, users
        Share the item index / user store with other models (the hybrid does).
    """

    reason_text = "popular now"

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        half_life: float | None = 2000.0,
        clock: str = "events",
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        super().__init__(exclude=exclude, index=index, users=users)
        if clock not in ("events", "time"):
            raise ValueError(f"clock must be 'events' or 'time', got {clock!r}")
        if half_life is not None and half_life <= 0:
            raise ValueError("half_life must be > 0 or None")
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self.half_life = half_life
        self.clock = clock
        self._scores = np.zeros(0, dtype=np.float64)
        self._t_ref: float | None = None  # clock value at which the inflation factor is 1
        self._t = 0.0  # current clock value

    def _now(self, event: Event) -> float:
        return float(self.n_events) if self.clock == "events" else float(event.ts)

    def update(self, row: int, event: Event) -> None:
        """Count ``event`` (item at ``row``) without touching user state (used by the hybrid)."""
        self.add(row, self.weights.get(event.type, 0.0), self._now(event))

    def add(self, row: int, weight: float, now: float) -> None:
        """Add ``weight`` to ``row`` at clock value ``now`` (events or seconds)."""
        self._t = max(self._t, now)
        self._scores = grow(self._scores, row + 1)
        if weight == 0.0:
            return
        if self.half_life is None:
            self._scores[row] += weight
            return
        if self._t_ref is None:
            self._t_ref = self._t
        exponent = (self._t - self._t_ref) / self.half_life
        if exponent > _MAX_EXPONENT:
            self._scores *= 2.0 ** (-exponent)
            self._t_ref = self._t
            exponent = 0.0
        self._scores[row] += weight * 2.0**exponent

    def learn(self, event: Event) -> None:
        row, _ = self._observe(event)
        # _observe already advanced n_events; the event's own age is 0 on the events clock.
        self.update(row, event)

    def score(self, user_id: str | None = None) -> np.ndarray:
        """Decayed popularity of every row now (the same for every user)."""
        return self.values(self._t)

    def values(self, now: float) -> np.ndarray:
        """Popularity of every row at clock value ``now`` (>= the last event's), as
        "weighted events"; a new array."""
        n = len(self.index)
        self._scores = grow(self._scores, n)
        scores = self._scores[:n]
        if self.half_life is None or self._t_ref is None:
            return scores.copy()
        return scores * 2.0 ** (-(max(now, self._t) - self._t_ref) / self.half_life)
