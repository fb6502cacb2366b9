"""Item deltas (recstream.deltas) and the sharded evaluation (recstream.sharded): issue 10."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.deltas import combine, is_empty, subtract
from recstream.evaluate import evaluate
from recstream.events import Event, Item
from recstream.recommender import Recommender
from recstream.sharded import ShardedRecommender, murmur2, partition_for


@pytest.fixture(scope="module")
def stream():
    items, events = synthetic_stream(n_users=30, n_items=60, n_events=2500, seed=3)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items), 16)).astype(np.float32)
    return items, events, ([item.item_id for item in items], vectors)


def _fed(model, items, vectors):
    for item in items:
        model.upsert_item(item)
    model.set_item_vectors(*vectors)
    return model


def _without_speed(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "events_per_s"}


def _covisit_state(rec: Recommender) -> dict:
    """Every co-visitation count and norm, by item id (row numbers may differ by replica)."""
    ids, cv = rec.index.ids, rec.covisit
    pairs = {}
    for r, item in enumerate(ids):
        cols, vals = cv.pairs.row(r)
        pairs.update({(item, ids[c]): float(v) for c, v in zip(cols, vals, strict=True)})
    norms = {item: cv.similarity(item, item) for item in ids}
    return {"pairs": pairs, "norms": norms}


def _values(rec: Recommender, counter: str) -> dict[str, float]:
    values = getattr(rec, counter).values(float(rec.n_events))
    return dict(zip(rec.index.ids, values.tolist(), strict=True))


# --- one shard is the single model ----------------------------------------------------------


@pytest.mark.parametrize("interval", [1, 7, 500])
def test_one_shard_gives_exactly_the_single_models_numbers(stream, interval):
    items, events, vectors = stream
    single = evaluate(Recommender(), items, events, 10, vectors=vectors)
    group = ShardedRecommender(1, interval)
    sharded = evaluate(group, items, events, 10, vectors=vectors)
    assert _without_speed(sharded) == _without_speed(single)
    assert group.syncs == len(events) // interval


# --- syncing after every event --------------------------------------------------------------


def test_syncing_after_every_event_reproduces_the_single_models_item_counts(stream):
    """With T = 1 every event reaches every shard before the next one, stamped with the same
    clock, so the count-based item state equals the single model's. Co-visitation is exactly
    equal (its weights are dyadic: sums are exact in any order); popularity and fresh marks are
    decayed sums re-expressed in each replica's own reference frame, so equality is up to float
    rounding in general (here it is exact too: both frames start at the first event)."""
    items, events, vectors = stream
    single = _fed(Recommender(), items, vectors)
    group = ShardedRecommender(2, 1)
    _fed(group, items, vectors)
    for event in events:
        single.learn(event)
        group.learn(event)
    assert min(group.stats()["users_per_shard"]) > 0  # both shards had users
    expected = _covisit_state(single)
    for shard in group.shards:
        assert shard.n_events == single.n_events == len(events)  # the clocks agree
        assert _covisit_state(shard) == expected
        for counter in ("popularity", "fresh"):
            got, want = _values(shard, counter), _values(single, counter)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
    # MF differs from the single model (each shard samples its own negatives and initialises
    # its own users), but the replicas' item factors agree: each is base + every shard's steps
    a, b = (s.mf.item_factors for s in group.shards)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_after_a_sync_every_shard_has_the_same_item_side(stream):
    items, events, vectors = stream
    group = ShardedRecommender(3, 400)
    _fed(group, items, vectors)
    for event in events[:1200]:  # 1200 = 3 exchanges, the last one just done
        group.learn(event)
    first, *others = group.shards
    for shard in others:
        assert _covisit_state(shard) == _covisit_state(first)
        assert _values(shard, "popularity") == pytest.approx(_values(first, "popularity"))
        assert _values(shard, "fresh") == pytest.approx(_values(first, "fresh"))
        np.testing.assert_allclose(shard.mf.item_factors, first.mf.item_factors, atol=1e-12)


# --- the delta algebra ----------------------------------------------------------------------


def _three_deltas(stream) -> list[dict]:
    """Three replicas, each learning a third of the users, and their deltas."""
    items, events, vectors = stream
    replicas = [_fed(Recommender(), items, vectors) for _ in range(3)]
    for rec in replicas:
        rec.track_item_deltas()
    for event in events[:1500]:
        replicas[partition_for(event.user_id, 3)].learn(event)
    return [rec.item_delta() for rec in replicas]


def test_combining_is_order_independent(stream):
    deltas = _three_deltas(stream)
    results = [combine(list(order)) for order in itertools.permutations(deltas)]
    first = results[0]
    for other in results[1:]:
        assert other["n_events"] == first["n_events"] == 1500
        for part in ("covisit", "fresh"):  # counts and earliest marks: exactly
            assert _as_dict(other[part]) == _as_dict(first[part])
        for part in ("popularity", "mf"):  # float sums: up to rounding
            a, b = _as_dict(other[part]), _as_dict(first[part])
            assert a.keys() == b.keys()
            for key in a.keys() - {"items", "half_life"}:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
            assert a["items"] == b["items"]


def test_merging_in_any_order_gives_the_same_counts(stream):
    items, _, vectors = stream
    deltas = _three_deltas(stream)
    states = []
    for order in itertools.permutations(deltas):
        rec = _fed(Recommender(), items, vectors)
        for delta in order:
            rec.apply_item_delta(delta)
        states.append((_covisit_state(rec), rec.n_events, _values(rec, "fresh")))
    for covisit, clock, fresh in states[1:]:
        assert (covisit, clock) == states[0][:2]  # exactly
        # the earliest mark of each item, re-expressed in a frame set by the first merge
        assert fresh == pytest.approx(states[0][2], rel=1e-15)


def test_subtract_leaves_the_other_shards_part(stream):
    a, b, c = _three_deltas(stream)
    others = subtract(combine([a, b, c]), b)
    expected = combine([a, c])
    assert others["n_events"] == expected["n_events"]
    assert _as_dict(others["covisit"]) == _as_dict(expected["covisit"])
    assert is_empty(subtract(combine([b]), b))


def test_deltas_are_plain_data_and_survive_a_json_round_trip(stream):
    items, _, vectors = stream
    delta = combine(_three_deltas(stream))
    _assert_plain(delta)
    wire = json.loads(json.dumps(delta, default=lambda a: a.tolist()))  # e.g. a Kafka message
    direct, via_json = (_fed(Recommender(), items, vectors) for _ in range(2))
    direct.apply_item_delta(delta)
    via_json.apply_item_delta(wire)
    assert _covisit_state(via_json) == _covisit_state(direct)
    assert _values(via_json, "popularity") == _values(direct, "popularity")
    np.testing.assert_array_equal(via_json.mf.item_factors, direct.mf.item_factors)
    nothing = json.loads(json.dumps(subtract(delta, delta), default=lambda a: a.tolist()))
    assert is_empty(combine([nothing, nothing]))
    via_json.apply_item_delta(nothing)
    assert _covisit_state(via_json) == _covisit_state(direct)


def test_deltas_are_keyed_by_item_id_not_by_row():
    a, b = Recommender(), Recommender()
    for i in "xyz":
        a.upsert_item(Item(i))
    for i in "zyx":  # b numbers the items the other way round
        b.upsert_item(Item(i))
    for rec in (a, b):
        rec.track_item_deltas()
    for n, i in enumerate("xyxz"):
        a.learn(Event(f"e{n}", "u1", i, "click", float(n)))
    b.apply_item_delta(a.item_delta())
    assert b.index.row("x") != a.index.row("x")
    for p, q in itertools.combinations("xyz", 2):
        assert b.covisit.similarity(p, q) == a.covisit.similarity(p, q)
    assert _values(b, "popularity") == pytest.approx(_values(a, "popularity"))


def test_merged_changes_are_not_exported_again():
    a, b = Recommender(), Recommender()
    for rec in (a, b):
        for i in "xyz":
            rec.upsert_item(Item(i))
        rec.track_item_deltas()
    for n, i in enumerate("xyz"):
        a.learn(Event(f"e{n}", "u1", i, "purchase", float(n)))
    b.apply_item_delta(a.item_delta())
    assert is_empty(b.item_delta())  # b learned nothing itself: no echo back to a


def test_mf_delta_is_the_sum_of_the_steps_since_the_last_export():
    a, b = Recommender(seed=5), Recommender(seed=5)
    for rec in (a, b):
        for i in "vwxyz":
            rec.upsert_item(Item(i))
        rec.track_item_deltas()
    for n, (u, i) in enumerate([("u1", "x"), ("u2", "x"), ("u1", "y")]):
        b.learn(Event(f"b{n}", u, i, "purchase", float(n)))  # b's base: its first items
    base = a.mf.item_factors.copy()
    a.learn(Event("a1", "u9", "x", "purchase", 1.0))
    a.learn(Event("a2", "u9", "z", "click", 2.0))
    delta = a.item_delta()["mf"]
    rows = [a.index.row(i) for i in delta["items"]]
    np.testing.assert_allclose(delta["factors"], a.mf.item_factors[rows] - base[rows])
    before = b.mf.item_factors.copy()
    b.apply_item_delta(a.item_delta() | {"mf": delta, "n_events": 0})
    np.testing.assert_allclose(b.mf.item_factors[rows], before[rows] + delta["factors"])


def test_an_item_first_seen_by_two_shards_keeps_the_earlier_mark():
    group = ShardedRecommender(2, 10)
    for i in "abc":
        group.upsert_item(Item(i))
    u0, u1 = "u1", "u5"  # shards 0 and 1
    assert (group.shard_of(u0), group.shard_of(u1)) == (0, 1)
    stream = [(u1, "a"), (u1, "b"), (u0, "a"), (u0, "b"), (u0, "c"), (u1, "a"), (u1, "c")]
    for n, (u, i) in enumerate(stream):  # c: first at clock 3 on shard 0, 3 on shard 1 too
        group.learn(Event(f"e{n}", u, i, "view", float(n)))
    group.sync()
    single = Recommender()
    for i in "abc":
        single.upsert_item(Item(i))
    for n, (u, i) in enumerate(stream):
        single.learn(Event(f"e{n}", u, i, "view", float(n)))
    for shard in group.shards:
        assert shard.n_events == 7
        got = _values(shard, "fresh")
        assert got["a"] == pytest.approx(_values(single, "fresh")["a"])  # both marked at 1
        assert got["c"] == pytest.approx(2 ** (-(7 - 3) / 2000))  # one mark, the earlier
        assert max(got.values()) <= 1.0  # never counted twice


def test_an_item_unknown_to_the_receiver_waits_for_its_catalogue_entry():
    a, b = Recommender(), Recommender()
    for rec in (a, b):
        rec.upsert_item(Item("x"))
        rec.track_item_deltas()
    a.learn(Event("e1", "u1", "x", "purchase", 1.0))
    a.learn(Event("e2", "u1", "new", "purchase", 2.0))  # not catalogued: learned, not shown
    b.apply_item_delta(a.item_delta())
    assert "new" in b.index and not b.index.active[b.index.row("new")]
    assert [r.item_id for r in b.recommend("u7", k=5)] == ["x"]


# --- partitioning ----------------------------------------------------------------------------


def test_murmur2_is_kafkas():
    # Kafka's own test vectors (clients/src/test/.../UtilsTest.java, testMurmur2)
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in cases} == cases
    kafka_default = pytest.importorskip("kafka.partitioner.default")
    for n in range(300):  # kafka-python's murmur2 returns the unsigned value
        key = f"user-{n}".encode()
        assert murmur2(key) & 0xFFFFFFFF == kafka_default.murmur2(key)


def test_sharded_command_line(tmp_path, capsys):
    from recstream.cli import main

    items, events = synthetic_stream(n_users=20, n_items=30, n_events=600, seed=1)
    (tmp_path / "data").mkdir()
    lines = ["item_id,title"] + [f"{i.item_id},{i.title}" for i in items]
    (tmp_path / "data" / "items.csv").write_text("\n".join(lines) + "\n")
    lines = ["timestamp,user_id,item_id,event_type"]
    lines += [f"{e.ts},{e.user_id},{e.item_id},{e.type}" for e in events]
    (tmp_path / "data" / "events.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    argv = ["evaluate", str(tmp_path / "data"), "--no-encode", "--json", str(out)]
    assert main([*argv, "--shards", "3", "--sync-interval", "50"]) == 0
    result = json.loads(out.read_text())
    assert (result["shards"], result["sync_interval"], result["syncs"]) == (3, 50, 12)
    assert main([*argv, "--shards", "2", "--model", "covisit"]) == 2
    assert "--shards simulates workers of the hybrid" in capsys.readouterr().err


# --- helpers ---------------------------------------------------------------------------------


def _as_dict(part: dict) -> dict:
    """A component delta as {name: array}, pairs as {(item, item): weight}: order-free."""
    items = part["items"]
    out = {}
    if "pair_w" in part:
        columns = (part["pair_a"].tolist(), part["pair_b"].tolist(), part["pair_w"].tolist())
        pairs = zip(*columns, strict=True)
        out["pairs"] = {frozenset((items[a], items[b])): w for a, b, w in pairs}
    order = np.argsort(items)
    for name in ("norm", "events", "values", "factors", "biases"):
        if name in part:
            out[name] = np.asarray(part[name])[order].tolist()
    out["items"] = sorted(items)
    for name in ("at", "half_life", "mean_n", "mean_sum"):
        if name in part:
            out[name] = part[name]
    return out


def _assert_plain(value) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    elif isinstance(value, np.ndarray):
        assert value.dtype.kind in "if"
    else:
        assert value is None or isinstance(value, str | int | float)
