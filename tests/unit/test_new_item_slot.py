"""The new-item slot's list surgery, against a plain restatement on random lists."""

import numpy as np
import pytest

from recstream.new_item_slot import reserve_new_items


def reference(picked, total, new, slots):
    picked, new = list(picked), set(new)
    slots = min(slots, len(picked) - 1)
    need = slots - sum(p in new for p in picked)
    pool = sorted((p for p in new if p not in picked), key=lambda p: (-total[p], p))
    adds = pool[: max(need, 0)]
    out = list(picked)
    for _ in adds:  # each time: the lowest place not held by a new item goes
        victim = max(i for i, p in enumerate(out) if p not in new)
        out.pop(victim)
    return out + adds


@pytest.mark.parametrize("seed", range(200))
def test_matches_the_plain_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    total = rng.normal(size=n).round(1)  # rounded: ties happen
    k = int(rng.integers(1, n + 1))
    picked = np.argsort(-total, kind="stable")[:k]
    new = rng.choice(n, size=int(rng.integers(0, n)), replace=False)
    slots = int(rng.integers(0, 4))
    got = reserve_new_items(picked, total, new, slots).tolist()
    assert got == reference(picked.tolist(), total, new.tolist(), slots)
    assert len(got) == k and len(set(got)) == k


def test_a_list_of_one_keeps_its_best_item():
    total = np.array([1.0, 0.5])
    assert reserve_new_items(np.array([0]), total, np.array([1]), slots=1).tolist() == [0]
