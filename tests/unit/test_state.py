import numpy as np
import pytest

from recstream.events import Event
from recstream.state import UserStore


def ev(n, item, type_="view", ts=None, user="u1", **context):
    return Event(f"e{n}", user, item, type_, float(n if ts is None else ts), context)


def test_counts_recent_seen_purchased_and_times():
    users = UserStore(recent_size=2)
    for n, (item, t) in enumerate([("a", "view"), ("b", "purchase"), ("c", "click")]):
        users.update(ev(n, item, t, ts=100.0 + n), row=n)
    s = users.get("u1")
    assert s.counts == {"view": 1, "purchase": 1, "click": 1}
    assert [r for r, _, _ in s.recent] == [1, 2]  # bounded, newest last
    assert s.recent_items() == [1, 2] and s.recent_items("click") == [2]
    assert s.seen == {0, 1, 2} and s.purchased == {1}
    assert (s.first_seen, s.last_seen, s.n_events) == (100.0, 102.0, 3)
    assert s.excluded("purchased") == {1} and s.excluded("seen") == {0, 1, 2}
    with pytest.raises(ValueError):
        s.excluded("everything")
    assert users.get("nobody") is None and len(users) == 1


def test_profile_is_decayed_type_weighted_mean():
    users = UserStore(weights={"view": 1.0, "purchase": 3.0}, profile_decay=0.5)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    users.update(ev(0, "a", "purchase"), row=0, vector=a)
    users.update(ev(1, "b", "view"), row=1, vector=b)
    s = users.get("u1")
    # sum = 0.5 * 3 * a + 1 * b = (1.5, 1) -> normalised
    expected = np.array([1.5, 1.0]) / np.hypot(1.5, 1.0)
    np.testing.assert_allclose(s.profile(), expected, rtol=1e-6)
    assert s.profile().dtype == np.float32
    users.update(ev(2, "c", "click", user="u2"), row=2)  # no vector yet
    assert users.get("u2").profile() is None


def test_sessions_by_gap_and_by_session_id():
    users = UserStore(session_gap_s=60)
    users.update(ev(0, "a", ts=0), row=0)
    users.update(ev(1, "b", ts=30), row=1)
    assert users.get("u1").n_sessions == 1
    users.update(ev(2, "c", ts=1000), row=2)
    assert users.get("u1").n_sessions == 2
    users.update(ev(3, "a", ts=1001, session_id="s1"), row=0)
    users.update(ev(4, "b", ts=1002, session_id="s1"), row=1)
    users.update(ev(5, "c", ts=1003, session_id="s2"), row=2)
    s = users.get("u1")
    assert s.n_sessions == 4 and s.session_id == "s2" and s.session_start == 1003
