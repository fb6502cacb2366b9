"""Item categories and the category_taste feature (recstream/categories.py)."""

import pickle

import numpy as np

from recstream.categories import ItemCategories, category_share
from recstream.events import Event, Item
from recstream.features import feature_matrix
from recstream.recommender import Recommender, RecommenderConfig

NAMES = ("drama", "comedy", "war", "horror", "sci-fi")


def _random_catalogue(n=200, seed=0):
    rng = np.random.default_rng(seed)
    cats = ItemCategories(max_per_item=3)
    listed = []
    for row in range(n):
        k = int(rng.integers(0, 5))  # 0..4 categories; more than 3 are cut to the first 3
        names = tuple(rng.choice(NAMES, size=k, replace=False)) if k else ()
        cats.set(row, names)
        listed.append(tuple(dict.fromkeys(names))[:3])
    return cats, listed


def _brute_share(listed, rows, weights):
    acc = dict.fromkeys(NAMES, 0.0)
    for row, w in zip(rows, weights, strict=True):
        if row < len(listed) and listed[row]:
            for name in listed[row]:
                acc[name] += w / len(listed[row])
    total = sum(acc.values())
    return {k: (v / total if total else 0.0) for k, v in acc.items()}


def test_share_and_affinity_match_a_plain_loop_on_both_paths():
    cats, listed = _random_catalogue()
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 260, size=40).tolist()  # some rows were never recorded: ignored
    weights = rng.random(40).tolist()
    share = cats.share(rows, weights)
    expected = _brute_share(listed, rows, weights)
    assert abs(share.sum() - 1.0) < 1e-12
    for name, i in cats.ids.items():
        assert abs(share[i] - expected[name]) < 1e-12, name
    n_rows = 230  # the index may hold rows without categories beyond the recorded ones
    full = cats.affinity(share, n_rows=n_rows)
    brute = [
        float(np.mean([share[cats.ids[c]] for c in listed[r]])) if r < 200 and listed[r] else 0.0
        for r in range(n_rows)
    ]
    assert full.shape == (n_rows,) and np.allclose(full, brute)
    at = rng.permutation(n_rows)[:50]
    assert np.allclose(cats.affinity(share, rows=at), full[at])


def test_a_changed_item_changes_the_full_catalogue_affinity():
    cats = ItemCategories()
    cats.set(0, ("drama",))
    cats.set(1, ("comedy",))
    share = cats.share([0], [1.0])
    assert cats.affinity(share, n_rows=2).tolist() == [1.0, 0.0]
    cats.set(1, ("comedy", "drama"))  # the cached matrix must not serve the old row
    assert cats.affinity(cats.share([0], [1.0]), n_rows=2).tolist() == [1.0, 0.5]
    matrix = cats._csr()
    cats.set(1, ("comedy", "drama", "comedy"))  # re-published, same categories: kept
    assert cats._csr() is matrix
    cats.set(5, ())  # a new row without categories: nothing to rebuild either
    assert cats._csr() is matrix and cats.affinity(share, n_rows=6).tolist()[5] == 0.0
    restored = pickle.loads(pickle.dumps(cats))
    assert restored.affinity(restored.share([1], [1.0]), n_rows=3).tolist() == [0.5, 0.5, 0.0]


def test_recent_events_count_most():
    cats = ItemCategories()
    cats.set(0, ("drama",))
    cats.set(1, ("war",))
    recent = [(0, "view", 0.0)] * 3 + [(1, "view", 1.0)]  # oldest first
    weights = {"view": 1.0}
    slow = category_share(cats, recent, weights, decay=1.0)
    fast = category_share(cats, recent, weights, decay=0.1)
    drama, war = cats.ids["drama"], cats.ids["war"]
    assert slow[drama] == 0.75 and slow[war] == 0.25
    assert fast[war] > 0.9  # with a steep decay the newest event's category dominates
    assert category_share(cats, [], weights, decay=0.9).tolist() == [0.0, 0.0]


def test_category_taste_ranks_the_users_genre_first():
    """Users who only ever buy one genre: the feature puts that genre's unseen items on top."""
    rec = Recommender()  # category_taste is one of the default features (2026-12-02)
    assert rec.categories is not None
    assert Recommender(RecommenderConfig(ranker="fixed")).categories is None
    without = tuple(f for f in RecommenderConfig().ranker_features if f != "category_taste")
    assert Recommender(RecommenderConfig(ranker_features=without)).categories is None
    for k in range(40):
        rec.upsert_item(Item(f"i{k}", categories=(NAMES[k % 4],)))
    n = 0
    for user, genre in (("u0", 0), ("u1", 1)):
        for k in range(genre, 20, 4):  # 5 of the genre's 10 items
            rec.learn(Event(f"e{n}", user, f"i{k}", "purchase", float(n)))
            n += 1
    names = ("category_taste",)
    for user, genre in (("u0", 0), ("u1", 1)):
        mask = rec._candidates(rec.users.get(user), "seen")
        X, _ = feature_matrix(rec, user, mask, names)
        top = {int(r) for r in np.flatnonzero(mask & (X[:, 0] == X[mask, 0].max()))}
        assert top == {rec.index.row(f"i{k}") for k in range(20 + genre, 40, 4)}, user
        assert X[mask, 0].min() == 0.0  # other genres: nothing in common


def test_items_share_one_row_per_category_list_and_old_pickles_migrate():
    cats, listed = _random_catalogue(n=300, seed=4)
    matrix = cats._csr()
    assert matrix.shape[0] == len(set(listed)) < 300  # one row per distinct list, () included
    cats.set(300, listed[7])  # a new item in a list already seen: nothing to rebuild
    assert cats._csr() is matrix
    share = cats.share([1, 2, 3, 300], [1.0, 0.5, 0.25, 2.0])
    full = cats.affinity(share, n_rows=310)
    assert np.allclose(full[:301], cats.affinity(share, rows=np.arange(301)))  # sums apart
    assert full[300] == full[7] and not full[301:].any()
    state = cats.__getstate__()  # as pickled before the lists were kept apart
    for key in ("_sets", "_set_of_row"):
        del state[key]
    old = ItemCategories.__new__(ItemCategories)
    old.__setstate__(state)
    assert np.array_equal(old.affinity(share, n_rows=310), full)
    try:
        cats.share([1, 2], [1.0])
    except ValueError as e:
        assert "2 rows but 1 weights" in str(e)
    else:
        raise AssertionError("mismatched rows and weights were accepted")
