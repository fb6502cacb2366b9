"""A list slot kept for a new item, whatever the learned ranker thinks of new items.

A ranker learned from clicks and purchases sees new items picked only once people have found
them, so it can learn to rank an untouched item below every established one. On the synthetic
shop, with the ``category_taste`` feature, it did: the weight of content on new items went
negative and a brand-new item reached no list, not even after a view (docs/evaluation:
new_items.md). A shop needs its new items shown to learn anything about them, so this is a
policy, not a learned score: when none of a list's ``k`` items is *new*, its last
``new_item_slots`` places go to the best-scoring new candidates of that user.

*New* means published by the catalogue while the stream ran, within the last
``fresh_half_life`` events, with fewer than ``ranker_cold_events`` events so far. The slot
lasts until a few users have picked the item up; an item nobody wants stops being new after
one half-life. Not new:

* the catalogue a stream starts with;
* an item whose release time (``Item.ts``) is before the stream's first event: the starting
  catalogue read late (a fresh worker replaying the items topic beside a backlog of events);
* an old item's first event: on ml-latest-small (every film catalogued up front) counting an
  item as new from its first rating gave the slot to long-tail films and cost 3.8 % of
  held-out hr@10.

>>> import numpy as np
>>> total = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
>>> reserve_new_items(np.array([0, 1, 2]), total, np.array([3, 4]), slots=1).tolist()
[0, 1, 3]
>>> reserve_new_items(np.array([0, 3, 1]), total, np.array([3, 4]), slots=1).tolist()  # in already
[0, 3, 1]
>>> reserve_new_items(np.array([0, 1]), total, np.array([], dtype=int), slots=1).tolist()
[0, 1]
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["NewItems", "reserve_new_items"]


class NewItems:
    """The items the catalogue published while the stream ran, oldest first, for the slot.

    The model tells it of every event's time (:meth:`learned`) and every publication
    (:meth:`published`); :meth:`rows` gives the items new now. Entries older than the window
    are dropped at each publication and each read, so it holds one window's publications.

    >>> log = NewItems(window=10)
    >>> log.published(row=0, at=1, item_ts=5.0)  # before any event of this model: cannot tell
    >>> log.learned(100.0)
    >>> log.published(row=1, at=2, item_ts=50.0)  # released before the stream's first event
    >>> log.published(row=2, at=3, item_ts=0.0)  # no release time: new
    >>> log.published(row=3, at=4, item_ts=150.0)
    >>> log.rows(now=12, item_events=np.array([0, 0, 0, 9]), cold_events=5).tolist()
    [2]
    >>> log.rows(now=15, item_events=np.zeros(4), cold_events=5).size  # past the window
    0
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.first_event_ts: float | None = None  # an item released before it is not new
        self.slot_lists = 0  # lists whose last places the slot gave to new items
        self._published: deque[tuple[int, int]] = deque()  # (row, event count at publication)

    def __len__(self) -> int:
        return len(self._published)

    @property
    def published_rows(self) -> list[int]:
        return [row for row, _ in self._published]

    def learned(self, ts: float) -> None:
        if self.first_event_ts is None:
            self.first_event_ts = ts

    def published(self, row: int, at: int, item_ts: float) -> None:
        """``row`` published at event count ``at``, unless it is not new: released (its
        ``item_ts`` says so) before the stream's first event, i.e. the catalogue the stream
        started with read late (a fresh worker replaying the items topic beside a backlog of
        events); or published before this model learned an event of its own (a group worker
        that merged others' item deltas first: it cannot tell). ``item_ts`` 0: no release time
        given."""
        first = self.first_event_ts
        if first is None or 0 < item_ts < first:
            return
        self._published.append((row, at))
        self._prune(at)

    def rows(self, now: int, item_events: np.ndarray, cold_events: int) -> np.ndarray:
        """Rows published within the window of event count ``now`` with fewer than
        ``cold_events`` events (``item_events`` by row): the new items."""
        self._prune(now)
        if not self._published:
            return np.zeros(0, dtype=np.int64)
        new = np.fromiter((r for r, _ in self._published), np.int64, len(self._published))
        return new[item_events[new] < cold_events]

    def _prune(self, now: int) -> None:
        published = self._published
        while published and now - published[0][1] > self.window:
            published.popleft()


def reserve_new_items(
    picked: np.ndarray, total: np.ndarray, new: np.ndarray, slots: int
) -> np.ndarray:
    """``picked`` (positions into ``total``, best first) with its last places given to the
    best-scoring of the positions ``new`` (the new candidates that may be recommended), so
    that at least ``slots`` of them are in it (fewer when fewer exist; a list of one keeps its
    best item). Returns ``picked`` itself when nothing changes, else a new array.

    New items are few (those published within one half-life), so this works on Python sets
    of a handful of positions: a list costs a few microseconds more, not an O(n) pass."""
    k = picked.size
    slots = min(slots, k - 1)
    if slots <= 0 or new.size == 0:
        return picked
    fresh = set(new.tolist())
    listed = picked.tolist()
    is_new = [p in fresh for p in listed]
    need = slots - sum(is_new)
    if need <= 0:
        return picked
    left = sorted(fresh.difference(listed))
    if not left:
        return picked
    score = dict(zip(left, total[left].tolist(), strict=True))
    best = sorted(left, key=lambda p: (-score[p], p))[:need]  # ties: the lower position
    # give up the lowest places held by items that are not new
    drop = {i for i in range(k - 1, -1, -1) if not is_new[i]}
    drop = set(sorted(drop, reverse=True)[: len(best)])
    kept = [p for i, p in enumerate(listed) if i not in drop]
    return np.array(kept + best, dtype=picked.dtype)
