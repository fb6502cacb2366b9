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

import numpy as np

__all__ = ["reserve_new_items"]


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
