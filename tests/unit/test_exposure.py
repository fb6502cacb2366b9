"""Long-tail exposure and calibration (recstream/exposure.py) and their place in the protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.evaluate import build_model, evaluate
from recstream.exposure import Calibration, LongTail


def test_the_head_is_the_fewest_top_items_holding_the_share() -> None:
    tail = LongTail(head_share=0.2, refresh_every=10_000)
    counts = {"a": 50, "b": 30, "c": 10, "d": 5, "e": 5}  # 100 interactions
    for item, n in counts.items():
        for _ in range(n):
            tail.learn(item)
    assert tail.head == frozenset()  # not refreshed yet: no look-ahead between refreshes
    tail.refresh()
    assert tail.head == {"a"}  # 50 >= 20 % of 100
    tail.head_share = 0.6
    tail.refresh()
    assert tail.head == {"a", "b"}  # 50 < 60 <= 80
    assert [tail.is_tail(i) for i in "abcde"] == [False, False, True, True, True]
    with pytest.raises(ValueError):
        LongTail(head_share=1.0)


def test_miscalibration_is_zero_for_a_mirror_and_grows_with_drift() -> None:
    cats = {"x": ("drama",), "y": ("comedy",), "z": ("drama", "comedy"), "n": ()}
    cal = Calibration(cats)
    for item in ("x", "x", "y"):  # history: 2/3 drama, 1/3 comedy
        cal.learn("u", item)
    mirror = cal.miscalibration("u", ["x", "x", "y"])
    half = cal.miscalibration("u", ["z"])  # 1/2 - 1/2: a little off
    off = cal.miscalibration("u", ["y"])  # comedy only: far off
    assert mirror == pytest.approx(0.0, abs=1e-12)
    assert 0 < half < off
    p = np.array([2 / 3, 1 / 3])
    q = 0.99 * np.array([0.5, 0.5]) + 0.01 * p
    assert half == pytest.approx(float(np.sum(p * np.log(p / q))))
    assert cal.miscalibration("u", ["n"]) is None  # a list without categories
    assert cal.miscalibration("nobody", ["x"]) is None


def test_the_protocol_reports_exposure_against_interactions() -> None:
    items, events = synthetic_stream(n_users=30, n_items=40, n_events=1500, seed=3)
    pop = evaluate(build_model("popularity"), items, events, 10)
    knn = evaluate(build_model("covisit"), items, events, 10)
    for r in (pop, knn):
        assert 0 < r["long_tail_interactions"] < 1
        assert 0 <= r["long_tail_exposure"] <= 1
        assert math.isfinite(r["miscalibration"]) and r["miscalibration"] > 0
    # the same stream, so the same interactions; popularity shows the head more than item-kNN
    assert pop["long_tail_interactions"] == knn["long_tail_interactions"]
    assert pop["long_tail_exposure"] < knn["long_tail_exposure"]
    split = evaluate(build_model("covisit"), items, events, 10, split_at=700)
    parts = split["parts"]
    assert parts["tune"]["long_tail_interactions"] != parts["holdout"]["long_tail_interactions"]
    same = [k for k in knn if k not in ("events_per_s", "diversity")]  # no vectors: nan
    assert {k: split[k] for k in same} == {k: knn[k] for k in same}
