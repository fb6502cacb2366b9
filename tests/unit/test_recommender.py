import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.events import Event, Item
from recstream.recommender import Recommender, RecommenderConfig


def ev(n, user, item, type_="purchase"):
    return Event(f"e{n}", user, item, type_, float(n))


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def synthetic():
    items, events = synthetic_stream(n_users=40, n_items=60, n_events=2500, seed=3)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items), 16)).astype(np.float32)
    return items, events, vectors


def trained(synthetic, seed=42, n=None, **config):
    items, events, vectors = synthetic
    rec = Recommender(RecommenderConfig(**config) if config else None, seed=seed)
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    for e in events[:n]:
        rec.learn(e)
    return rec


def test_upsert_delete_and_items_added_on_the_fly():
    rec = Recommender()
    assert rec.upsert_item(Item("a", "Alpha")) is True  # new
    assert rec.upsert_item(Item("a", "Alpha")) is False  # unchanged text
    assert rec.upsert_item(Item("a", "Alpha 2")) is True  # text changed: re-encode
    assert rec.upsert_item(Item("b", "Beta", deleted=True)) is False
    rec.learn(ev(0, "u1", "zz"))  # an unknown item is learned, but waits for its entry
    assert "zz" in rec.index and rec.stats()["n_items"] == 2  # b: deleted before it existed
    assert [r.item_id for r in rec.recommend("u9", k=10)] == ["a"]
    assert rec.upsert_item(Item("zz", "Zed")) is True  # catalogued: recommendable now
    assert {r.item_id for r in rec.recommend("u9", k=10)} == {"a", "zz"}
    rec.learn(ev(1, "u2", "a"))
    rec.delete_item("a")
    assert all(r.item_id != "a" for r in rec.recommend("u9", k=10))
    rec.learn(ev(2, "u3", "a"))  # a late event for a deleted item does not resurrect it
    assert all(r.item_id != "a" for r in rec.recommend("u9", k=10))
    assert rec.upsert_item(Item("a", "Alpha 2")) is False  # back, same text
    assert "a" in [r.item_id for r in rec.recommend("u9", k=10)]


def test_events_name_items_but_only_the_catalogue_makes_them_recommendable():
    rec = Recommender(RecommenderConfig(w_mf=0.0))
    rec.upsert_item(Item("real", "A real item"))
    junk = ["' OR 1=1 --", "junk-1", "junk-2"]
    for n, item_id in enumerate(["real", *junk, *junk]):
        rec.learn(ev(n, f"u{n}", item_id, "purchase"))
    assert [r.item_id for r in rec.recommend("new-user", k=10)] == ["real"]
    # the signal was learned all the same: once catalogued, "junk-1" is co-visited and popular
    rec.upsert_item(Item("junk-1", "Now in the catalogue"))
    assert {r.item_id for r in rec.recommend("new-user", k=10)} == {"real", "junk-1"}
    # shops without a catalogue feed opt in
    open_rec = Recommender(allow_unknown_items=True)
    open_rec.learn(ev(0, "u1", "anything"))
    assert [r.item_id for r in open_rec.recommend("u2", k=10)] == ["anything"]


def test_never_recommends_purchased_nor_seen_when_asked(synthetic):
    rec = trained(synthetic)
    _, events, _ = synthetic
    for user in sorted({e.user_id for e in events}):
        state = rec.users.get(user)
        bought = {rec.index.ids[r] for r in state.purchased}
        seen = {rec.index.ids[r] for r in state.seen}
        recs = rec.recommend(user, k=30)
        assert len(recs) == 30 and not bought & {r.item_id for r in recs}
        assert not seen & {r.item_id for r in rec.recommend(user, k=30, exclude="seen")}
        scores = [r.score for r in recs]
        assert scores == sorted(scores, reverse=True)
    assert Recommender(exclude="seen").exclude == "seen"
    with pytest.raises(ValueError):
        Recommender(exclude="all")
    with pytest.raises(ValueError):
        rec.recommend("u1", exclude="all")


def test_reasons_co_visitation_content_and_popularity():
    rec = Recommender(RecommenderConfig(w_mf=0.0, w_fresh=0.0))
    for item_id in ("a", "b"):
        rec.upsert_item(Item(item_id))
    for n, (u, i) in enumerate([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]):
        rec.learn(ev(n, u, i))
    rec.learn(ev(4, "u3", "a"))
    assert [(r.item_id, r.reason) for r in rec.recommend("u3", k=1)] == [
        ("b", "bought together with a")
    ]
    # a cold user gets popular items
    assert {r.reason for r in rec.recommend("nobody", k=2)} == {"popular now"}
    # a new item without any event is reached through its text vector
    rec.upsert_item(Item("new", "brand new"))
    rec.set_item_vectors(["a", "b", "new"], np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)]))
    rec.upsert_item(Item("x", "x"))
    rec.set_item_vectors(["x"], unit(0.05, 0, 1)[None, :])
    rec.learn(ev(5, "u4", "x", "view"))
    top = rec.recommend("u4", k=1, exclude="seen")[0]
    assert (top.item_id, top.reason) == ("new", "similar to x you viewed")


def test_profile_stats_and_model_version(synthetic):
    rec = trained(synthetic, n=500)
    user = synthetic[1][0].user_id
    profile = rec.user_profile(user)
    assert profile.dtype == np.float32 and profile.shape == (16,)
    assert np.linalg.norm(profile) == pytest.approx(1.0, abs=1e-5)
    assert rec.user_profile("nobody") is None
    stats = rec.stats()
    assert stats["n_events"] == 500 and stats["n_vectors"] == 60 and stats["n_items"] == 60
    assert stats["n_users"] == len({e.user_id for e in synthetic[1][:500]})
    version = rec.model_version
    rec.learn(synthetic[1][500])
    assert rec.model_version != version and rec.model_version.startswith("hybrid-")
    other = Recommender(RecommenderConfig(w_mf=0.5))
    assert other.model_version.split("-")[1] != Recommender().model_version.split("-")[1]


def test_seeded_runs_are_identical(synthetic):
    users = sorted({e.user_id for e in synthetic[1]})[:10]
    a, b = trained(synthetic, seed=7), trained(synthetic, seed=7)
    recs_a = [[(r.item_id, r.score, r.reason) for r in a.recommend(u)] for u in users]
    recs_b = [[(r.item_id, r.score, r.reason) for r in b.recommend(u)] for u in users]
    assert recs_a == recs_b
    c = trained(synthetic, seed=8)
    assert not np.array_equal(a.mf.item_factors, c.mf.item_factors)


def test_save_load_round_trip(tmp_path, synthetic):
    rec = trained(synthetic, n=2000)
    path = tmp_path / "sub" / "model.pkl"
    rec.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["model.pkl"]  # no temporary left
    loaded = Recommender.load(path)
    users = sorted({e.user_id for e in synthetic[1]})
    assert [rec.recommend(u) for u in users] == [loaded.recommend(u) for u in users]
    assert loaded.model_version == rec.model_version and loaded.stats() == rec.stats()
    for e in synthetic[1][2000:]:  # both keep learning identically
        rec.learn(e)
        loaded.learn(e)
    assert [rec.recommend(u) for u in users] == [loaded.recommend(u) for u in users]
    (tmp_path / "junk.pkl").write_bytes(b"not a model")
    with pytest.raises(Exception):  # noqa: B017 - any unpickling error is fine here
        Recommender.load(tmp_path / "junk.pkl")


def test_hybrid_beats_popularity_on_the_synthetic_stream():
    from recstream.evaluate import evaluate
    from recstream.popularity import Popularity

    # Only direct purchases (no view first) can be hits under the protocol: make them common.
    items, events = synthetic_stream(
        n_users=100, n_items=150, n_events=8000, seed=5, direct_purchase_share=0.6
    )
    hybrid = evaluate(Recommender(), items, events, k=10)
    popular = evaluate(Popularity(weights={"purchase": 1.0}, half_life=None), items, events)
    assert hybrid["evaluated"] == popular["evaluated"] > 500
    assert hybrid["hr@10"] > 1.5 * popular["hr@10"]


def test_fresh_items_released_mid_stream_are_boosted_before_any_event():
    config = RecommenderConfig(
        w_covisit=0, w_mf=0, w_content=0, w_popularity=0, w_fresh=1.0, ranker="fixed"
    )  # freshness alone (a learned ranker would step away from these weights)
    rec = Recommender(config)
    for i in ("old1", "old2"):
        rec.upsert_item(Item(i, i))  # the catalogue before the stream: not "fresh"
    rec.learn(ev(0, "u1", "old1"))
    rec.learn(ev(1, "u1", "old1", "view"))
    rec.upsert_item(Item("new", "new"))  # released while the stream runs
    for n in range(2, 5):
        rec.learn(ev(n, "u1", "old1", "view"))
    top = rec.recommend("u2", k=3)
    assert [r.item_id for r in top][:2] == ["new", "old1"]  # new appeared after old1's event
    assert top[0].reason == "new and trending"
    assert top[2].score == 0.0  # old2: in the catalogue, never seen
    rec.learn(ev(5, "u1", "old2"))  # its first event makes it the freshest
    assert rec.recommend("u2", k=1)[0].item_id == "old2"


@pytest.mark.parametrize("retrieval", ["exact", "two_stage"])
def test_a_list_keeps_its_last_place_for_a_new_item_until_people_find_it(synthetic, retrieval):
    """A ranker told to dislike fresh items still shows the new one, last; the catalogue the
    stream started with is never "new", and slots=0 gives the lists as scored."""
    _, events, vectors = synthetic
    models = {}
    for slots in (0, 1):
        config = dict(ranker="fixed", w_fresh=-5.0, retrieval=retrieval, new_item_slots=slots)
        rec = trained(synthetic, n=1500, **config)
        assert not rec._new_rows().size  # none published
        rec.upsert_item(Item("brand-new", "brand-new"))  # released while the stream runs
        rec.set_item_vectors(["brand-new"], vectors[:1])
        # read late, but released (ts) before the stream's first event: not new
        rec.upsert_item(Item("old-but-late", "old-but-late", ts=events[0].ts - 1.0))
        rec.set_item_vectors(["old-but-late"], vectors[1:2])
        models[slots] = rec
    users = sorted({e.user_id for e in events[:1500]})[:10]
    for u in users:
        scored = [r.item_id for r in models[0].recommend(u, 10)]
        kept = [r.item_id for r in models[1].recommend(u, 10)]
        assert "brand-new" not in scored  # the ranker alone never shows it
        assert kept == [*scored[:9], "brand-new"]  # nor "old-but-late", however it scores
    assert models[1].model_version != models[0].model_version
    assert models[1].stats()["slot_lists"] == len(users) and models[0].stats()["slot_lists"] == 0
    assert models[1].stats()["new_items"] == 1 and models[0].stats()["new_items"] == 0
    rec = models[1]
    for n in range(5):  # five users find it: no longer cold, no longer kept a place
        rec.learn(Event(f"found{n}", f"finder{n}", "brand-new", "view", 1e9 + n))
    assert all("brand-new" not in [r.item_id for r in rec.recommend(u, 10)] for u in users)


def test_content_reason_never_names_the_item_itself():
    config = RecommenderConfig(w_covisit=0, w_mf=0, w_popularity=0, w_fresh=0, content_dim=0)
    rec = Recommender(config)
    for item_id in ("a", "b", "c"):
        rec.upsert_item(Item(item_id, title=item_id))
    rec.set_item_vectors(["a", "b", "c"], np.stack([unit(1, 0.1), unit(1, 0.2), unit(-1, 1)]))
    rec.learn(ev(0, "u", "a", "view"))  # viewed, not purchased: "a" may come back
    reasons = {r.item_id: r.reason for r in rec.recommend("u", k=3)}
    assert reasons["a"] == "similar to what you like"  # its only anchor would be itself
    rec.learn(ev(1, "u", "b", "view"))
    reasons = {r.item_id: r.reason for r in rec.recommend("u", k=3)}
    assert reasons["a"] == "similar to b you viewed"
    assert reasons["b"] == "similar to a you viewed"


def test_lists_without_reasons_are_the_same_lists(synthetic):
    rec = trained(synthetic, n=600)
    users = sorted({e.user_id for e in synthetic[1][:600]})[:10]
    for user in users:
        with_reasons = rec.recommend(user, 10)
        bare = rec.recommend(user, 10, reasons=False)
        assert [(r.item_id, r.score) for r in bare] == [(r.item_id, r.score) for r in with_reasons]
        assert all(r.reason == "" for r in bare) and all(r.reason for r in with_reasons)


def _catalogue(n, dim=16, seed=1, **config):
    rng = np.random.default_rng(seed)
    rec = Recommender(RecommenderConfig(**config))
    ids = [f"i{j}" for j in range(n)]
    for i in ids:
        rec.upsert_item(Item(i))
    rec.set_item_vectors(ids, rng.normal(size=(n, dim)).astype(np.float32))
    return rec, ids, rng


def test_the_slot_reaches_a_new_item_the_two_stage_gathering_missed():
    """The fresh pool keeps the latest 50 first appearances: 60 old items' first events push the
    new one out of it, and the slot still finds it (Recommender._with_new_rows)."""
    shown = {}
    for retrieval in ("exact", "two_stage"):
        rec, ids, rng = _catalogue(
            3000, ranker="fixed", w_fresh=-5.0, retrieval=retrieval, retrieval_index="exact"
        )
        t = 0.0
        for n in range(300):
            rec.learn(Event(f"e{n}", f"u{n % 20}", ids[n % 100], "view", t))
            t += 1
        rec.upsert_item(Item("brand-new", ts=t))
        rec.set_item_vectors(["brand-new"], rng.normal(size=(1, 16)).astype(np.float32))
        for n in range(60):
            rec.learn(Event(f"f{n}", f"v{n}", ids[1000 + n], "view", t))
            t += 1
        users = [f"u{j}" for j in range(20)]
        shown[retrieval] = sum(
            "brand-new" in [r.item_id for r in rec.recommend(u, 10)] for u in users
        )
    assert shown == {"exact": 20, "two_stage": 20}


def test_a_new_item_stops_being_new_after_one_half_life():
    rec, ids, _ = _catalogue(30, ranker="fixed", w_fresh=-5.0, fresh_half_life=50.0)
    for n in range(10):
        rec.learn(Event(f"e{n}", "u1", ids[n], "view", float(n)))
    rec.upsert_item(Item("new", ts=100.0))
    assert "new" in [r.item_id for r in rec.recommend("u1", 5)]
    for n in range(51):  # one half-life of events, none on it
        rec.learn(Event(f"f{n}", "u2", ids[n % 30], "view", 200.0 + n))
    assert "new" not in [r.item_id for r in rec.recommend("u1", 5)]
    assert not len(rec.new_items)  # pruned, not kept forever


def test_what_is_not_new_and_models_from_before_the_slot(tmp_path):
    rec, ids, _ = _catalogue(20, ranker="fixed")
    rec.track_item_deltas()
    other, _, _ = _catalogue(20, ranker="fixed")
    other.track_item_deltas()
    for n in range(5):
        other.learn(Event(f"o{n}", "w", ids[n], "view", 10.0 + n))
    rec.apply_item_delta(other.item_delta())  # clock advanced, no event of its own yet
    rec.upsert_item(Item("unknowable", ts=50.0))  # cannot tell whether it is new: not
    assert not len(rec.new_items)
    rec.learn(Event("e0", "u", ids[0], "view", 20.0))
    rec.upsert_item(Item("re-run", ts=5.0))  # released before the first event: read late
    rec.upsert_item(Item("fresh", ts=30.0))
    rec.learn(Event("e1", "u", ids[1], "view", 31.0))
    rec.delete_item(ids[1])
    rec.upsert_item(Item(ids[1]))  # back in stock: seen before, not new
    assert [rec.index.ids[r] for r in rec.new_items.published_rows] == ["fresh"]
    off, _, _ = _catalogue(20, ranker="fixed", new_item_slots=0)
    off.learn(Event("e0", "u", ids[0], "view", 20.0))
    off.upsert_item(Item("fresh", ts=30.0))
    assert off.new_items is None  # nothing reads it: nothing kept
    # a model saved before the slot existed: no deque, no first-event time, a config without
    # the setting; it loads, takes new items, and keeps its version (the slot stays off)
    before = _catalogue(20, ranker="fixed", new_item_slots=0)[0].model_version
    old, _, _ = _catalogue(20, ranker="fixed")
    old.learn(Event("e0", "u", ids[0], "view", 20.0))
    del old.__dict__["new_items"]
    del old.config.__dict__["new_item_slots"]
    old.save(tmp_path / "old.pkl")
    loaded = Recommender.load(tmp_path / "old.pkl")
    loaded.upsert_item(Item("fresh", ts=30.0))
    loaded.learn(Event("e1", "u", "fresh", "view", 31.0))
    assert loaded.recommend("u", 3) and not getattr(loaded, "new_items", None)  # slot off
    # its config hashes as one with the slot off (a model keeps the digest it was built with)
    assert loaded.config.digest() == before.split("-")[1]
