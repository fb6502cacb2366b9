"""Two-stage lists (recstream/retrieval.py) against the exact full-catalogue path."""

from __future__ import annotations

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.events import Event, Item
from recstream.recommender import Recommender, RecommenderConfig


@pytest.fixture(scope="module")
def shop():
    items, events = synthetic_stream(n_users=40, n_items=60, n_events=2000, seed=5)
    vectors = np.random.default_rng(1).normal(size=(len(items), 16)).astype(np.float32)
    return items, events, vectors


def model(shop, **config) -> Recommender:
    items, _, vectors = shop
    rec = Recommender(RecommenderConfig(**config), seed=7)
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    return rec


def lists(rec: Recommender, events, every: int = 20, start: int = 300) -> list:
    out = []
    for n, e in enumerate(events):
        if n % every == 0 and n >= start:
            mode = "seen" if n % 40 else "purchased"
            out.append([(r.item_id, r.reason) for r in rec.recommend(e.user_id, 10, exclude=mode)])
        rec.learn(e)
    return out


@pytest.mark.parametrize("ranker", ["fixed", "learned"])
def test_sources_covering_the_catalogue_give_the_exact_lists(shop, ranker):
    # 60 items: the exact-scan indexes return every row, so the candidates are every valid
    # row and the two paths score the same rows on the same scales (from event 300 on: before,
    # items nobody counted yet tie at 0 for a new user, and the exact path's lowest rows are
    # not in any pool)
    exact = lists(model(shop, ranker=ranker), shop[1])
    staged = model(shop, ranker=ranker, retrieval="two_stage", retrieval_index="exact")
    assert staged.two_stage_active()
    assert lists(staged, shop[1]) == exact


@pytest.mark.parametrize("ranker", ["fixed", "learned"])
def test_above_the_threshold_both_paths_floor_on_the_same_sample(shop, ranker):
    """From retrieval_min_items rows on, a min-max signal's 0 is the minimum over the list's
    uniform sample on both paths (Recommender._scale_floor): the exact path still gives the
    lists of a two-stage path whose sources cover the catalogue, and those lists differ from
    the ones floored on every row."""
    above = {"ranker": ranker, "retrieval_min_items": 50, "retrieval_sample": 20}
    exact = model(shop, retrieval="exact", **above)
    staged = model(shop, retrieval="two_stage", retrieval_index="exact", **above)
    assert exact._scale_floor(exact.index.active, None) is not None
    exact_lists = lists(exact, shop[1])
    assert lists(staged, shop[1]) == exact_lists
    # the floor matters: below the threshold (every row's minimum) the lists are others
    below = model(shop, retrieval="exact", ranker=ranker, retrieval_min_items=1000)
    assert below._scale_floor(below.index.active, None) is None
    assert lists(below, shop[1]) != exact_lists


def test_the_floor_is_the_sample_minimum(shop):
    rec = model(shop, retrieval="exact", retrieval_min_items=50, retrieval_sample=5)
    for e in shop[1][:400]:
        rec.learn(e)
    user = shop[1][399].user_id
    valid = rec._candidates(rec.users.get(user), "purchased")
    floor = rec._scale_floor(valid, None)
    assert 0 < floor.sum() <= 5 and not (floor & ~valid).any()
    mf = rec._signals(user, valid)["mf"]
    raw = rec.mf.score(user)
    lo, hi = raw[floor].min(), raw[valid].max()
    assert lo > raw[valid].min()  # the sample misses the lowest row: the two floors differ
    np.testing.assert_allclose(mf, (raw - lo) / (hi - lo), rtol=1e-6)


def test_scores_match_the_exact_path(shop):
    exact, staged = model(shop), model(shop, retrieval="two_stage", retrieval_index="exact")
    for rec in (exact, staged):
        for e in shop[1][:500]:
            rec.learn(e)
    user = shop[1][499].user_id
    a, b = exact.recommend(user, 10), staged.recommend(user, 10)
    assert [r.item_id for r in a] == [r.item_id for r in b]
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], rtol=1e-5)


def test_a_two_stage_list_never_scores_the_whole_catalogue(shop, monkeypatch):
    rec = model(shop, retrieval="two_stage", retrieval_index="exact")
    for e in shop[1][:300]:
        rec.learn(e)

    def whole_catalogue(*args, **kwargs):
        raise AssertionError("a catalogue-sized pass in a two-stage list")

    monkeypatch.setattr(rec.covisit, "score", whole_catalogue)
    monkeypatch.setattr(rec.covisit, "score_from", whole_catalogue)
    monkeypatch.setattr(rec.mf, "score", whole_catalogue)
    monkeypatch.setattr(rec.popularity, "values", whole_catalogue)
    monkeypatch.setattr(rec.fresh, "values", whole_catalogue)
    monkeypatch.setattr(rec.index, "similarity", whole_catalogue)
    monkeypatch.setattr(rec, "_candidates", whole_catalogue)
    assert len(rec.recommend(shop[1][299].user_id, 10)) == 10
    assert len(rec.recommend("nobody", 10)) == 10


def test_hnsw_lists_agree_with_exact_on_a_larger_catalogue():
    items, events = synthetic_stream(n_users=150, n_items=3000, n_events=6000, seed=11)
    vectors = np.random.default_rng(2).normal(size=(len(items), 32)).astype(np.float32)
    shop = (items, events, vectors)
    # the fixed weights: a learned ranker steps on each path's own candidates, so the two
    # models' weights (and lists) drift apart for reasons that are not the retrieval's
    exact = model(shop, ranker="fixed")
    staged = model(shop, ranker="fixed", retrieval="two_stage", retrieval_index="hnsw")
    overlap = []
    for n, e in enumerate(events):
        if n % 50 == 0 and n > 1000:
            a = {r.item_id for r in exact.recommend(e.user_id, 10)}
            b = {r.item_id for r in staged.recommend(e.user_id, 10)}
            overlap.append(len(a & b) / 10)
        exact.learn(e)
        staged.learn(e)
    assert np.mean(overlap) >= 0.9, np.mean(overlap)


def test_deleted_items_leave_the_candidates(shop):
    rec = model(shop, retrieval="two_stage", retrieval_index="exact")
    for e in shop[1][:300]:
        rec.learn(e)
    user = shop[1][299].user_id
    top = rec.recommend(user, 10)[0].item_id
    rec.upsert_item(Item(top, deleted=True))
    assert top not in {r.item_id for r in rec.recommend(user, 10)}
    rec.upsert_item(Item(top, title="back"))
    assert top in {r.item_id for r in rec.recommend(user, 60)}


def test_merged_deltas_reach_the_popular_pool():
    a = Recommender(RecommenderConfig(retrieval="two_stage", retrieval_index="exact"))
    b = Recommender(RecommenderConfig(retrieval="two_stage", retrieval_index="exact"))
    for rec in (a, b):
        for i in range(30):
            rec.upsert_item(Item(f"i{i}"))
        rec.track_item_deltas()
    for n in range(20):  # a learns that i29 is popular; b only hears it through the delta
        a.learn(Event(f"e{n}", f"u{n}", "i29", "purchase", float(n)))
    b.apply_item_delta(a.item_delta())
    assert b.recommend("nobody", 1)[0].item_id == "i29"


def test_auto_switches_at_the_configured_catalogue_size(shop):
    rec = model(shop, retrieval="auto", retrieval_index="exact", retrieval_min_items=61)
    assert not rec.two_stage_active()
    rec.upsert_item(Item("one-more"))
    assert rec.two_stage_active()


def test_a_two_stage_model_saves_and_loads(shop, tmp_path):
    rec = model(shop, retrieval="two_stage", retrieval_index="hnsw")
    for e in shop[1][:300]:
        rec.learn(e)
    rec.save(tmp_path / "m.pkl")
    loaded = Recommender.load(tmp_path / "m.pkl")
    user = shop[1][299].user_id
    assert [r.item_id for r in loaded.recommend(user, 10)] == [
        r.item_id for r in rec.recommend(user, 10)
    ]


def test_the_exact_setting_keeps_the_model_version():
    exact = RecommenderConfig(retrieval="exact")
    assert exact.digest() == RecommenderConfig(retrieval="exact", retrieval_min_items=5).digest()
    assert exact.digest() != RecommenderConfig(retrieval="two_stage").digest()
    # the default ("auto") names its retrieval settings: above the threshold its lists differ
    assert RecommenderConfig().retrieval == "auto" and RecommenderConfig().digest() not in (
        exact.digest(),
        RecommenderConfig(retrieval_min_items=5).digest(),
    )
    with pytest.raises(ValueError, match="retrieval"):
        RecommenderConfig(retrieval="fast")


def test_the_ranker_steps_only_on_an_item_the_two_stages_gathered(shop, monkeypatch):
    """An item the gathering missed could not have been shown: no step (adding it to the
    gathered rows taught the ranker to tell an added row from gathered ones)."""
    from recstream.events import Event

    rec = model(shop, retrieval="two_stage", retrieval_index="exact")
    for e in shop[1][:500]:
        rec.learn(e)
    user = shop[1][499].user_id
    seen = rec.users.get(user).seen
    target = next(i for i in rec.index.ids if rec.index.rows[i] not in seen)
    row = rec.index.rows[target]
    gather = rec.retrieval.gather
    calls = []

    def without_target(r, user_id, mode):
        calls.append(user_id)
        rows = gather(r, user_id, mode)
        return rows[rows != row]

    monkeypatch.setattr(rec.retrieval, "gather", without_target)
    steps, w = rec.ranker.n_steps, rec.ranker.w.copy()
    rec.learn(Event("x1", user, target, "purchase", 1e9))
    assert calls and rec.ranker.n_steps == steps and np.array_equal(rec.ranker.w, w)

    monkeypatch.setattr(rec.retrieval, "gather", lambda r, u, m: np.union1d(gather(r, u, m), [row]))
    other = next(i for i in rec.index.ids if rec.index.rows[i] not in rec.users.get(user).seen)
    row = rec.index.rows[other]
    rec.learn(Event("x2", user, other, "purchase", 1e9 + 1))
    assert rec.ranker.n_steps == steps + 1


def test_the_content_index_stores_i8_and_older_models_keep_theirs(shop):
    rec = model(shop, retrieval="two_stage", retrieval_index="hnsw")
    assert (rec.retrieval.content.dtype, rec.retrieval.content.metric) == ("i8", "cos")
    assert rec.retrieval.mf is None or rec.retrieval.mf.dtype == "f32"  # not unit vectors
    f32 = model(shop, retrieval="two_stage", retrieval_index="hnsw", retrieval_content_dtype="f32")
    assert f32.retrieval.content.dtype == "f32"
    assert f32.config.digest() != rec.config.digest()
    old = RecommenderConfig()  # as pickled before the setting: no value of its own
    del old.__dict__["retrieval_content_dtype"]
    assert old.digest() == "932c7bae" != RecommenderConfig().digest()  # its version then
    with pytest.raises(ValueError, match="retrieval_content_dtype"):
        RecommenderConfig(retrieval_content_dtype="i4")


def test_i8_item_vectors_score_the_same_lists(shop):
    f32 = model(shop, retrieval="two_stage", retrieval_index="hnsw")
    i8 = model(shop, retrieval="two_stage", retrieval_index="hnsw", item_vector_dtype="i8")
    assert i8.index._vectors.dtype == np.int8 and f32.index._vectors.dtype == np.float32
    a, b = lists(f32, shop[1]), lists(i8, shop[1])
    same = [len({i for i, _ in x} & {i for i, _ in y}) for x, y in zip(a, b, strict=True)]
    assert len(same) > 50 and np.mean(same) >= 9.0, same  # rounding may swap near ties
    assert i8.config.digest() != f32.config.digest()
    default = RecommenderConfig(retrieval="two_stage", retrieval_index="hnsw")
    assert f32.config.digest() == default.digest()  # "f32": the version from before
    with pytest.raises(ValueError, match="item_vector_dtype"):
        RecommenderConfig(item_vector_dtype="f16")


def test_the_worker_setting_reaches_the_model():
    from recstream.config import Settings

    settings = Settings.from_env({"RECSTREAM_ITEM_VECTOR_DTYPE": "i8"})
    assert settings.recommender_config().item_vector_dtype == "i8"
    assert Settings.from_env({}).recommender_config().item_vector_dtype == "f32"
    with pytest.raises(ValueError, match="RECSTREAM_ITEM_VECTOR_DTYPE"):
        Settings.from_env({"RECSTREAM_ITEM_VECTOR_DTYPE": "f16"})
