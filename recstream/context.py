"""Context affinity: which items are touched in which context (time of day, device).

An event's context (``Event.context``, free-form in the public schema) is read for two keys:

* ``hour``: the time of day, in ``n_hour_buckets`` buckets of the day: ``context.local_hour``
  (0-23, the user's own clock) when the producer sends it, else the UTC hour of ``Event.ts``;
* ``device``: ``context.device`` (a short string such as ``"mobile"``), when present. The first
  ``max_devices`` names seen get a column each, later ones share ``"other"``: a producer cannot
  grow the model without bound.

Learning: per item, the event-type-weighted count of its events in each context value; per user,
the context of the user's latest event (the context the next list is shown in). Counts do not
decay: when in the day or on which device an item is wanted changes slowly, and plain sums keep
the item deltas exact.

Scoring: for the user's current value ``v`` of a key, each candidate's lift

    lift(j) = ((c(j, v) + a p(v)) / (n(j) + a)) / p(v)

the item's share of events in ``v`` over the share of every item's events in ``v`` (``p(v)``),
shrunk towards 1 by ``a = prior`` pseudo-events for items with few events. The score is
``log(lift)``: above 0 for items wanted more in this context than items are in general.

>>> from recstream.events import Event
>>> ctx = ContextAffinity(weights={"view": 1.0}, prior=1.0)
>>> stream = [("u1", "tv-show", "tv"), ("u2", "tv-show", "tv"), ("u3", "app", "mobile"),
...           ("u4", "app", "mobile"), ("u5", "tv-show", "mobile")]
>>> for n, (u, i, device) in enumerate(stream):
...     ctx.learn(Event(f"e{n}", u, i, "view", 0.0, {"device": device}))
>>> ctx.current("u1")
{'hour': '0', 'device': 'tv'}
>>> ctx.score("u1", "device").round(3).tolist()  # rows: tv-show (2 of 3 on a tv), app (0 of 2)
[0.405, -1.099]
>>> ctx.score("u1", "hour").tolist()  # every event in the same hour: no information
[0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from recstream.events import Event
from recstream.index import ItemIndex, grow
from recstream.state import DEFAULT_EVENT_WEIGHTS, StreamModel, UserStore

__all__ = ["CONTEXT_KEYS", "ContextAffinity"]

CONTEXT_KEYS = ("hour", "device")
_OTHER = "other"
_MAX_NAME = 32  # characters of a device name kept


class ContextAffinity(StreamModel):
    """Per-item counts by context value, and each user's current context (module docstring).

    Parameters
    ----------
    weights
        Event-type weights; types missing from the mapping count 0.
    n_hour_buckets
        Buckets of the day (a divisor of 24): 6 = four-hour slots.
    max_devices
        Device names with a column of their own; later names count as ``"other"``.
    prior
        Pseudo-events that shrink an item's context shares towards the overall ones.
    exclude, index, users
        See :class:`recstream.popularity.Popularity`.
    """

    reason_text = "popular in this context"
    # (row, cell name, weight) of every count since the last export_delta(); None: not tracking
    _journal: list[tuple[int, str, float]] | None = None

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        n_hour_buckets: int = 6,
        max_devices: int = 8,
        prior: float = 10.0,
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        super().__init__(exclude=exclude, index=index, users=users)
        if n_hour_buckets < 1 or 24 % n_hour_buckets:
            raise ValueError(f"n_hour_buckets must divide 24, got {n_hour_buckets}")
        if prior <= 0:
            raise ValueError(f"prior must be > 0, got {prior}")
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self.n_hour_buckets = n_hour_buckets
        self.max_devices = max_devices
        self.prior = prior
        self.cells: dict[str, int] = {}  # "key=value" -> column of _counts
        self._counts = np.zeros((0, 0), dtype=np.float64)  # (items, cells)
        self._user: dict[str, dict[str, str]] = {}  # user -> {key: value} of the latest event

    # -- reading an event's context ------------------------------------------------------------
    def context_of(self, event: Event) -> dict[str, str]:
        """The context values of ``event`` by key (``hour`` always, ``device`` when given)."""
        ctx = event.context or {}
        hour = ctx.get("local_hour")
        if not isinstance(hour, int | float) or isinstance(hour, bool) or not 0 <= hour < 24:
            hour = (event.ts / 3600.0) % 24.0 if math.isfinite(event.ts) else 0.0
        out = {"hour": str(int(hour) * self.n_hour_buckets // 24)}
        device = ctx.get("device")
        if isinstance(device, str) and device.strip():
            out["device"] = self._bounded("device=" + device.strip().lower()[:_MAX_NAME])[7:]
        return out

    def _bounded(self, cell: str) -> str:
        """``cell``, or ``device=other`` for a new device name past ``max_devices``."""
        if cell in self.cells or not cell.startswith("device="):
            return cell
        n_devices = sum(1 for name in self.cells if name.startswith("device="))
        return cell if n_devices < self.max_devices else "device=" + _OTHER

    def _column(self, cell: str) -> int:
        col = self.cells.get(cell)
        if col is None:
            col = self.cells[cell] = len(self.cells)
            grown = np.zeros((self._counts.shape[0], col + 1))
            grown[:, :col] = self._counts
            self._counts = grown
        return col

    # -- learning ----------------------------------------------------------------------------
    def learn(self, event: Event) -> None:
        row, _ = self._observe(event)
        self.update(event.user_id, row, event)

    def update(self, user_id: str, row: int, event: Event) -> None:
        """Count ``event`` (item at ``row``) and note the user's context (used by the hybrid)."""
        values = self.context_of(event)
        current = self._user.setdefault(user_id, {})
        current.update(values)  # a key the event lacks (device) keeps the user's last value
        w = self.weights.get(event.type, 0.0)
        if w:
            self._add(
                [row] * len(values), [f"{k}={v}" for k, v in values.items()], [w] * len(values)
            )
            if self._journal is not None:
                self._journal.extend((row, f"{k}={v}", w) for k, v in values.items())

    def _add(self, rows: list[int], cells: list[str], weights: list[float]) -> None:
        cols = [self._column(c) for c in cells]
        self._counts = grow(self._counts, len(self.index))
        np.add.at(self._counts, (np.asarray(rows, dtype=np.int64), cols), weights)

    # -- scoring -----------------------------------------------------------------------------
    def current(self, user_id: str) -> dict[str, str]:
        """The user's current context by key (empty for an unknown user)."""
        return dict(self._user.get(user_id, {}))

    def score(self, user_id: str, key: str = "hour", rows: np.ndarray | None = None) -> np.ndarray:
        """``log(lift)`` of every index row (``rows`` None) or of ``rows``, for the user's
        current value of ``key``; zeros when the user has none or nothing was counted in it."""
        n = len(self.index)
        size = n if rows is None else len(rows)
        value = self._user.get(user_id, {}).get(key)
        col = self.cells.get(f"{key}={value}")
        if col is None:
            return np.zeros(size)
        same_key = [c for name, c in self.cells.items() if name.startswith(key + "=")]
        counts = grow(self._counts, n)
        at = slice(0, n) if rows is None else np.asarray(rows, dtype=np.int64)
        in_value = counts[at, col]
        in_key = counts[at][:, same_key].sum(axis=1)
        total = float(counts[:, same_key].sum())
        if total <= 0:
            return np.zeros(size)
        share = float(counts[:, col].sum()) / total
        return np.log((in_value + self.prior * share) / (in_key + self.prior) / share)

    # -- portable user state -----------------------------------------------------------------
    def user_ids(self) -> list[str]:
        return list(self._user)

    def forget_user(self, user_id: str) -> bool:
        return self._user.pop(user_id, None) is not None

    def export_user(self, user_id: str) -> dict[str, str] | None:
        current = self._user.get(user_id)
        return None if current is None else dict(current)

    def import_user(self, user_id: str, current: Mapping[str, Any]) -> None:
        self._user[user_id] = {str(k): str(v) for k, v in current.items() if k in CONTEXT_KEYS}

    # -- item deltas (recstream.deltas) ------------------------------------------------------
    def track_deltas(self) -> None:
        """Record counts from now on, for :meth:`export_delta` (idempotent)."""
        if self._journal is None:
            self._journal = []

    def export_delta(self) -> dict:
        """The counts since the last export, as ``items`` and ``cells`` (names) with parallel
        ``item``, ``cell`` (positions) and ``count`` arrays; merged counts are not in it.

        >>> a, b = ContextAffinity(), ContextAffinity()
        >>> a.track_deltas()
        >>> a.learn(Event("e1", "u1", "x", "purchase", 3600.0 * 5, {"device": "tv"}))
        >>> d = a.export_delta()
        >>> d["items"], d["cells"], d["count"].tolist()
        (['x'], ['device=tv', 'hour=1'], [1.0, 1.0])
        >>> b.merge_delta(d)
        >>> b.cells, b.score("u2", "hour").tolist()  # u2: no context here yet
        ({'device=tv': 0, 'hour=1': 1}, [0.0])
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("call track_deltas() before export_delta()")
        self._journal = []
        rows = sorted({r for r, _, _ in journal})
        cells = sorted({c for _, c, _ in journal})
        item_at = {r: k for k, r in enumerate(rows)}
        cell_at = {c: k for k, c in enumerate(cells)}
        keys = np.fromiter(
            (item_at[r] * len(cells) + cell_at[c] for r, c, _ in journal), np.int64, len(journal)
        )
        weights = np.fromiter((w for _, _, w in journal), np.float64, len(journal))
        uniq, inverse = np.unique(keys, return_inverse=True)
        ids = self.index.ids
        return {
            "items": [ids[r] for r in rows],
            "cells": cells,
            "item": uniq // max(len(cells), 1),
            "cell": uniq % max(len(cells), 1),
            "count": np.bincount(inverse, weights, minlength=uniq.size),
        }

    def merge_delta(self, delta: dict) -> None:
        """Add another replica's :meth:`export_delta` (or a combination of several)."""
        items = delta["items"]
        if not items:
            return
        rows = [self.index.add(i) for i in items]
        cells = [self._bounded(c) for c in delta["cells"]]
        self._add(
            [rows[k] for k in np.asarray(delta["item"], dtype=np.int64).tolist()],
            [cells[k] for k in np.asarray(delta["cell"], dtype=np.int64).tolist()],
            np.asarray(delta["count"], dtype=np.float64).tolist(),
        )
