import math

import numpy as np
import pytest

from recstream.context import ContextAffinity
from recstream.deltas import combine, combine_context, empty_delta, is_empty, subtract
from recstream.events import Event
from recstream.user_partitions import decode_value, encode_value

HOUR = 3600.0


def ev(n, user, item, ts=0.0, type_="view", **context):
    return Event(f"e{n}", user, item, type_, ts, context)


def test_hour_from_local_hour_or_utc_ts_and_device_names():
    ctx = ContextAffinity(n_hour_buckets=6)
    assert ctx.context_of(ev(0, "u", "i", ts=13 * HOUR)) == {"hour": "3"}  # 13h: 12-16
    assert ctx.context_of(ev(0, "u", "i", ts=13 * HOUR + 86400 * 9)) == {"hour": "3"}
    assert ctx.context_of(ev(0, "u", "i", ts=13 * HOUR, local_hour=23)) == {"hour": "5"}
    for bad in (24, -1, "7", True, None):  # not an hour: the event time's
        assert ctx.context_of(ev(0, "u", "i", ts=HOUR, local_hour=bad))["hour"] == "0"
    assert ctx.context_of(ev(0, "u", "i", device=" Mobile "))["device"] == "mobile"
    assert "device" not in ctx.context_of(ev(0, "u", "i", device={"os": "x"}))
    assert ctx.context_of(ev(0, "u", "i", device="x" * 500))["device"] == "x" * 32


def test_new_device_names_past_the_cap_count_as_other():
    ctx = ContextAffinity(max_devices=2)
    for n, device in enumerate(["tv", "mobile", "fridge", "tv", "watch"]):
        ctx.learn(ev(n, f"u{n}", "i", device=device))
    devices = sorted(c for c in ctx.cells if c.startswith("device="))
    assert devices == ["device=mobile", "device=other", "device=tv"]
    assert ctx.current("u4") == {"hour": "0", "device": "other"}


def test_lift_by_hand_and_the_users_current_context():
    ctx = ContextAffinity(weights={"view": 1.0}, prior=2.0, n_hour_buckets=2)
    # "night" item: 3 of 4 events before noon; "day" item: 4 of 4 after
    stream = [("night", 1), ("night", 2), ("night", 3), ("night", 15)] + [("day", 14)] * 4
    for n, (item, hour) in enumerate(stream):
        ctx.learn(ev(n, f"u{n}", item, ts=hour * HOUR))
    ctx.learn(Event("e9", "me", "other", "purchase", 5 * HOUR))  # a purchase: weight 0 here
    assert ctx.current("me") == {"hour": "0"}
    p = 3 / 8  # the morning's share of every counted event
    night = (3 + 2 * p) / (4 + 2) / p
    day = (0 + 2 * p) / (4 + 2) / p
    rows = [ctx.index.row(i) for i in ("night", "day", "other")]
    scores = ctx.score("me", "hour")
    assert scores[rows] == pytest.approx([math.log(night), math.log(day), 0.0])
    assert ctx.score("me", "device").tolist() == [0.0] * len(ctx.index)  # no device known
    assert ctx.score("nobody", "hour").tolist() == [0.0] * len(ctx.index)


def test_an_event_without_a_device_keeps_the_users_last_one():
    ctx = ContextAffinity()
    ctx.learn(ev(0, "u1", "a", device="tv"))
    ctx.learn(ev(1, "u1", "b", ts=20 * HOUR))
    assert ctx.current("u1") == {"hour": "5", "device": "tv"}


def test_scores_at_rows_equal_the_full_scores():
    ctx = ContextAffinity(prior=1.0)
    rng = np.random.default_rng(3)
    for n in range(300):
        device = ["tv", "mobile", "desktop"][rng.integers(3)]
        ctx.learn(
            ev(
                n,
                f"u{rng.integers(9)}",
                f"i{rng.integers(40)}",
                rng.random() * 86400,
                "view",
                device=device,
            )
        )
    ctx.index.add("uncounted")
    rows = np.array([len(ctx.index) - 1, 3, 0, 3, 11], dtype=np.int64)
    for key in ("hour", "device"):
        full = ctx.score("u1", key)
        assert full.shape == (len(ctx.index),) and np.ptp(full) > 0
        assert np.allclose(ctx.score("u1", key, rows), full[rows])
    assert ctx.score("u1", "device")[-1] == 0.0  # no events: the prior's lift of 1


def test_user_context_moves_through_the_wire_format():
    a, b = ContextAffinity(), ContextAffinity()
    a.learn(ev(0, "u1", "a", ts=7 * HOUR, device="tv"))
    b.import_user("u1", decode_value(encode_value(a.export_user("u1"))))
    assert b.current("u1") == {"hour": "1", "device": "tv"}
    assert a.export_user("nobody") is None and b.user_ids() == ["u1"]
    assert b.forget_user("u1") and b.current("u1") == {} and not b.forget_user("u1")


def test_replicas_that_exchange_deltas_count_like_one_model():
    stream = [(f"u{n % 5}", f"i{n % 7}", n * 1111.0, ["tv", "mobile"][n % 2]) for n in range(60)]
    one = ContextAffinity()
    shards = [ContextAffinity(), ContextAffinity()]
    for shard in shards:
        shard.track_deltas()
    for n, (user, item, ts, device) in enumerate(stream):
        one.learn(ev(n, user, item, ts, device=device))
        shards[int(user[1:]) % 2].learn(ev(n, user, item, ts, device=device))
    bundles = [{**empty_delta(), "context": s.export_delta()} for s in shards]
    total = combine(bundles)
    for shard, own in zip(shards, bundles, strict=True):
        shard.merge_delta(subtract(total, own)["context"])
        assert shard.export_delta()["items"] == []  # merged counts are not exported again
    for user in ("u1", "u2"):
        shard = shards[int(user[1:]) % 2]
        for key in ("hour", "device"):
            want = dict(zip(one.index.ids, one.score(user, key), strict=True))
            got = dict(zip(shard.index.ids, shard.score(user, key), strict=True))
            assert got == pytest.approx(want)
    d = bundles[0]["context"]
    assert combine_context([d, d], [1.0, -1.0])["items"] == []
    assert is_empty(subtract(total, total)) and not is_empty(bundles[0])
