"""Issue 11 item 2 in the hybrid: the transition, attention and context features and models."""

import dataclasses
import pickle
from collections import deque

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.deltas import combine, subtract
from recstream.events import Event, Item
from recstream.features import EXTRA_FEATURES, feature_matrix
from recstream.index import ItemIndex
from recstream.interest import attention_history, attention_scores
from recstream.recommender import USER_FORMAT, Recommender, RecommenderConfig
from recstream.state import UserState
from recstream.user_partitions import decode_value, encode_value

NEW = (
    "transition",
    "content_attention",
    "content_taste",
    "category_taste",
    "context_hour",
    "context_device",
)
CONFIG = RecommenderConfig(
    ranker="learned",
    ranker_features=(*dict.fromkeys((*RecommenderConfig().ranker_features, *NEW)),),
)
DEVICES = ("tv", "mobile", "desktop")


@pytest.fixture(scope="module")
def shop():
    """A synthetic shop whose events carry a device and a local hour (datasets have neither)."""
    items, events = synthetic_stream(n_users=30, n_items=50, n_events=1500, seed=5)
    events = [
        dataclasses.replace(
            e, context={"device": DEVICES[int(e.user_id[1:]) % 3], "local_hour": n % 24}
        )
        for n, e in enumerate(events)
    ]
    vectors = np.random.default_rng(0).normal(size=(len(items), 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return items, events, vectors


def model(shop, config=CONFIG, n_events=None):
    items, events, vectors = shop
    rec = Recommender(config, seed=1)
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    for e in events[:n_events]:
        rec.learn(e)
    return rec


def test_the_models_exist_only_where_the_ranker_reads_them(shop):
    fixed = Recommender(RecommenderConfig(ranker="fixed"))
    assert fixed.transitions is None and fixed.context is None
    learned = Recommender()  # the learned ranker is the default
    # transition earned its place in the default features (docs/evaluation/ranker.md), the
    # context features did not
    assert learned.transitions is not None and learned.context is None
    rec = Recommender(CONFIG)
    assert rec.transitions is not None and rec.context is not None
    only = RecommenderConfig(ranker="learned", ranker_features=("covisit", "context_device"))
    assert Recommender(only).transitions is None and Recommender(only).context is not None
    # settings only the learned ranker reads leave a fixed model's version as it was
    base = RecommenderConfig(ranker="fixed")
    assert dataclasses.replace(base, transition_beta=1.0).digest() == base.digest()
    learned_cfg = RecommenderConfig(ranker="learned")
    assert dataclasses.replace(learned_cfg, transition_beta=1.0).digest() != learned_cfg.digest()


def test_every_new_feature_at_rows_equals_the_full_catalogue(shop):
    rec = model(shop, n_events=900)
    user = shop[1][899].user_id
    n = len(rec.index)
    mask = rec._candidates(rec.users.get(user), "seen")
    full, _ = feature_matrix(rec, user, mask, NEW)
    assert full.shape == (n, len(NEW)) and np.isfinite(full).all()
    for k, name in enumerate(NEW):
        assert np.ptp(full[mask, k]) > 0, name  # each one says something on this stream
    # a two-stage list scores some rows; its scale is taken over its own candidates, so compare
    # with the full features over the same candidates: every candidate row, in a shuffled order
    rows = np.random.default_rng(2).permutation(np.flatnonzero(mask))
    sub, _ = feature_matrix(rec, user, np.ones(rows.size, dtype=bool), NEW, rows=rows)
    assert sub.shape == (rows.size, len(NEW))
    assert np.allclose(sub, full[rows])


def test_transition_feature_points_at_what_people_pick_next():
    rec = Recommender(CONFIG)
    for i in "abcdefg":
        rec.upsert_item(Item(i))
    stream = [(u, i) for u in ("u1", "u2", "u3") for i in "ab"] + [("u4", "a"), ("u4", "c")]
    for n, (u, i) in enumerate(stream):
        rec.learn(Event(f"e{n}", u, i, "purchase", float(n)))
    rec.learn(Event("e9", "me", "a", "view", 9.0))
    X, _ = feature_matrix(rec, "me", rec.index.active, ("transition",))
    col = dict(zip(rec.index.ids, X[:, 0].tolist(), strict=True))
    assert col["b"] == 1.0 and 0 < col["c"] < 1.0 and col["d"] == 0.0
    # user state: the last item travels with the user, through the wire format
    data = decode_value(encode_value(rec.export_user("me")))
    assert data["format"] == USER_FORMAT and data["transitions"] == [["a", 0.25]]
    other = Recommender(CONFIG)
    other.upsert_item(Item("zz"))  # rows differ
    other.import_user("me", data)
    assert [other.index.ids[r] for r, _ in other.transitions.history("me")] == ["a"]
    assert "me" in list(rec.user_ids())
    assert rec.forget_user("me") and rec.transitions.history("me") == []


def test_an_export_from_before_the_models_imports_and_rebuilds_the_last_items(shop):
    events = shop[1]
    old = model(shop, RecommenderConfig(ranker="learned"), n_events=300)
    user = events[299].user_id
    data = old.export_user(user)
    for key in ("transitions", "context"):
        data.pop(key, None)  # as a model before them wrote it (same format number)
    new = model(shop, n_events=0)
    new.import_user(user, data)
    recent = old.users.export_user(user, old.index.ids)["recent"]
    want = new.transitions.last_items([(i, t) for i, t, _ in recent])
    history = new.transitions.history(user)
    assert want and [(new.index.ids[r], w) for r, w in history] == want
    assert new.context.current(user) == {}  # re-learned at the user's next event
    with pytest.raises(ValueError, match="format"):
        new.import_user(user, {**data, "format": 99})


def test_attention_matches_a_per_candidate_loop_and_respects_rows():
    rng = np.random.default_rng(4)
    index = ItemIndex(dim=8, reduce_dim=4)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    index.set_vectors([f"i{k}" for k in range(40)], vectors)
    history = [(3, 1.0), (17, 0.5), (9, 0.25)]
    got = attention_scores(index, history, temperature=0.2)
    sims = index.item_similarities(np.array([3, 17, 9]))
    for j in range(40):
        logits = sims[j] / 0.2 + np.log([1.0, 0.5, 0.25])
        a = np.exp(logits - logits.max())
        assert got[j] == pytest.approx(float((a / a.sum()) @ sims[j]), rel=1e-5)
        # the projection's cosines are those of similarity(approx=True)
    assert np.allclose(sims[:, 0], index.similarity(index.vectors[3], approx=True), atol=1e-5)
    rows = np.array([5, 0, 39, 5])
    assert np.allclose(attention_scores(index, history, rows, temperature=0.2), got[rows])
    assert attention_scores(index, [], rows).tolist() == [0.0] * 4


def test_the_taste_profile_is_the_profile_at_another_decay(shop):
    """Over a history shorter than the recent window, the taste profile at the profile's own
    decay is the user's content profile; at decay 1 every recent event counts alike."""
    from recstream.features import taste_profile

    rec = model(shop, n_events=200)
    checked = 0
    for user_id in {e.user_id for e in shop[1][:200]}:
        state = rec.users.get(user_id)
        if state is None or not 3 <= len(state.recent) < rec.users.recent_size:
            continue
        same = taste_profile(state, rec.users.weights, rec.index, rec.users.profile_decay)
        np.testing.assert_allclose(same, state.profile(), atol=1e-5)
        flat = sum(rec.users.weights[t] * rec.index.vectors[row] for row, t, _ in state.recent)
        flat /= np.linalg.norm(flat)
        np.testing.assert_allclose(
            taste_profile(state, rec.users.weights, rec.index, 1.0), flat, atol=1e-5
        )
        checked += 1
    assert checked >= 5


def test_attention_history_weights_the_session_and_recency():
    state = UserState(recent=deque([(0, "purchase", 1.0), (1, "view", 2.0), (2, "click", 50.0)]))
    state.session_start = 40.0  # only item 2 is in the current session
    has = np.array([True, True, True])
    weights = {"view": 0.25, "click": 0.5, "purchase": 1.0}
    got = attention_history(state, weights, has, recency=0.5, session_boost=3.0)
    assert got == [(2, 1.5), (1, 0.125), (0, 0.25)]
    has[1] = False  # no vector: not attended to
    assert [r for r, _ in attention_history(state, weights, has, n_items=2)] == [2, 0]
    # a type that does not count takes no place among the n_items (nor any age)
    state.recent.append((0, "share", 60.0))
    got = attention_history(state, {**weights, "share": 0.0}, has, n_items=2, recency=0.5)
    assert got == [(2, 1.0), (0, 0.5)]


def test_context_features_on_synthetic_events():
    rec = Recommender(CONFIG)
    for i in ("show", "app", "neutral"):
        rec.upsert_item(Item(i))
    stream = (
        [("show", "tv")] * 6 + [("app", "mobile")] * 6 + [("neutral", "tv"), ("neutral", "mobile")]
    )
    for n, (item, device) in enumerate(stream):
        rec.learn(
            Event(
                f"e{n}",
                f"u{n}",
                item,
                "view",
                3600.0 * (20 if item == "show" else 8),
                {"device": device},
            )
        )
    rec.learn(Event("e99", "me", "neutral", "view", 3600.0 * 21, {"device": "tv"}))
    X, _ = feature_matrix(rec, "me", rec.index.active, ("context_device", "context_hour"))
    device = dict(zip(rec.index.ids, X[:, 0].tolist(), strict=True))
    hour = dict(zip(rec.index.ids, X[:, 1].tolist(), strict=True))
    assert device["show"] > 0 > device["app"]  # on a tv, the tv item
    assert hour["show"] > 0 > hour["app"]  # in the evening, the evening item
    cold, _ = feature_matrix(rec, "nobody", rec.index.active, ("context_device",))
    assert not cold.any()


def test_item_deltas_carry_the_new_models_between_workers(shop):
    events = shop[1]
    a, b, one = (model(shop, n_events=0) for _ in range(3))
    for rec in (a, b):
        rec.track_item_deltas()
    for e in events[:600]:
        (a if int(e.user_id[1:]) % 2 else b).learn(e)
        one.learn(e)
    da, db = a.item_delta(), b.item_delta()
    assert da["transitions"]["items"] and da["context"]["items"]
    total = combine([da, db])
    for rec, own in ((a, da), (b, db)):
        rec.apply_item_delta(subtract(total, own))
    ids = [f"i{k}" for k in range(50)]
    for rec in (a, b):
        got = np.array([[rec.transitions.probability(x, y) for y in ids] for x in ids])
        want = np.array([[one.transitions.probability(x, y) for y in ids] for x in ids])
        assert np.count_nonzero(want) > 100 and np.array_equal(got > 0, want > 0)
        # the shards' clocks run apart between exchanges (half-life 5,000 events): the decayed
        # shares agree closely, not exactly
        assert np.allclose(got, want, atol=0.02)
        for item in ids:  # context counts are plain sums: exactly
            assert counts_by_cell(rec, item) == counts_by_cell(one, item)


def counts_by_cell(rec, item_id):
    counts = rec.context._counts[rec.index.row(item_id)]
    return {cell: counts[col] for cell, col in rec.context.cells.items() if counts[col]}


def test_models_pickled_before_the_new_models_load_and_score(shop, tmp_path):
    rec = model(shop, n_events=200)
    path = tmp_path / "m.pkl"
    rec.save(path)
    old = Recommender.load(path)
    del old.transitions, old.context, old.categories  # pickled before the attributes existed
    assert old.transitions is None and old.context is None and old.categories is None
    old.learn(shop[1][200])
    user = shop[1][200].user_id
    names = ("transition", "context_device", "category_taste")
    X, _ = feature_matrix(old, user, old.index.active, names)
    assert not X.any()
    assert len(old.recommend(user, k=5)) == 5
    assert set(NEW) <= set(EXTRA_FEATURES)
    assert pickle.loads(pickle.dumps(rec.transitions)).n_pairs == rec.transitions.n_pairs


def _device_stream(n_users=300, n_items=60, n_sessions=600, seed=0):
    """Sessions of 4 purchases on one device; 80 % of them of that device's third of the
    catalogue (item k belongs to device k % 3), whoever the user is: only the context tells."""
    rng = np.random.default_rng(seed)
    events = []
    for s in range(n_sessions):
        user, d = f"u{rng.integers(n_users)}", int(rng.integers(3))
        for _ in range(4):
            k = (
                3 * int(rng.integers(n_items // 3)) + d
                if rng.random() < 0.8
                else rng.integers(n_items)
            )
            context = {"device": DEVICES[d], "session_id": f"s{s}"}
            n = len(events)
            events.append(Event(f"e{n}", user, f"i{k}", "purchase", float(n), context))
    return events


def _second_half_hits(features):
    """hr@5 over the second half of :func:`_device_stream` (test-then-learn), final weights."""
    rec = Recommender(RecommenderConfig(ranker="learned", ranker_features=features), seed=1)
    for k in range(60):
        rec.upsert_item(Item(f"i{k}"))
    events = _device_stream()
    hits = n = 0
    for k, e in enumerate(events):
        state = rec.users.get(e.user_id)
        if k >= len(events) // 2 and (state is None or rec.index.row(e.item_id) not in state.seen):
            hits += e.item_id in [r.item_id for r in rec.recommend(e.user_id, 5, exclude="seen")]
            n += 1
        rec.learn(e)
    return hits / n, rec.ranker.weights


def test_the_ranker_learns_to_use_the_device_when_it_tells_what_is_bought():
    base = RecommenderConfig().ranker_features
    without, _ = _second_half_hits(base)
    with_device, weights = _second_half_hits((*base, "context_device"))
    assert weights["context_device"] > 0.3  # learned from 0
    assert with_device > without + 0.03
