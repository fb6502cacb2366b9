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
    # (row, weight, clock) of every count since the last export_delta(); None: not tracking
    # (the class default also covers models pickled before deltas existed)
    _journal: list[tuple[int, float, float]] | None = None

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
        if self._journal is not None:
            self._journal.append((row, weight, self._t))
        if self.half_life is None:
            self._scores[row] += weight
            return
        self._scores[row] += weight * 2.0 ** self._frame_exponent()

    def _frame_exponent(self) -> float:
        """The clock's exponent in this counter's frame (values are stored inflated by
        ``2 ** ((t - t_ref) / half_life)``), the frame rescaled first when it would overflow."""
        if self._t_ref is None:
            self._t_ref = self._t
        exponent = (self._t - self._t_ref) / self.half_life
        if exponent > _MAX_EXPONENT:
            self._scores *= 2.0 ** (-exponent)
            self._t_ref = self._t
            exponent = 0.0
        return exponent

    # -- item deltas (recstream.deltas): replicas that count different users' events ----------
    def track_deltas(self) -> None:
        """Record counts from now on, for :meth:`export_delta` (idempotent)."""
        if self._journal is None:
            self._journal = []

    def export_delta(self) -> dict:
        """What was counted since the last export (or :meth:`track_deltas`): per item id the
        decayed sum as of this counter's clock ``at`` (format: :mod:`recstream.deltas`).

        >>> a, b = Popularity(half_life=2), Popularity(half_life=2)
        >>> a.track_deltas()
        >>> a.add(a.index.add("x"), 1.0, 1.0)
        >>> a.add(a.index.add("x"), 1.0, 3.0)
        >>> d = a.export_delta()
        >>> d["items"], d["values"].tolist(), d["at"]
        (['x'], [1.5], 3.0)
        >>> _ = b.merge_delta(d)
        >>> b.values(5.0).tolist() == a.values(5.0).tolist() == [0.75]
        True
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        self._journal = []
        rows = np.fromiter((r for r, _, _ in journal), dtype=np.int64, count=len(journal))
        values = np.fromiter((w for _, w, _ in journal), dtype=np.float64, count=len(journal))
        if self.half_life is not None:
            stamps = np.fromiter((t for *_, t in journal), dtype=np.float64, count=len(journal))
            values = values * 2.0 ** (-(self._t - stamps) / self.half_life)
        uniq, inverse = np.unique(rows, return_inverse=True)
        ids = self.index.ids
        return {
            "items": [ids[r] for r in uniq.tolist()],
            "values": np.bincount(inverse, values, minlength=uniq.size),
            "at": self._t,
            "half_life": self.half_life,
        }

    def merge_delta(self, delta: dict, *, combine: str = "sum") -> np.ndarray:
        """Merge another counter's :meth:`export_delta`; returns the rows it touched.

        ``combine="sum"`` adds the counts. ``"min"`` is for counters of one unit mark per item
        (the fresh-item prior): an item keeps the earlier of its local and merged marks.
        """
        if combine not in ("sum", "min"):
            raise ValueError(f"combine must be 'sum' or 'min', got {combine!r}")
        if delta["half_life"] != self.half_life:
            raise ValueError(f"half-life {delta['half_life']} != this counter's {self.half_life}")
        items = delta["items"]
        if not items:
            return np.zeros(0, dtype=np.int64)
        rows = np.fromiter((self.index.add(i) for i in items), dtype=np.int64, count=len(items))
        self._scores = grow(self._scores, len(self.index))
        values = np.asarray(delta["values"], dtype=np.float64)
        at = float(delta["at"])
        self._t = max(self._t, at)
        if self.half_life is not None:
            # into this counter's frame: values inflated by 2 ** ((at - t_ref) / half_life),
            # rescaled first when the inflation would overflow, exactly as add() does
            self._frame_exponent()
            values = values * 2.0 ** ((at - self._t_ref) / self.half_life)
        if combine == "sum":
            self._scores[rows] += values
        else:
            local = self._scores[rows]
            self._scores[rows] = np.where(local > 0, np.minimum(local, values), values)
        return rows

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

    def values_at(self, rows: np.ndarray, now: float) -> np.ndarray:
        """:meth:`values` at ``rows`` only (0 past the counted rows): O(len(rows)), for a
        list that scores a few candidates of a large catalogue."""
        rows = np.asarray(rows, dtype=np.int64)
        self._scores = grow(self._scores, len(self.index))  # amortised: doubles when it grows
        out = self._scores[rows]
        if self.half_life is None or self._t_ref is None:
            return out
        return out * 2.0 ** (-(max(now, self._t) - self._t_ref) / self.half_life)

    def frame_total(self, row: int) -> tuple[float | None, float]:
        """``(frame, total)``: ``row``'s count stored inflated in the current frame. Totals of
        one frame compare as the decayed values do (every row decays alike) and only grow, so
        a top-N pool can follow them per event; a new ``frame`` (a rescale) invalidates it."""
        total = float(self._scores[row]) if row < self._scores.shape[0] else 0.0
        return self._t_ref, total

    def frame_totals(self) -> tuple[float | None, np.ndarray]:
        """``(frame, totals)``: :meth:`frame_total` of every row (a read-only view)."""
        n = len(self.index)
        self._scores = grow(self._scores, n)
        return self._t_ref, self._scores[:n]
