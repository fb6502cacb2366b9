import pytest

from recstream.events import Event
from recstream.popularity import Popularity


def ev(n, user, item, type_="purchase", ts=None):
    return Event(f"e{n}", user, item, type_, float(n if ts is None else ts))


def test_purchase_count_baseline_counts_only_purchases():
    pop = Popularity(weights={"purchase": 1.0}, half_life=None)
    stream = [
        ("u1", "a", "purchase"),
        ("u2", "a", "purchase"),
        ("u3", "b", "view"),
        ("u3", "b", "view"),
        ("u3", "b", "click"),
        ("u4", "c", "purchase"),
    ]
    for n, (u, i, t) in enumerate(stream):
        pop.learn(ev(n, u, i, t))
    assert [(r.item_id, r.score) for r in pop.recommend("u9", k=3)] == [
        ("a", 2.0),
        ("c", 1.0),
        ("b", 0.0),
    ]
    assert all(r.reason == "popular now" for r in pop.recommend("u9"))


def test_exclusion_purchased_vs_seen():
    pop = Popularity(weights={"purchase": 1.0, "view": 0.5}, half_life=None)
    for n, (u, i, t) in enumerate(
        [
            ("u1", "a", "purchase"),
            ("u1", "b", "view"),
            ("u2", "a", "purchase"),
            ("u2", "b", "purchase"),
        ]
    ):
        pop.learn(ev(n, u, i, t))
    assert [r.item_id for r in pop.recommend("u1")] == ["b"]
    assert pop.recommend("u1", exclude="seen") == []
    with pytest.raises(ValueError):
        pop.recommend("u1", exclude="nothing")


def test_decay_halves_per_half_life_on_the_event_clock():
    pop = Popularity(weights={"view": 1.0}, half_life=10, clock="events")
    pop.learn(ev(0, "u1", "a", "view"))
    for n in range(1, 11):
        pop.learn(ev(n, "u1", "b", "view"))
    a = pop.index.row("a")
    assert pop.score(None)[a] == pytest.approx(0.5)


def test_decay_on_the_time_clock_and_rescaling_keeps_values_finite():
    pop = Popularity(weights={"view": 1.0}, half_life=1.0, clock="time")
    pop.learn(ev(0, "u1", "a", "view", ts=0.0))
    pop.learn(ev(1, "u1", "b", "view", ts=2.0))
    s = pop.score(None)
    assert s[pop.index.row("a")] == pytest.approx(0.25)
    assert s[pop.index.row("b")] == pytest.approx(1.0)
    pop.learn(ev(2, "u1", "c", "view", ts=500.0))  # 2**498 would overflow without rescaling
    s = pop.score(None)
    assert s[pop.index.row("c")] == pytest.approx(1.0)
    assert s[pop.index.row("a")] == pytest.approx(0.0)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        Popularity(clock="wall")
    with pytest.raises(ValueError):
        Popularity(half_life=0)
