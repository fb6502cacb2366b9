"""A list slot kept for a new item, whatever the learned ranker thinks of new items.

A ranker learned from clicks and purchases sees new items picked only once people have found
them, so it can learn to rank an untouched item below every established one. On the synthetic
shop, with the opt-in ``category_taste`` feature, it did: the weight of content on new items
went negative and a brand-new item reached no list, not even after a view (docs/evaluation:
ranker.md). A shop needs its new items shown to learn anything about them, so this is a
policy, not a learned score: when none of a list's ``k`` items is *new* (published by the
catalogue while the stream ran, within the last ``fresh_half_life`` events, fewer than
``ranker_cold_events`` events so far), its last
``new_item_slots`` places go to the best-scoring new candidates of that user. The slot lasts
until the item has been picked up by a few users; an item nobody wants stops being new after
one half-life. The catalogue a stream starts with is not new, and neither is an old item's
first event: on ml-latest-small (every film catalogued up front) counting an item as new from
its first rating gave the slot to long-tail films and cost 3.8 % of held-out hr@10.

>>> import numpy as np
>>> total = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
>>> new = np.array([False, False, False, True, True])
>>> reserve_new_items(np.array([0, 1, 2]), total, new, slots=1).tolist()  # 3 is the best new
[0, 1, 3]
>>> reserve_new_items(np.array([0, 3, 1]), total, new, slots=1).tolist()  # one is in already
[0, 3, 1]
>>> reserve_new_items(np.array([0, 1]), total, np.zeros(5, bool), slots=1).tolist()  # none new
[0, 1]
"""

from __future__ import annotations

import numpy as np

__all__ = ["reserve_new_items"]


def reserve_new_items(
    picked: np.ndarray, total: np.ndarray, new: np.ndarray, slots: int
) -> np.ndarray:
    """``picked`` (positions into ``total``, best first) with its last places given to the
    best-scoring positions where ``new`` is True, so that at least ``slots`` of them are in it
    (fewer when fewer new candidates exist; a list of one keeps its best item). ``new`` must be
    False wherever the position may not be recommended. Returns a new array, the same length."""
    k = picked.size
    slots = min(slots, k - 1)
    if slots <= 0:
        return picked
    have = int(np.count_nonzero(new[picked]))
    need = slots - have
    if need <= 0:
        return picked
    candidates = np.flatnonzero(new)
    candidates = candidates[~np.isin(candidates, picked)]
    if candidates.size == 0:
        return picked
    if candidates.size > need:
        best = np.argpartition(-total[candidates], need - 1)[:need]
        candidates = candidates[best]
    candidates = candidates[np.argsort(-total[candidates], kind="stable")]
    # give up the lowest places held by items that are not new
    keep = np.ones(k, dtype=bool)
    old_places = np.flatnonzero(~new[picked])[::-1][: candidates.size]
    keep[old_places] = False
    return np.concatenate([picked[keep], candidates])
