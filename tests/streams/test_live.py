"""The live page's pieces without a worker: the bounded title map, the subscriber queues (a slow
stream never blocks the publisher and drops its oldest lists), the guard's token rules, and the
titles in `recstream consume` lines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import make_mocked_request

from recstream.adapters.consume import format_line, remember_title
from recstream.events import Event, Item
from recstream.state import UserStore
from streams.http_guard import authorized
from streams.live import Catalogue, Subscribers, TooManySubscribers, sse


def test_catalogue_is_bounded_and_forgets_deleted_items() -> None:
    c = Catalogue(max_items=2)
    for n in range(3):
        c.apply(Item(f"i{n}", title=f"Item {n}", categories=("a", "b")))
    assert len(c) == 2 and c.lookup("i0") == {"title": "", "categories": []}
    assert c.lookup("i2") == {"title": "Item 2", "categories": ["a", "b"]}
    c.apply(Item("i2", deleted=True))
    rec = c.enrich({"user_id": "u", "items": [{"item_id": "i1", "score": 1.0}]})
    assert rec["items"] == [
        {"item_id": "i1", "score": 1.0, "title": "Item 1", "categories": ["a", "b"]}
    ]
    assert c.lookup("i2")["title"] == ""


def test_a_slow_subscriber_keeps_the_newest_lists_and_never_blocks() -> None:
    async def scenario() -> None:
        subs = Subscribers(max_total=2, queue_size=2)
        slow = subs.subscribe("u1")
        other = subs.subscribe("u2")
        for n in range(5):  # nobody reads: publish must still return at once
            subs.publish("u1", str(n).encode())
        assert [slow.get_nowait(), slow.get_nowait()] == [b"3", b"4"]
        assert subs.dropped == 3 and other.empty()
        try:
            subs.subscribe("u3")
            raise AssertionError("a third stream was accepted")
        except TooManySubscribers:
            pass
        subs.unsubscribe("u1", slow)
        subs.unsubscribe("u2", other)
        assert len(subs) == 0 and subs._by_user == {}
        subs.publish("u1", b"x")  # nobody listening: nothing kept

    asyncio.run(scenario())


def test_sse_frames_are_one_data_line() -> None:
    frame = sse({"title": "two\nlines"}, "published")
    assert frame.startswith(b"event: published\ndata: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 3 and json.loads(frame.split(b"data: ")[1]) == {
        "title": "two\nlines"
    }


def _request(path: str, headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request("GET", path, headers=headers or {})


def test_guard_token_rules() -> None:
    token = "t0ken"
    assert authorized(_request("/"), token)  # the page's files hold no data
    assert authorized(_request("/static/live.js"), token)
    assert not authorized(_request("/static/other.js"), token)
    assert not authorized(_request("/users/top"), token)
    assert authorized(_request("/users/top", {"Authorization": "Bearer t0ken"}), token)
    assert authorized(_request("/stream/recommendations?user=u1&token=t0ken"), token)
    assert not authorized(_request("/stream/recommendations?user=u1&token=t0ke"), token)
    assert not authorized(_request("/healthz?token=t0ken"), token)  # that route only
    assert not authorized(_request("/events?token=t0ken"), token)


def test_most_active_users() -> None:
    users = UserStore()
    for n, user in enumerate(["a", "b", "b", "c", "c", "c"]):
        users.update(Event(f"e{n}", user, "i1", "view", ts=float(n)), row=0)
    assert users.most_active(2) == [("c", 3), ("b", 2)]


def test_consume_lines_carry_titles() -> None:
    titles: dict[str, str] = {}
    remember_title(titles, b"i1", json.dumps({"item_id": "i1", "title": "Trail shoes"}).encode())
    remember_title(titles, b"i2", json.dumps({"item_id": "i2", "title": "Tent"}).encode())
    remember_title(titles, b"i2", None)  # a tombstone
    remember_title(titles, b"i3", b"{not json")
    assert titles == {"i1": "Trail shoes"}
    rec = {"user_id": "u1", "items": [{"item_id": "i1", "reason": "popular"}, {"item_id": "i2"}]}
    assert 'u1 → i1 "Trail shoes" (popular), i2  [2 items' in format_line(rec, titles=titles)
