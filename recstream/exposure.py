"""Beyond accuracy, for the prequential protocol: who gets exposure, and whether a list matches
the user's tastes.

* **Long-tail exposure** (popularity bias, Abdollahpouri et al. 2019): the *short head* is the
  smallest set of most-interacted items holding ``head_share`` (20 %) of all interactions so far;
  every other item is the *long tail*. A fair list gives the tail about the share of slots the
  tail has of interactions; a popularity-biased one gives it less. The head is recomputed from
  the counts every ``refresh_every`` events (a sort of the catalogue's counts: cheap at that
  rate, and it never looks ahead).
* **Calibration** (Steck 2018): the category distribution ``q`` of a list against ``p``, that of
  the user's history (each item's categories share its unit weight); miscalibration is
  ``KL(p || (1 - alpha) q + alpha p)``, 0 when the list mirrors the history, larger as it drifts
  (``alpha`` = 0.01 keeps it finite when the list misses a category).

>>> tail = LongTail(head_share=0.5, refresh_every=1)
>>> for item in ["a", "a", "a", "b", "c"]:
...     tail.learn(item)
>>> sorted(tail.head), tail.is_tail("a"), tail.is_tail("b")
(['a'], False, True)
>>> cal = Calibration({"x": ("drama",), "y": ("comedy",), "z": ("drama", "comedy")})
>>> cal.learn("u1", "x"); cal.learn("u1", "x")
>>> round(cal.miscalibration("u1", ["x"]), 4), round(cal.miscalibration("u1", ["y"]), 3)
(0.0, 4.605)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Calibration", "LongTail"]


class LongTail:
    """Which items are in the long tail now, from the interactions learned so far."""

    def __init__(self, head_share: float = 0.2, refresh_every: int = 1000) -> None:
        if not 0.0 < head_share < 1.0:
            raise ValueError(f"head_share must be in (0, 1), got {head_share}")
        self.head_share = head_share
        self.refresh_every = max(1, refresh_every)
        self.counts: Counter[str] = Counter()
        self.head: frozenset[str] = frozenset()
        self._since = 0

    def learn(self, item_id: str) -> None:
        self.counts[item_id] += 1
        self._since += 1
        if self._since >= self.refresh_every:
            self.refresh()

    def refresh(self) -> None:
        """The head: the most-interacted items until they hold ``head_share`` of the total."""
        self._since = 0
        if not self.counts:
            self.head = frozenset()
            return
        ids = list(self.counts)
        values = np.fromiter((self.counts[i] for i in ids), dtype=np.float64, count=len(ids))
        order = np.argsort(-values, kind="stable")  # ties: first learned first, reproducible
        cum = np.cumsum(values[order])
        n_head = int(np.searchsorted(cum, self.head_share * cum[-1])) + 1
        self.head = frozenset(ids[i] for i in order[:n_head])

    def is_tail(self, item_id: str) -> bool:
        return item_id not in self.head


class Calibration:
    """Per-user category histories and the miscalibration of a list against them."""

    def __init__(self, categories: Mapping[str, Sequence[str]], alpha: float = 0.01) -> None:
        self.categories = {i: tuple(c) for i, c in categories.items() if c}
        self.alpha = alpha
        self.history: dict[str, Counter[str]] = {}

    def learn(self, user_id: str, item_id: str) -> None:
        cats = self.categories.get(item_id)
        if not cats:
            return
        h = self.history.setdefault(user_id, Counter())
        for c in cats:
            h[c] += 1.0 / len(cats)

    def _distribution(self, item_ids: Sequence[str]) -> Counter[str]:
        q: Counter[str] = Counter()
        for i in item_ids:
            cats = self.categories.get(i, ())
            for c in cats:
                q[c] += 1.0 / len(cats)
        return q

    def miscalibration(self, user_id: str, item_ids: Sequence[str]) -> float | None:
        """``KL(p || q~)`` of the list against the user's history; None when either has no
        category (nothing to calibrate against)."""
        p = self.history.get(user_id)
        q = self._distribution(item_ids)
        if not p or not q:
            return None
        p_total, q_total = sum(p.values()), sum(q.values())
        a = self.alpha
        kl = 0.0
        for c, pc in p.items():
            pc /= p_total
            qc = (1 - a) * q.get(c, 0.0) / q_total + a * pc
            kl += pc * math.log(pc / qc)
        return kl
