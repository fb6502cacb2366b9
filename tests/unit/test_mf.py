import pickle

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.events import Event
from recstream.mf import ISGD, ImplicitMF


def events(pairs, type_="purchase"):
    return [Event(f"e{n}", u, i, type_, float(n)) for n, (u, i) in enumerate(pairs)]


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


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
def test_learns_co_preferences_with_each_river_optimizer(optimizer):
    lr = {"sgd": 0.05, "adam": 0.005, "adagrad": 0.05}[optimizer]  # Adam steps are ~lr each
    mf = ImplicitMF(n_factors=8, lr=lr, n_negatives=2, optimizer=optimizer, seed=3)
    mf.add_items("abcdefgh")
    for e in events(TWO_GROUPS):
        mf.learn(e)
    assert mf.recommend("u5", k=1)[0].item_id == "b"
    assert mf.recommend("u6", k=1)[0].item_id == "d"
    assert mf.predict("u5", "b") > mf.predict("u5", "d")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
@pytest.mark.parametrize("bias", [True, False])
def test_numpy_engine_reproduces_river_exactly_without_negatives(optimizer, bias):
    stream = events(TWO_GROUPS[:60])
    kwargs = dict(n_factors=4, lr=0.05, l2=0.01, n_negatives=0, seed=5, optimizer=optimizer)
    kwargs["bias"] = bias  # BiasedMF, or FunkMF
    fast = ImplicitMF(engine="numpy", **kwargs)
    ref = ImplicitMF(engine="river", **kwargs)
    for e in stream:
        fast.learn(e)
        ref.learn(e)
    np.testing.assert_allclose(fast.item_factors, ref.item_factors, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.score("u1"), ref.score("u1"), rtol=1e-6)  # float32 ranking
    # ...and the mirror agrees with River's own predict_one
    river_model = ref._river
    assert ref.predict("u1", "c") == pytest.approx(river_model.predict_one("u1", "c"), rel=1e-9)


def test_river_engine_with_negatives_learns_too():
    mf = ImplicitMF(n_factors=8, lr=0.05, n_negatives=2, engine="river", seed=3)
    mf.add_items("abcdefgh")
    for e in events(TWO_GROUPS):
        mf.learn(e)
    assert mf.recommend("u5", k=1)[0].item_id == "b"


def test_graded_targets_and_ignored_types():
    mf = ImplicitMF(weights={"purchase": 1.0, "view": 0.0}, n_negatives=0)
    mf.learn(Event("e0", "u1", "a", "view", 0.0))
    assert mf.global_mean.n == 0  # weight 0: nothing learned...
    assert mf.users.get("u1").seen == {0}  # ...but the user state still knows the item


def test_exclusion_never_recommends_purchased_items():
    _, stream = synthetic_stream(n_users=30, n_items=40, n_events=1500, seed=2)
    mf = ImplicitMF(n_factors=8, seed=1)
    for e in stream:
        mf.learn(e)
    for user in {e.user_id for e in stream}:
        state = mf.users.get(user)
        bought = {mf.index.ids[r] for r in state.purchased}
        seen = {mf.index.ids[r] for r in state.seen}
        assert not bought & {r.item_id for r in mf.recommend(user, k=40)}
        assert not seen & {r.item_id for r in mf.recommend(user, k=40, exclude="seen")}


def test_same_seed_same_model_different_seed_different_model():
    _, stream = synthetic_stream(n_users=20, n_items=30, n_events=800, seed=4)

    def run(seed):
        mf = ImplicitMF(n_factors=8, seed=seed)
        for e in stream:
            mf.learn(e)
        return mf.item_factors.copy(), [r.item_id for r in mf.recommend("u1", k=10)]

    (f1, r1), (f2, r2), (f3, _) = run(11), run(11), run(12)
    np.testing.assert_array_equal(f1, f2)
    assert r1 == r2
    assert not np.array_equal(f1, f3)


def test_isgd_is_positive_only_funk_mf():
    isgd = ISGD(n_factors=4, seed=1)
    assert isgd.n_negatives == 0 and not isgd.bias
    for e in events(TWO_GROUPS):
        isgd.learn(e)
    isgd.learn(Event("v", "u5", "zzz", "view", 1e9))  # views are not positives for ISGD
    assert isgd.global_mean.n == len(TWO_GROUPS)
    assert isgd.recommend("u5", k=1)[0].item_id == "b"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ImplicitMF(engine="torch")
    with pytest.raises(ValueError):
        ImplicitMF(optimizer="rmsprop")


def test_score_at_and_item_vectors_at_agree_with_score():
    mf = ImplicitMF(n_factors=4, lr=0.05, n_negatives=2, seed=3)
    mf.add_items("abcdefgh")
    for e in events(TWO_GROUPS):
        mf.learn(e)
    rows = np.array([5, 0, 3])
    np.testing.assert_allclose(mf.score_at("u5", rows), mf.score("u5")[rows], rtol=1e-6)
    query = np.append(mf.user_vector("u5"), 1.0).astype(np.float32)
    np.testing.assert_allclose(mf.item_vectors_at(rows) @ query, mf.score("u5")[rows], rtol=1e-5)


def test_a_model_pickled_before_the_river_estimator_loads_and_learns():
    """Checkpoints hold ImplicitMF pickles: one written before the class became a River Ranker
    (no _seen, no _free_rows, no _n_user_rows in its state) loads and keeps working."""
    mf = ImplicitMF(n_factors=4, seed=1)
    for e in events(TWO_GROUPS[:50]):
        mf.learn(e)
    state = mf.__dict__.copy()
    for name in ("_free_rows", "_n_user_rows"):
        state.pop(name, None)
    old = ImplicitMF.__new__(ImplicitMF)
    old.__dict__.update(state)
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.negative_pool == 5000 and loaded._seen is None
    assert loaded.forget_user("u1")
    for e in events(TWO_GROUPS[50:]):
        loaded.learn(e)
    assert loaded.recommend("u5", k=1)[0].item_id == "b"
    assert loaded.rank("u5", ["d", "b"]) == ["b", "d"]


@pytest.mark.parametrize("engine", ["numpy", "river"])
def test_learn_shown_steps_passed_over_items_towards_zero(engine):
    mf = ImplicitMF(n_factors=4, lr=0.05, n_negatives=2, engine=engine, seed=3)
    mf.add_items("abcdefgh")
    for e in events(TWO_GROUPS):
        mf.learn(e)
    before = mf.item_factors.copy()
    n_mean = mf.global_mean.n
    old = {i: mf.predict("u5", i) for i in "bcd"}
    rows = [mf.index.row(i) for i in "bcdba"]  # u5 bought a: never a negative; b twice: once
    mf.learn_shown("u5", rows)
    assert mf.global_mean.n == n_mean + 3
    for item in "bcd":
        assert mf.predict("u5", item) < old[item]
    changed = np.flatnonzero(np.any(mf.item_factors != before, axis=1))
    assert sorted(changed.tolist()) == sorted(mf.index.row(i) for i in "bcd")
    mf.learn_shown("u5", [mf.index.row("a")])  # nothing left: no step at all
    assert mf.global_mean.n == n_mean + 3


def test_clones_are_fresh_with_the_same_settings():
    mf = ImplicitMF(n_factors=4, n_negatives=1, seed=3)
    isgd = ISGD(n_factors=4, lr=0.1, l2=0.02, types=("click", "purchase"), seed=3)
    for model in (mf, isgd):
        for e in events(TWO_GROUPS[:40]):
            model.learn(e)
    for model in (mf, isgd):
        clone = model.clone()
        assert len(clone.index) == 0 and clone.users.get("u1") is None and not clone.user_ids()
        assert clone.index is not model.index
        assert (clone.lr, clone.l2, clone.weights) == (model.lr, model.l2, model.weights)
        for e in events(TWO_GROUPS[:40]):  # what the original learned: the same model
            clone.learn(e)
        np.testing.assert_array_equal(clone.item_factors, model.item_factors)
    assert isgd._get_params()["lr"] == 0.1 and isgd.types == ("click", "purchase")
