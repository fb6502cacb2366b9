import numpy as np
import pytest

from recstream.deltas import combine, combine_transitions, empty_delta, is_empty, subtract
from recstream.events import Event
from recstream.transitions import Transitions
from recstream.user_partitions import decode_value, encode_value

UNIT = {"view": 1.0, "purchase": 1.0}


def learn_all(model, stream, start=0):
    for n, (u, i, *t) in enumerate(stream, start=start):
        model.learn(Event(f"e{n}", u, i, t[0] if t else "purchase", float(n)))


def test_counts_are_directed_and_first_order():
    tr = Transitions(half_life=None, weights=UNIT, beta=0.0)
    learn_all(tr, [("u1", "a"), ("u1", "b"), ("u1", "c")])
    assert tr.probability("a", "b") == 1.0 and tr.probability("b", "c") == 1.0
    assert tr.probability("b", "a") == 0.0  # directed
    assert tr.probability("a", "c") == 0.0  # two steps apart: not a transition
    assert tr.n_pairs == 2


def test_a_repeated_item_is_no_transition_and_upgrades_its_weight():
    tr = Transitions(half_life=None, weights={"view": 0.25, "purchase": 1.0}, beta=0.0)
    learn_all(tr, [("u1", "a", "view"), ("u1", "b", "view"), ("u1", "b", "purchase")])
    assert tr.pairs.get(tr.index.row("b"), tr.index.row("b")) == 0.0
    # a -> b counted at the view (0.25 x 0.25), raised to the purchase's weight (0.25 x 1)
    assert tr.pairs.get(tr.index.row("a"), tr.index.row("b")) == pytest.approx(0.25)
    assert tr.history("u1") == [(tr.index.row("a"), 0.25), (tr.index.row("b"), 1.0)]
    learn_all(tr, [("u1", "a", "view")], start=3)  # back to a: b -> a, a moves to the end
    assert [r for r, _ in tr.history("u1")] == [tr.index.row("b"), tr.index.row("a")]
    assert tr.probability("b", "a") == 1.0


@pytest.mark.parametrize("n_last", [1, 2, 3])
def test_the_upgrade_reaches_the_transition_whatever_n_last(n_last):
    # with n_last=1 the source of the latest transition must outlive the scoring window
    tr = Transitions(half_life=None, weights={"view": 0.25, "purchase": 1.0}, n_last=n_last)
    learn_all(tr, [("u1", "a", "view"), ("u1", "b", "view"), ("u1", "b", "purchase")])
    assert tr.pairs.get(tr.index.row("a"), tr.index.row("b")) == pytest.approx(0.25)
    assert len(tr.history("u1")) == min(n_last, 2)
    # the upgrade survives a move to another model between the view and the purchase
    moved = Transitions(half_life=None, weights={"view": 0.25, "purchase": 1.0}, n_last=n_last)
    learn_all(moved, [("u1", "a", "view"), ("u1", "b", "view")])
    other = Transitions(half_life=None, weights={"view": 0.25, "purchase": 1.0}, n_last=n_last)
    other.import_user("u1", moved.export_user("u1"))
    learn_all(other, [("u1", "b", "purchase")], start=2)
    assert other.pairs.get(other.index.row("a"), other.index.row("b")) == pytest.approx(0.1875)


def test_types_filter_and_n_last_bound():
    tr = Transitions(types=("purchase",), weights=UNIT, n_last=2)
    learn_all(tr, [("u1", "a", "view"), ("u1", "b", "view")])
    assert tr.n_pairs == 0 and tr.history("u1") == []
    learn_all(tr, [("u1", x) for x in "cdef"], start=2)
    assert [tr.index.ids[r] for r, _ in tr.history("u1")] == ["e", "f"]


def test_decay_follows_the_event_clock():
    tr = Transitions(half_life=2.0, weights=UNIT, beta=0.0)
    # a -> b at clock 2, then four events of others, then a -> c at clock 8
    learn_all(tr, [("u1", "a"), ("u1", "b"), *[("x", f"z{k}") for k in range(4)]])
    learn_all(tr, [("u2", "a"), ("u2", "c")], start=6)
    row_a = tr.index.row("a")
    b, c = tr.index.row("b"), tr.index.row("c")
    scores = tr.score_from([(row_a, 1.0)])
    # equal counts, 6 events apart with a half-life of 2: b weighs 2 ** -3 of c
    assert scores[b] / scores[c] == pytest.approx(2.0**-3)
    assert tr.probability("a", "c") == pytest.approx(1 / (1 + 2.0**-3))


def test_the_inflated_frame_rescales_without_changing_scores():
    slow = Transitions(half_life=1e9, weights=UNIT, beta=0.5)
    fast = Transitions(half_life=0.05, weights=UNIT, beta=0.5)  # 60 half-lives in 3 events
    stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "b"), ("u3", "c")]
    for model in (slow, fast):
        learn_all(model, stream)
    assert fast._t_ref > 0  # rescaled at least once
    assert all(np.isfinite(fast._out)) and all(np.isfinite(fast._in))
    # only the latest transition (b -> c) still counts in the fast model
    assert fast.probability("b", "c") == pytest.approx(1.0)
    assert fast.probability("a", "c") == pytest.approx(1.0)  # a -> c outweighs a -> b by 2**40
    assert slow.probability("a", "b") == pytest.approx(0.5)


def test_max_stored_bounds_each_row():
    tr = Transitions(weights=UNIT, max_stored=2)
    for k in range(10):
        learn_all(tr, [(f"u{k}", "hub"), (f"u{k}", f"i{k}")], start=2 * k)
    cols, _ = tr.pairs.row(tr.index.row("hub"))
    assert len(cols) <= 4  # 2 x max_stored


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_scores_at_rows_equal_the_full_scores(beta):
    tr = Transitions(weights=UNIT, beta=beta, n_last=3, recency=0.5)
    rng = np.random.default_rng(0)
    stream = [(f"u{rng.integers(5)}", f"i{rng.integers(30)}") for _ in range(400)]
    learn_all(tr, stream)
    tr.index.add("never-counted")
    full = tr.score("u1")
    assert full.shape == (len(tr.index),) and np.count_nonzero(full) > 3
    rows = np.array([len(tr.index) - 1, 5, 0, 17, 5, 3], dtype=np.int64)
    assert np.allclose(tr.score("u1", rows), full[rows])
    assert tr.score("nobody", rows).tolist() == [0.0] * rows.size
    assert tr.score("u1", np.zeros(0, dtype=np.int64)).shape == (0,)


def test_recency_weights_the_last_items():
    tr = Transitions(half_life=None, weights=UNIT, beta=0.0, n_last=2, recency=0.5)
    learn_all(tr, [("u1", "a"), ("u1", "x"), ("u2", "b"), ("u2", "y")])
    learn_all(tr, [("u3", "a"), ("u3", "b")], start=4)  # u3's last: b (newest), a
    scores = tr.score("u3")
    # y: all of b's next steps; x: half of a's (a -> x, a -> b), one step back (x 0.5)
    assert scores[tr.index.row("y")] == 1.0 and scores[tr.index.row("x")] == 0.25
    assert [r.item_id for r in tr.recommend("u3", k=2)] == ["y", "x"]


def test_user_state_moves_between_models_through_the_wire_format():
    a, b = Transitions(weights=UNIT), Transitions(weights=UNIT)
    b.index.add("zzz")  # rows differ between the two
    learn_all(a, [("u1", "p"), ("u1", "q"), ("u2", "q"), ("u2", "r")])
    data = decode_value(encode_value(a.export_user("u1")))  # tuples come back as lists
    b.import_user("u1", data)
    assert [b.index.ids[r] for r, _ in b.history("u1")] == ["p", "q"]
    assert a.export_user("nobody") is None
    assert b.forget_user("u1") and not b.forget_user("u1") and b.history("u1") == []
    assert sorted(a.user_ids()) == ["u1", "u2"]


def test_last_items_rebuild_the_history_of_old_user_data():
    tr = Transitions(weights={"view": 0.25, "purchase": 1.0}, n_last=2)
    events = [("a", "view"), ("b", "view"), ("a", "view"), ("c", "click"), ("a", "purchase")]
    assert tr.last_items(events) == [("b", 0.25), ("a", 1.0)]  # clicks do not count here


def _shards(stream, n):
    """n replicas, users split between them, exchanging deltas once at the end."""
    shards = [Transitions(half_life=50.0, weights=UNIT) for _ in range(n)]
    for shard in shards:
        shard.track_deltas()
    for k, (u, i) in enumerate(stream):
        shard = shards[int(u[1:]) % n]
        row = shard.index.add(i)
        shard.n_events = k + 1  # the group's clock, as the hybrid's merged n_events
        shard.update(u, row, "purchase")
    return shards


def test_replicas_that_exchange_deltas_learn_like_one_model():
    rng = np.random.default_rng(1)
    stream = [(f"u{rng.integers(6)}", f"i{rng.integers(12)}") for _ in range(300)]
    (one,) = _shards(stream, 1)
    a, b = _shards(stream, 2)
    da, db = a.export_delta(), b.export_delta()
    bundles = [{**empty_delta(), "transitions": d} for d in (da, db)]
    total = combine(bundles)  # the worker protocol: each merges the total less its own part
    for replica, own in zip((a, b), bundles, strict=True):
        replica.merge_delta(subtract(total, own)["transitions"])
    for replica in (a, b):
        for x in ("i0", "i3", "i7"):
            for y in ("i1", "i3", "i9"):
                assert replica.probability(x, y) == pytest.approx(one.probability(x, y))
    # merged counts are not exported again
    assert a.export_delta()["items"] == [] and b.export_delta()["items"] == []


def test_combined_transition_deltas_cancel_exactly():
    tr = Transitions(half_life=10.0, weights=UNIT)
    tr.track_deltas()
    learn_all(tr, [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u1", "a")])
    d = tr.export_delta()
    assert combine_transitions([d, d], [1.0, -1.0])["items"] == []
    assert combine_transitions([None, None], [1.0, 1.0]) is None
    bundle = {**empty_delta(), "transitions": d}
    assert not is_empty(bundle) and is_empty(subtract(combine([bundle]), bundle))
    with pytest.raises(ValueError, match="half-life"):
        Transitions(half_life=5.0).merge_delta(d)
    with pytest.raises(RuntimeError):
        Transitions().export_delta()
