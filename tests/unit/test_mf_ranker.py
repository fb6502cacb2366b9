"""ImplicitMFRanker: the implicit MF as a River estimator (River's checks, its reco API)."""

import pickle
import random

import numpy as np
import pytest
from river import base, checks, reco
from river.checks import common

from recstream.events import Event
from recstream.index import ItemIndex
from recstream.mf import ISGD, ImplicitMF, ImplicitMFRanker

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


# The checks River's yield_checks gives a Ranker (river 0.26): the general ones and the reco
# routine. Its dataset checks (learn_one pure, seeding, clone independence, pickling after
# learning, bounded memory...) take (x, y) pairs; River makes data for a Ranker only if it is
# also a Regressor (none of River's own reco models is), so a Ranker gets none of them:
# test_river_dataset_checks runs them through an adapter instead.
RIVER_RANKER_CHECKS = {
    "check_repr",
    "check_str",
    "check_tags",
    "check_clone_same_class",
    "check_clone_is_idempotent",
    "check_init_has_default_params_for_tests",
    "check_init_default_params_are_not_mutable",
    "check_doc",
    "check_clone_changes_memory_addresses",
    "check_mutate_can_be_idempotent",
    "check_pickling_supports_roundtrip",
    "check_repr_roundtrips_clone",
    "check_clone_with_new_params_applies",
    "check_get_params_matches_signature",
    "check_reco_routine",
}
MODELS = (ImplicitMFRanker, ImplicitMF, ISGD)


def _river_checks():
    """(class, params, check) for every River check of every _unit_test_params set."""
    for cls in MODELS:
        for params in cls._unit_test_params():
            model = cls(**params)
            for check in checks.yield_checks(model):
                if check.__name__ not in model._unit_test_skips():
                    name = f"{cls.__name__}-{check.__name__}-{sorted(params.items())}"
                    yield pytest.param(cls, params, check, id=name)


@pytest.mark.parametrize("cls", MODELS)
def test_river_gives_a_ranker_its_general_checks_and_the_reco_routine(cls):
    assert isinstance(cls(), reco.base.Ranker)
    names = [c.__name__ for c in checks.yield_checks(cls())]
    assert set(names) == RIVER_RANKER_CHECKS  # River changed them: review this file's notes
    assert not cls()._unit_test_skips() & RIVER_RANKER_CHECKS  # nothing skipped


@pytest.mark.parametrize(("cls", "params", "check"), list(_river_checks()))
def test_river_estimator_checks(cls, params, check):
    check(cls(**params).clone())  # as river.checks.check_estimator calls them


class Unstored(ImplicitMFRanker):
    """Takes an argument it does not keep: clone() could not pass it on."""

    def __init__(self, n_factors: int = 4, width: int = 2) -> None:
        super().__init__(n_factors=n_factors)


class RanksNothing(ImplicitMFRanker):
    def rank(self, user, items, x=None):
        return []


def test_river_checks_fail_on_a_broken_estimator():
    with pytest.raises(AttributeError, match="width"):
        common.check_get_params_matches_signature(Unstored())
    with pytest.raises(IndexError):  # the reco routine takes rank(...)[0] and learns it
        checks.reco.check_reco_routine(RanksNothing())


class AsRegressor(base.Regressor):
    """A ranker seen as River's dataset checks see a model: learn_one(x, y), predict_one(x),
    with x = {"user": ..., "item": ...}."""

    def __init__(self, ranker: base.Estimator) -> None:
        self.ranker = ranker

    def learn_one(self, x: dict, y: float) -> None:
        self.ranker.learn_one(x["user"], x["item"], y)

    def predict_one(self, x: dict) -> float:
        return self.ranker.predict_one(x["user"], x["item"])


# River's own rating data for rankers (river.checks._yield_datasets), with 0s: "shown, passed".
RATINGS = [
    ("Alice", "Superman", 8),
    ("Alice", "Terminator", 9),
    ("Alice", "Star Wars", 8),
    ("Alice", "Notting Hill", 2),
    ("Alice", "Harry Potter", 5),
    ("Bob", "Superman", 8),
    ("Bob", "Terminator", 9),
    ("Bob", "Star Wars", 8),
    ("Bob", "Notting Hill", 2),
    ("Carol", "Notting Hill", 0),
    ("Carol", "Harry Potter", 7),
]
RIVER_DATASET_CHECKS = (
    common.check_learn_one,
    common.check_pickling,
    common.check_shuffle_features_no_impact,
    common.check_predict_one_pure,
    common.check_predict_one_before_any_learn,
    common.check_no_state_aliasing_with_input,
    common.check_clone_is_independent,
    common.check_seeding_is_idempotent,
)


def ratings(repeat: int = 3) -> list[tuple[dict, float]]:
    return [({"user": u, "item": i}, y / 10) for u, i, y in RATINGS] * repeat


def _dataset_checks():
    for cls in MODELS:
        for params in cls._unit_test_params():
            for check in RIVER_DATASET_CHECKS:
                name = f"{cls.__name__}-{check.__name__}-{sorted(params.items())}"
                yield pytest.param(cls, params, check, id=name)


@pytest.mark.parametrize(("cls", "params", "check"), list(_dataset_checks()))
def test_river_dataset_checks(cls, params, check):
    check(AsRegressor(cls(**params)).clone(), dataset=ratings())


@pytest.mark.parametrize("cls", MODELS)
def test_river_bounded_memory_check(cls):
    # River runs it on 10x its short streams: the same users and items again and again, so
    # what grows is only bounded buffers (recent positives, per-user seen sets).
    common.check_bounded_memory_growth(AsRegressor(cls(n_factors=4)), dataset=ratings(60))


class Unseeded(ImplicitMFRanker):
    """Draws its negatives without the seed."""

    def __init__(self, n_factors: int = 4, seed: int = 42) -> None:
        super().__init__(n_factors=n_factors, seed=seed)
        self._rng = random.Random()


SHARED_INDEX = ItemIndex()


class SharesItems(ImplicitMFRanker):
    """Every instance, clones included, adds its items to one module-level index."""

    def __init__(self, n_factors: int = 4) -> None:
        super().__init__(n_factors=n_factors)
        self.index = SHARED_INDEX


def test_river_dataset_checks_fail_on_a_broken_estimator():
    with pytest.raises(AssertionError):
        common.check_seeding_is_idempotent(AsRegressor(Unseeded()), dataset=ratings())
    with pytest.raises(AssertionError, match="mutated the clone"):
        common.check_clone_is_independent(AsRegressor(SharesItems()), dataset=ratings())


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
