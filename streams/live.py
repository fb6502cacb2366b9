"""What the live page (``GET /``, streams/static/) needs from a worker: item titles, and the lists
the worker publishes, pushed to the browsers watching that user.

* :class:`Catalogue`: item id → title and categories, from the items topic as this worker reads
  it (the model keeps no text: only ids, vectors and text hashes). Bounded, oldest out first.
  In memory only: after a restart from a checkpoint, items read before it show their ids until
  they are upserted again.
* :class:`Subscribers`: per user, the bounded queues of the server-sent-event streams open on
  that user. :meth:`Subscribers.publish` never waits: the batch task calls it for every list it
  publishes, and a slow browser must cost it nothing. A full queue drops its oldest list (a
  browser that fell behind only needs the newest one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from typing import Any

from recstream.events import Item

MAX_TITLES = 200_000  # ~40 MB at worst (256-character ids, 1 KiB titles, a few categories)
MAX_TITLE_CHARS = 200  # the page shows a line, not a description
MAX_CATEGORIES = 5
QUEUE_SIZE = 8  # lists kept for one slow stream before the oldest are dropped
MAX_SUBSCRIBERS = 256  # open streams per worker (each is a socket and a queue)


class Catalogue:
    """A bounded title/categories map, fed by the items agent (:meth:`Runtime.on_item`)."""

    def __init__(self, max_items: int = MAX_TITLES) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, item: Item) -> None:
        """Record an upsert (newest last) or forget a deletion."""
        if item.deleted:
            self._items.pop(item.item_id, None)
            return
        entry = (item.title.strip()[:MAX_TITLE_CHARS], tuple(item.categories[:MAX_CATEGORIES]))
        self._items[item.item_id] = entry
        self._items.move_to_end(item.item_id)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def lookup(self, item_id: str) -> dict[str, Any]:
        """``{"title": ..., "categories": [...]}``; an unknown item has an empty title."""
        title, categories = self._items.get(item_id, ("", ()))
        return {"title": title, "categories": list(categories)}

    def enrich(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A recommendation list (the public JSON) with each item's title and categories."""
        items = [{**it, **self.lookup(str(it.get("item_id")))} for it in rec.get("items", [])]
        return {**rec, "items": items}


class TooManySubscribers(Exception):
    """Every stream slot is taken: the view answers 503."""


class Subscribers:
    """Open live streams by user. Single-threaded (the event loop): no locks needed."""

    def __init__(self, max_total: int = MAX_SUBSCRIBERS, queue_size: int = QUEUE_SIZE) -> None:
        self.max_total = max_total
        self.queue_size = queue_size
        self._by_user: dict[str, set[asyncio.Queue[bytes]]] = {}
        self.dropped = 0  # lists a slow stream never saw (it got a newer one instead)

    def __len__(self) -> int:
        return sum(len(qs) for qs in self._by_user.values())

    def subscribe(self, user_id: str) -> asyncio.Queue[bytes]:
        if len(self) >= self.max_total:
            raise TooManySubscribers(f"{self.max_total} live streams open")
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=self.queue_size)
        self._by_user.setdefault(user_id, set()).add(queue)
        return queue

    def unsubscribe(self, user_id: str, queue: asyncio.Queue[bytes]) -> None:
        """Called when a stream ends, however it ends; an empty user entry goes too."""
        queues = self._by_user.get(user_id)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self._by_user[user_id]

    def publish(self, user_id: str, body: bytes) -> None:
        """Hand ``body`` (a published list) to every stream on ``user_id``; never waits.
        Without a subscriber this is one dict lookup per list."""
        for queue in self._by_user.get(user_id, ()):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(body)


class LiveFeed:
    """Runtime mixin: the live page's reads of the model's public state (``GET /users/top``,
    ``GET /stats``). The Runtime sets ``catalogue`` and ``subscribers`` and has ``processor``."""

    processor: Any
    catalogue: Catalogue
    subscribers: Subscribers

    def live_stats(self) -> dict[str, Any]:
        """The live page's strip, read without side effects: snapshot() advances the metrics
        topic's rate meter, so the page computes throughput from two readings of its own."""
        p = self.processor
        hr = p.online.hit_rate
        return {
            "ts": round(time.time(), 3),
            "events_processed": p.events_processed,
            "latency_ms": p.latency.percentiles_ms(50, 99),
            "k": p.k,
            "hit_rate": None if hr is None else round(hr, 4),
            "evaluated": p.online.evaluated,
            "dlq_total": sum(p.counts.dlq_by_reason.values()),
            "encode_queue": len(p.encode_queue),
            "titles": len(self.catalogue),
            "live_streams": len(self.subscribers),
        }

    def top_users(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` users with the most learned events (the live page's picker)."""
        users = getattr(self.processor.recommender, "users", None)
        most_active = getattr(users, "most_active", None)
        if most_active is None:  # a recommender without a UserStore: nobody to offer
            return []
        return [{"user_id": u, "events": n_events} for u, n_events in most_active(n)]


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; JSON has no raw newlines, so one ``data:`` line is enough."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
