"""ImplicitMFRanker: the implicit MF as a River estimator (River's checks, its reco API)."""

import pickle

import numpy as np
import pytest
from river import checks, reco

from recstream.events import Event
from recstream.mf import ImplicitMF, ImplicitMFRanker

TWO_GROUPS = [
    ("u1", "a"),
    ("u1", "b"),
    ("u2", "a"),
    ("u2", "b"),
    ("u3", "c"),
    ("u3", "d"),
    ("u4", "c"),
    ("u4", "d"),
    ("u5", "a"),
    ("u6", "c"),
] * 40


def _river_checks():
    """(params, check) for every River estimator check of every _unit_test_params set."""
    for params in ImplicitMFRanker._unit_test_params():
        model = ImplicitMFRanker(**params)
        for check in checks.yield_checks(model):
            if check.__name__ not in model._unit_test_skips():
                yield pytest.param(params, check, id=f"{check.__name__}-{sorted(params.items())}")


def test_river_runs_its_ranker_checks():
    # The check that exercises rank/learn_one is among them: the class is a River Ranker.
    names = {c.__name__ for c in checks.yield_checks(ImplicitMFRanker())}
    assert "check_reco_routine" in names and isinstance(ImplicitMFRanker(), reco.base.Ranker)
    assert "check_clone_with_new_params_applies" in names


@pytest.mark.parametrize(("params", "check"), list(_river_checks()))
def test_river_estimator_checks(params, check):
    model = ImplicitMFRanker(**params)
    check(model.clone())


def learned(**kwargs) -> ImplicitMFRanker:
    mf = ImplicitMFRanker(n_factors=8, lr=0.05, n_negatives=2, seed=3, **kwargs)
    for user, item in TWO_GROUPS:
        mf.learn_one(user, item, 1.0)
    return mf


@pytest.mark.parametrize("engine", ["numpy", "river"])
def test_learns_co_preferences_through_river_api(engine):
    mf = learned(engine=engine)
    assert mf.rank("u5", {"b", "d"}) == ["b", "d"]
    assert mf.rank("u6", ["b", "d"]) == ["d", "b"]
    assert mf.predict_one("u5", "b") > mf.predict_one("u5", "d")


def test_rank_agrees_with_predict_one_and_keeps_unknown_items():
    mf = learned()
    items = ["a", "b", "c", "d", "never-seen"]
    by_predict = sorted(items, key=lambda i: mf.predict_one("u5", i), reverse=True)
    assert mf.rank("u5", items) == by_predict
    assert set(mf.rank("nobody", items)) == set(items)
    assert mf.rank("u5", []) == []


def test_predict_one_of_unknowns():
    mf = learned()
    mu = mf.global_mean.get()
    assert mf.predict_one("nobody", "nothing") == pytest.approx(mu)
    u = mf._user_rows["u1"]
    assert mf.predict_one("u1", "nothing") == pytest.approx(mu + mf._bu[u])
    assert "nothing" not in mf.index  # predicting creates nothing


def test_zero_target_is_one_explicit_negative_step():
    mf = learned()
    before = mf.item_factors.copy()
    n_mean = mf.global_mean.n
    old = mf.predict_one("u5", "b")
    mf.learn_one("u5", "b", False)  # shown to u5 and passed over
    assert mf.predict_one("u5", "b") < old
    changed = np.flatnonzero(np.any(mf.item_factors != before, axis=1))
    assert changed.tolist() == [mf.index.row("b")]  # no sampled negatives with it
    assert mf.global_mean.n == n_mean + 1
    assert list(mf._seen["u5"]) == [mf.index.row("a")]  # a negative is not one of its positives


def test_positives_are_never_drawn_as_negatives_and_max_seen_bounds_memory():
    mf = ImplicitMFRanker(n_factors=4, n_negatives=3, max_seen=2, seed=1)
    for item in "abcdef":
        mf.learn_one("u1", item, 1.0)
    assert list(mf._seen["u1"]) == [mf.index.row("e"), mf.index.row("f")]
    mf.learn_one("u2", "a", 1.0)
    for _ in range(50):
        assert mf.index.row("a") not in mf._negatives("u2", mf.index.row("a"))
    assert mf.forget_user("u1") and "u1" not in mf._seen
    no_user_terms = mf.global_mean.get() + mf._bi[mf.index.row("a")]
    assert mf.predict_one("u1", "a") == pytest.approx(no_user_terms)


def test_clone_is_fresh_and_independent():
    mf = learned()
    clone = mf.clone()
    assert clone.user_ids() == [] and len(clone.index) == 0
    assert clone._get_params() == mf._get_params()
    clone.learn_one("u1", "a", 1.0)
    assert mf.predict_one("u1", "a") != clone.predict_one("u1", "a")
    assert mf.clone({"n_factors": 3, "negative_pool": 7}).negative_pool == 7


def test_pickle_round_trip_keeps_predictions_and_learning():
    mf = learned()
    copy = pickle.loads(pickle.dumps(mf))
    assert copy.rank("u5", "abcd") == mf.rank("u5", "abcd")
    for m in (mf, copy):
        m.learn_one("u7", "c", 1.0)
    np.testing.assert_array_equal(copy.item_factors, mf.item_factors)


def test_same_seed_same_model():
    a, b, c = learned(), learned(), ImplicitMFRanker(n_factors=8, lr=0.05, n_negatives=2, seed=4)
    for user, item in TWO_GROUPS:
        c.learn_one(user, item, 1.0)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert not np.array_equal(a.item_factors, c.item_factors)


def test_hybrid_mf_is_the_same_river_ranker():
    """ImplicitMF (the hybrid's) and ImplicitMFRanker learn the same model from the same pairs;
    ImplicitMF adds the event API on top (its learn_one keeps no user-store bookkeeping)."""
    ranker = ImplicitMFRanker(n_factors=8, lr=0.05, n_negatives=0, seed=3)
    mf = ImplicitMF(n_factors=8, lr=0.05, n_negatives=0, seed=3)
    assert isinstance(mf, reco.base.Ranker)
    for n, (user, item) in enumerate(TWO_GROUPS):
        ranker.learn_one(user, item, 1.0)
        mf.learn(Event(f"e{n}", user, item, "purchase", float(n)))
    np.testing.assert_array_equal(ranker.item_factors, mf.item_factors)
    assert ranker.rank("u5", "abcd") == mf.rank("u5", "abcd")
    mf.learn_one("u9", "a", 1.0)
    assert mf.users.get("u9") is None and "u9" in mf.user_ids()


def test_invalid_engine():
    with pytest.raises(ValueError):
        ImplicitMFRanker(engine="torch")
