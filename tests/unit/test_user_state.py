"""Portable user state and bounded memory (issue 10 item 5): export/import/drop users, idle
users, the co-visitation storage cap and the per-user seen/purchased caps."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from recstream.covisit import CoVisitation
from recstream.datasets import synthetic_stream
from recstream.events import Event, Item
from recstream.features import DEFAULT_FEATURES
from recstream.mf import ImplicitMF
from recstream.recommender import Recommender, RecommenderConfig
from recstream.sparse_rows import SparseRows
from recstream.state import RecentSet, UserState, UserStore


@pytest.fixture(scope="module")
def stream():
    items, events = synthetic_stream(n_users=40, n_items=60, n_events=2500, seed=3)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items), 16)).astype(np.float32)
    return items, events, vectors


def _model(items, vectors, config=None, *, order=None, **kwargs) -> Recommender:
    rec = Recommender(config, **kwargs)
    for item in items if order is None else [items[i] for i in order]:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], vectors)
    return rec


def _lists(rec: Recommender, users, exclude="purchased") -> dict:
    return {
        u: [(r.item_id, r.score, r.reason) for r in rec.recommend(u, 10, exclude=exclude)]
        for u in users
    }


def _same(a, b) -> bool:
    """Deep equality of exported data (numpy arrays compared by value)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# --- export / import ------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad"])
def test_imported_users_get_the_same_lists_and_learn_on_identically(stream, optimizer):
    items, events, vectors = stream
    config = RecommenderConfig(mf_optimizer=optimizer)
    a, b = _model(items, vectors, config), _model(items, vectors, config)
    for rec in (a, b):
        for e in events[:2000]:
            rec.learn(e)
    users = list(a.user_ids())
    exported = {u: a.export_user(u) for u in users}
    for u in list(b.user_ids()):  # b keeps the item side, loses every user
        assert b.drop_user(u)
    assert list(b.user_ids()) == [] and b.recommend(users[0]) != a.recommend(users[0])
    for u, data in exported.items():
        b.import_user(u, pickle.loads(pickle.dumps(data)))
    assert sorted(b.user_ids()) == sorted(users)
    for mode in ("purchased", "seen"):
        assert _lists(b, users, mode) == _lists(a, users, mode)
    # the optimiser state came along too: learning goes on identically
    for rec in (a, b):
        for e in events[2000:]:
            rec.learn(e)
    assert _lists(b, users) == _lists(a, users)


def test_exports_name_items_by_id_not_by_row(stream):
    items, events, vectors = stream
    # MF item factors start from row-ordered draws: no MF in the scores (fixed weight, and the
    # learned ranker's features)
    config = RecommenderConfig(
        w_mf=0.0, ranker_features=tuple(f for f in DEFAULT_FEATURES if f != "mf")
    )
    a = _model(items, vectors, config)
    a.track_item_deltas()
    for e in events:
        a.learn(e)
    # b numbers the items the other way round and gets the item side through a delta
    b = _model(items, vectors, config, order=range(len(items) - 1, -1, -1))
    b.apply_item_delta(a.item_delta())
    assert b.index.ids == a.index.ids[::-1]
    users = list(a.user_ids())
    for u in users:
        data = a.export_user(u)
        blob = pickle.dumps(data)
        assert pickle.loads(blob)["user"]["seen"] == data["user"]["seen"]
        assert all(isinstance(i, str) for i in data["user"]["seen"] + data["user"]["purchased"])
        assert all(isinstance(i, str) for i, *_ in data["user"]["recent"] + data["covisit"])
        b.import_user(u, data)
        assert _same(b.export_user(u), data)  # the same ids back, through other rows
    n = len(a.index)
    for u in users:
        got = {r.item_id: (r.score, r.reason) for r in b.recommend(u, n)}
        want = {r.item_id: (r.score, r.reason) for r in a.recommend(u, n)}
        assert got.keys() == want.keys()
        for item_id, (score, reason) in want.items():
            assert got[item_id][0] == pytest.approx(score, rel=1e-5, abs=1e-6)
            assert got[item_id][1] == reason


def test_unknown_items_in_an_import_wait_for_their_catalogue_entry():
    a = Recommender(allow_unknown_items=True)
    a.learn(Event("e1", "u1", "new", "purchase", 1.0))
    data = a.export_user("u1")
    strict, open_ = Recommender(), Recommender(allow_unknown_items=True)
    for rec in (strict, open_):
        rec.upsert_item(Item("old"))
        rec.import_user("u1", data)
    assert not strict.index.active[strict.index.row("new")]
    assert open_.index.active[open_.index.row("new")]
    assert [r.item_id for r in strict.recommend("u2")] == ["old"]


def test_import_replaces_drop_removes_and_unknown_users_export_none():
    rec = Recommender()
    for n, item in enumerate("abc"):
        rec.upsert_item(Item(item))
        rec.learn(Event(f"e{n}", "u1", item, "purchase", float(n)))
    rec.learn(Event("e9", "u2", "a", "view", 9.0))
    rec.import_user("u1", rec.export_user("u2"))  # replaces, never merges
    state = rec.users.get("u1")
    assert state.purchased == set() and state.n_events == 1
    assert rec.covisit.export_user("u1") == [("a", 0.25)]
    assert rec.drop_user("u1") and not rec.drop_user("u1")
    assert rec.export_user("u1") is None and list(rec.user_ids()) == ["u2"]
    with pytest.raises(ValueError, match="format"):
        rec.import_user("u1", {"format": 99})


def test_river_engine_users_move_with_their_optimiser_state():
    a, b = (ImplicitMF(n_factors=4, optimizer="adam", engine="river", seed=1) for _ in "ab")
    for mf in (a, b):
        mf.add_items("abcd")
    for n, (u, i) in enumerate([("u1", "a"), ("u1", "b"), ("u2", "c")] * 5):
        a.learn(Event(str(n), u, i, "purchase", float(n)))
    data = a.export_user("u1")
    assert set(data["optimizer"]["factors"]) == {"m", "v"}
    b.import_user("u1", data)
    assert _same(b.export_user("u1"), data)
    assert np.array_equal(b._river.u_latents["u1"], data["factors"])
    assert b._river.u_latent_optimizer.m["u1"] is not data["optimizer"]["factors"]["m"]


# --- idle users -----------------------------------------------------------------------------


def test_idle_users_leave_memory_and_come_back_whole(stream):
    items, events, vectors = stream
    rec = _model(items, vectors)
    store: dict[str, dict] = {}  # stands in for the partition's state store
    ttl = 300
    for n, e in enumerate(events[:1500]):
        if e.user_id in store:  # a user who comes back is imported first
            rec.import_user(e.user_id, store.pop(e.user_id))
        rec.learn(e)
        if n % 100 == 99:
            for u in rec.idle_users(before_event=rec.n_events - ttl):
                store[u] = rec.export_user(u)
                rec.drop_user(u)
    assert store and len(rec.users) + len(store) == len({e.user_id for e in events[:1500]})
    reference = _model(items, vectors)
    for e in events[:1500]:
        reference.learn(e)
    for u, data in store.items():  # what was stored is what a never-evicted model holds
        assert _same(data, reference.export_user(u))
    for u in rec.user_ids():
        assert _same(rec.export_user(u), reference.export_user(u))
    by_time = rec.idle_users(before_ts=events[1400].ts)
    assert set(by_time) == {u for u in rec.users if rec.users.get(u).last_seen < events[1400].ts}
    with pytest.raises(ValueError):
        rec.idle_users()


def test_mf_rows_of_dropped_users_are_reused_without_their_state():
    mf = ImplicitMF(n_factors=4, optimizer="adam", seed=1)
    mf.add_items("abcd")
    for n in range(1000):
        mf.learn(Event(str(n), f"u{n}", "abcd"[n % 4], "purchase", float(n)))
        mf.forget_user(f"u{n}")
    assert mf._P.shape[0] <= 64 and mf._n_user_rows == 1
    assert not mf._opt_u.m and not mf._opt_bu.m  # no moments left behind to leak or inherit


# --- bounded co-visitation and seen / purchased ---------------------------------------------


def test_sparse_rows_prune_to_the_largest_counts():
    m = SparseRows(max_stored=3)
    for j in range(1, 8):
        m.add_symmetric(0, [j], [float(j)])
    cols, vals = m.row(0)
    assert sorted(cols.tolist()) == [5, 6, 7] and sorted(vals.tolist()) == [5.0, 6.0, 7.0]
    assert m.get(0, 1) == 0.0 and m.get(1, 0) == 1.0  # rows are pruned independently
    m.add(0, 1, 1.0)  # a pruned pair starts again from its new count
    assert m.get(0, 1) == 1.0 and m.n_pruned == 4


def test_the_cap_bounds_rows_and_leaves_item_deltas_unchanged():
    items, events = synthetic_stream(n_users=30, n_items=200, n_events=3000, seed=5)
    capped = CoVisitation(window=20, max_stored=10)
    full = CoVisitation(window=20)
    for cv in (capped, full):
        cv.add_items(i.item_id for i in items)
        cv.track_deltas()
        for e in events:
            cv.learn(e)
    sizes = [capped.pairs.row(r)[0].size for r in range(len(capped.index))]
    assert max(sizes) <= 20 and capped.pairs.n_pruned > 0
    assert max(full.pairs.row(r)[0].size for r in range(len(full.index))) > 20
    a, b = capped.export_delta(), full.export_delta()
    assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    for u in {e.user_id for e in events}:  # reasons still name one of the user's items
        for r in capped.recommend(u, 5):
            assert r.reason.startswith("viewed together with ") or r.reason.startswith("popular")


def test_seen_and_purchased_keep_the_most_recent_items():
    users = UserStore(max_seen=3, max_purchased=2)
    for n, (row, type_) in enumerate(
        [(0, "purchase"), (1, "purchase"), (2, "view"), (0, "view"), (3, "purchase"), (4, "view")]
    ):
        users.update(Event(f"e{n}", "u1", str(row), type_, float(n)), row=row)
    state = users.get("u1")
    assert list(state.seen) == [0, 3, 4]  # 0 was touched again, so 1 and 2 went first
    assert list(state.purchased) == [1, 3] and state.excluded("purchased") == {1, 3}
    rec = Recommender(RecommenderConfig(user_max_seen=2), exclude="seen")
    for item in "abc":
        rec.upsert_item(Item(item))
    for n, item in enumerate("abc"):
        rec.learn(Event(f"e{n}", "u1", item, "view", float(n)))
    assert [r.item_id for r in rec.recommend("u1")] == ["a"]  # exclusion covers b and c only


def test_user_states_pickled_before_the_caps_load():
    state = UserState(seen={3, 1}, purchased={1})  # plain sets, as older models held them
    del state.last_event  # ...and no last_event
    back = pickle.loads(pickle.dumps(state))
    assert back.last_event == 0 and isinstance(back.seen, RecentSet) and back.seen == {1, 3}
    back.seen.touch(5, cap=2)
    assert len(back.seen) == 2 and 5 in back.seen
