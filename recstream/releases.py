"""Items published when the stream reaches their release time, and how soon lists reach them.

A shop publishes an item when it goes on sale; a worker learns of it from the items topic then,
not before. An evaluation that hands the model the whole catalogue before the first event also
shows it items that nobody *can* buy yet: with content similar to a user's taste and no events,
they teach a learned ranker that "similar but untouched" is never picked, which is false of the
real new items it will meet (the synthetic shop releases 30 % of its catalogue over the stream).
So :func:`recstream.evaluate.evaluate` publishes an item when the stream reaches its
``Item.ts`` (:class:`ReleaseSchedule`), and :class:`ReleaseReach` measures what a brand-new item
needs: how many released items a list showed while they were still cold, and how many events
after its release an item first appeared in a list.

Items with ``ts`` at or before the first event (every item of a dataset without release times,
such as ml-latest-small, whose ``ts`` is 0) are the catalogue the stream starts with.

>>> from recstream.events import Event, Item
>>> items = [Item("old", ts=0.0), Item("new", ts=15.0), Item("late", ts=99.0)]
>>> events = [Event(str(t), "u", "old", "view", float(t)) for t in (10, 20, 30)]
>>> schedule = ReleaseSchedule(items, events)
>>> [i.item_id for i in schedule.upfront]
['old']
>>> [[i.item_id for i in schedule.due(e)] for e in events]
[[], ['new'], []]
>>> schedule.unreleased  # after the stream: never published, never in the model
1
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from recstream.events import Event, Item

__all__ = ["ReleaseReach", "ReleaseSchedule"]


class ReleaseSchedule:
    """The catalogue split into the items the stream starts with and the rest, by release time.

    An event about an item not yet released (a dataset whose ``ts`` disagree with its events)
    releases it at that event: the model is never asked to learn an item it has not been given.
    """

    def __init__(self, items: Sequence[Item], events: Sequence[Event]) -> None:
        start = events[0].ts if events else float("inf")
        self.upfront = [item for item in items if item.ts <= start]
        later = sorted((item for item in items if item.ts > start), key=lambda item: item.ts)
        self._later = later
        self._times = [item.ts for item in later]
        self._next = 0
        self._pending = {item.item_id: item for item in later}

    @property
    def unreleased(self) -> int:
        """Items not published yet."""
        return len(self._pending)

    def due(self, event: Event) -> list[Item]:
        """The items to publish before ``event``: released at or before its time, and its own
        item when that was still to come."""
        out = []
        end = bisect.bisect_right(self._times, event.ts, lo=self._next)
        for item in self._later[self._next : end]:
            if self._pending.pop(item.item_id, None) is not None:
                out.append(item)
        self._next = end
        early = self._pending.pop(event.item_id, None)
        if early is not None:
            out.append(early)
        return out


class ReleaseReach:
    """Whether and how soon lists showed the items released during the stream.

    ``cold_threshold``: an item is still cold while it has fewer events than this (the
    protocol's cold items). Call :meth:`released` when an item is published, :meth:`listed` with
    every evaluated list, :meth:`learned` with every event.

    >>> reach = ReleaseReach(cold_threshold=2)
    >>> reach.released("a", at=0); reach.released("b", at=0)
    >>> reach.listed(["a", "x"], at=3)
    >>> reach.learned("b"); reach.learned("b")
    >>> reach.listed(["b"], at=5)  # b has had 2 events: listed, but no longer cold
    >>> m = reach.metrics()
    >>> m["released"], m["released_listed"], m["released_listed_cold"]
    (2, 1.0, 0.5)
    >>> m["released_first_list_events"]  # a: 3 events after release, b: 5
    4.0
    """

    def __init__(self, cold_threshold: int = 5) -> None:
        self.cold_threshold = cold_threshold
        self._released_at: dict[str, int] = {}  # item -> stream index it was published at
        self._events: dict[str, int] = {}  # events on each released item so far
        self._first_list: dict[str, tuple[int, bool]] = {}  # item -> (index, cold then)

    def released(self, item_id: str, at: int) -> None:
        self._released_at.setdefault(item_id, at)
        self._events.setdefault(item_id, 0)

    def learned(self, item_id: str) -> None:
        if item_id in self._events:
            self._events[item_id] += 1

    def listed(self, ids: Iterable[str], at: int) -> None:
        for item_id in ids:
            if item_id in self._released_at and item_id not in self._first_list:
                cold = self._events[item_id] < self.cold_threshold
                self._first_list[item_id] = (at, cold)

    def metrics(self, lo: int = 0, hi: int | None = None) -> dict[str, Any]:
        """Over the items released at stream index ``lo <= at < hi``: ``released`` (how many),
        ``released_listed`` (share that appeared in any list), ``released_listed_cold`` (share
        first listed while still cold: a list found them before the crowd did) and
        ``released_first_list_events`` (median stream events from release to the first list,
        over those listed; None when none was)."""
        items = [i for i, at in self._released_at.items() if at >= lo and (hi is None or at < hi)]
        firsts = [(i, self._first_list[i]) for i in items if i in self._first_list]
        n = len(items)
        return {
            "released": n,
            "released_listed": len(firsts) / n if n else 0.0,
            "released_listed_cold": sum(cold for _, (_, cold) in firsts) / n if n else 0.0,
            "released_first_list_events": (
                float(statistics.median(at - self._released_at[i] for i, (at, _) in firsts))
                if firsts
                else None
            ),
        }
