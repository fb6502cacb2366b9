"""Online user state, and the small base every streaming model in recstream shares.

A :class:`UserState` is everything the recommenders need to know about one user, updated in O(1)
per event: the recent items (all types, newest last), the items seen and purchased (for
exclusion), counts by event type, first/last seen times, the current session, and a content
*profile*: the decayed, event-type-weighted mean of the vectors of the items the user touched.

Sessions follow ``event.context["session_id"]`` when the producer sends one, otherwise a new
session starts after ``session_gap_s`` seconds of inactivity.

Memory per user is bounded: ``recent`` by ``recent_size``, and ``seen`` / ``purchased`` keep the
``max_seen`` / ``max_purchased`` items touched most recently (0: all), so exclusion covers only
those. :meth:`UserStore.export_user` gives a user's state as plain data keyed by item *ids*
(rows differ between workers) and :meth:`UserStore.import_user` reads it back, which is how a
user moves between workers or out of memory while idle (:meth:`UserStore.idle`).

>>> import numpy as np
>>> from recstream.events import Event
>>> users = UserStore(recent_size=3)
>>> s = users.update(Event("e1", "u1", "i1", "view", 10.0), row=0, vector=np.array([1.0, 0.0]))
>>> s = users.update(Event("e2", "u1", "i2", "purchase", 20.0), row=1, vector=np.array([0.0, 1.0]))
>>> s.counts, sorted(s.seen), sorted(s.purchased), s.n_sessions
({'view': 1, 'purchase': 1}, [0, 1], [1], 1)
>>> [round(float(x), 3) for x in s.profile()]  # the purchase weighs more than the view
[0.231, 0.973]
>>> s = users.update(Event("e3", "u1", "i3", "click", 99999.0), row=2)
>>> s.n_sessions, [r for r, _, _ in s.recent]
(2, [0, 1, 2])
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recstream.events import Event, ScoredItem
from recstream.index import ItemIndex, top_k

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "EXCLUDE_MODES",
    "RecentSet",
    "StreamModel",
    "UserState",
    "UserStore",
    "decayed_recent",
]

# How much an event says about a user's interest. A purchase is the strongest signal; a view is
# weak but not nothing (the user chose to look). Used by every model unless overridden.
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {"view": 0.25, "click": 0.5, "purchase": 1.0}
EXCLUDE_MODES = ("purchased", "seen")


class RecentSet(dict):
    """A set of rows that remembers the order they were last touched (oldest first).

    It is a dict's keys, so membership is O(1) and dropping the oldest is O(1) amortised; it
    compares equal to a ``set`` of the same rows.

    >>> s = RecentSet.fromkeys([3, 1, 2])
    >>> s.touch(3, cap=2)  # 3 becomes the newest; over the cap the oldest (1) goes
    >>> s, s == {2, 3}, 1 in s
    (RecentSet([2, 3]), True, False)
    """

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def touch(self, row: int, cap: int = 0) -> None:
        """Add ``row`` as the newest; then drop the oldest rows beyond ``cap`` (0: no cap)."""
        if row in self:
            del self[row]  # re-inserted below: the newest again
        self[row] = None
        if cap:
            while len(self) > cap:
                del self[next(iter(self))]

    def add(self, row: int) -> None:
        self.touch(row)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, set | frozenset):
            return self.keys() == other
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        return f"RecentSet({list(self)})"


def decayed_recent(
    recent: Sequence[tuple[int, str, float]], weights: Mapping[str, float], decay: float
) -> list[tuple[int, float]]:
    """``(row, weight)`` of a user's recent events ``(row, type, ts)`` (oldest first), newest
    first: the type's weight (1 when unlisted) times ``decay ** age``, age 0 the newest. How the
    long-term taste features weigh a history (``content_taste``, ``category_taste``).

    >>> decayed_recent([(3, "view", 0.0), (5, "purchase", 1.0)], {"purchase": 2.0}, 0.5)
    [(5, 2.0), (3, 0.5)]
    """
    out = []
    age_weight = 1.0
    for row, type_, _ in reversed(recent):
        out.append((row, weights.get(type_, 1.0) * age_weight))
        age_weight *= decay
    return out


@dataclass(slots=True)
class UserState:
    """What one user did; see the module docstring."""

    recent: deque = field(default_factory=deque)  # (row, type, ts), newest last, bounded
    seen: RecentSet = field(default_factory=RecentSet)  # rows interacted with, oldest first
    purchased: RecentSet = field(default_factory=RecentSet)
    counts: dict[str, int] = field(default_factory=dict)
    n_events: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    session_id: str | None = None
    session_start: float = 0.0
    n_sessions: int = 0
    profile_sum: np.ndarray | None = None  # decayed weighted sum of item vectors
    profile_weight: float = 0.0
    last_event: int = 0  # the store's event clock at the user's last event (idle users)

    def __setstate__(self, state: Any) -> None:
        # Models pickled before last_event existed, or when seen/purchased were plain sets.
        self.last_event = 0
        slots = state[1] if isinstance(state, tuple) else state
        for name, value in (slots or {}).items():
            setattr(self, name, value)
        if not isinstance(self.seen, RecentSet):
            self.seen = RecentSet.fromkeys(self.seen)
            self.purchased = RecentSet.fromkeys(self.purchased)

    def profile(self) -> np.ndarray | None:
        """The L2-normalised content profile, or ``None`` before any item with a vector."""
        if self.profile_sum is None:
            return None
        norm = float(np.linalg.norm(self.profile_sum))
        if norm == 0.0:
            return None
        return (self.profile_sum / norm).astype(np.float32)

    def recent_items(self, type_: str | None = None) -> list[int]:
        """Rows of the recent events (newest last), optionally of one event type only."""
        return [row for row, t, _ in self.recent if type_ is None or t == type_]

    def excluded(self, mode: str) -> RecentSet:
        if mode == "purchased":
            return self.purchased
        if mode == "seen":
            return self.seen
        raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {mode!r}")


class UserStore:
    """All users' :class:`UserState`, updated one event at a time.

    Parameters
    ----------
    recent_size
        How many recent events each user keeps (the window every model reads).
    weights
        Event-type weights for the profile vector.
    profile_decay
        Each new contribution multiplies older ones by this factor, so the profile follows the
        user's current taste (0.95: the last ~20 items dominate).
    session_gap_s
        Inactivity that starts a new session when events carry no ``session_id``.
    max_seen, max_purchased
        Each user keeps only this many most recently touched (purchased) items for exclusion
        and negative sampling (0: all). Bounds a crawler's state; an item dropped from ``seen``
        can be recommended to that user again.
    """

    # Class defaults: a store pickled before these settings existed loads unbounded.
    max_seen = 0
    max_purchased = 0
    n_updates = 0  # events recorded: the clock of last_event when the caller gives none

    def __init__(
        self,
        recent_size: int = 50,
        weights: Mapping[str, float] | None = None,
        profile_decay: float = 0.95,
        session_gap_s: float = 30 * 60,
        max_seen: int = 0,
        max_purchased: int = 0,
    ) -> None:
        self.recent_size = recent_size
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
        self.profile_decay = profile_decay
        self.session_gap_s = session_gap_s
        self.max_seen = max_seen
        self.max_purchased = max_purchased
        self._users: dict[str, UserState] = {}

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def get(self, user_id: str) -> UserState | None:
        return self._users.get(user_id)

    def most_active(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` users with the most events, most first (ties: the earlier user first)."""
        top = heapq.nlargest(n, self._users.items(), key=lambda kv: kv[1].n_events)
        return [(user_id, state.n_events) for user_id, state in top]

    def forget(self, user_id: str) -> bool:
        """Drop everything stored about ``user_id``; True when there was something."""
        return self._users.pop(user_id, None) is not None

    def idle(self, before_event: int | None = None, before_ts: float | None = None) -> list[str]:
        """Users whose last event is older than every bound given: ``last_event < before_event``
        (the clock of :meth:`update`) and ``last_seen < before_ts`` (event time).

        >>> users = UserStore()
        >>> for n, user in enumerate(["u1", "u2", "u1"]):
        ...     _ = users.update(Event(f"e{n}", user, "i", "view", 10.0 * n), row=0, clock=n)
        >>> users.idle(before_event=2), users.idle(before_ts=15.0), users.idle(2, 5.0)
        (['u2'], ['u2'], [])
        """
        if before_event is None and before_ts is None:
            raise ValueError("give before_event, before_ts or both")
        return [
            user_id
            for user_id, state in self._users.items()
            if (before_event is None or state.last_event < before_event)
            and (before_ts is None or state.last_seen < before_ts)
        ]

    def update(
        self,
        event: Event,
        row: int,
        vector: np.ndarray | None = None,
        *,
        clock: int | None = None,
    ) -> UserState:
        """Record ``event`` (whose item is at ``row``); ``vector`` feeds the profile.

        ``clock`` is the caller's event counter, stored as the user's ``last_event`` (default:
        this store's own count of events).
        """
        self.n_updates += 1
        state = self._users.get(event.user_id)
        if state is None:
            state = UserState(recent=deque(maxlen=self.recent_size), first_seen=event.ts)
            self._users[event.user_id] = state
        session_id = event.context.get("session_id") if event.context else None
        if session_id is not None:
            new_session = session_id != state.session_id
        else:
            new_session = state.n_events == 0 or event.ts - state.last_seen > self.session_gap_s
        if new_session:
            state.session_id = session_id
            state.session_start = event.ts
            state.n_sessions += 1
        state.recent.append((row, event.type, event.ts))
        state.seen.touch(row, self.max_seen)
        if event.type == "purchase":
            state.purchased.touch(row, self.max_purchased)
        state.counts[event.type] = state.counts.get(event.type, 0) + 1
        state.n_events += 1
        state.last_seen = max(state.last_seen, event.ts)
        state.last_event = self.n_updates if clock is None else clock
        if vector is not None:
            self.add_to_profile(state, vector, self.weights.get(event.type, 1.0))
        return state

    def add_to_profile(self, state: UserState, vector: np.ndarray, weight: float) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        if state.profile_sum is None or state.profile_sum.shape != vector.shape:
            state.profile_sum = np.zeros_like(vector)
            state.profile_weight = 0.0
        state.profile_sum *= self.profile_decay
        state.profile_sum += weight * vector
        state.profile_weight = self.profile_decay * state.profile_weight + weight

    # -- portable state: plain data keyed by item id ------------------------------------------
    def export_user(self, user_id: str, ids: Sequence[str]) -> dict[str, Any] | None:
        """The user's state as plain data, rows turned into item ids by ``ids``; None if unknown.

        >>> users = UserStore()
        >>> _ = users.update(Event("e1", "u1", "x", "purchase", 5.0), row=1)
        >>> data = users.export_user("u1", ["w", "x"])
        >>> data["recent"], data["seen"], data["purchased"], data["counts"]
        ([('x', 'purchase', 5.0)], ['x'], ['x'], {'purchase': 1})
        >>> other = UserStore()
        >>> other.import_user("u1", data, row_of=["x", "w"].index).purchased
        RecentSet([0])
        """
        state = self._users.get(user_id)
        if state is None:
            return None
        return {
            "recent": [(ids[row], type_, ts) for row, type_, ts in state.recent],
            "seen": [ids[row] for row in state.seen],  # oldest first: the order the caps use
            "purchased": [ids[row] for row in state.purchased],
            "counts": dict(state.counts),
            "n_events": state.n_events,
            "first_seen": state.first_seen,
            "last_seen": state.last_seen,
            "last_event": state.last_event,
            "session_id": state.session_id,
            "session_start": state.session_start,
            "n_sessions": state.n_sessions,
            "profile_sum": None if state.profile_sum is None else state.profile_sum.copy(),
            "profile_weight": state.profile_weight,
        }

    def import_user(
        self, user_id: str, data: Mapping[str, Any], row_of: Callable[[str], int]
    ) -> UserState:
        """Replace the user's state with :meth:`export_user`'s ``data``; ``row_of`` maps an item
        id to this worker's row (adding it when unknown). The caps keep the newest items."""
        seen = [row_of(i) for i in data["seen"]]
        purchased = [row_of(i) for i in data["purchased"]]
        profile = data.get("profile_sum")
        state = UserState(
            recent=deque(
                ((row_of(i), t, float(ts)) for i, t, ts in data["recent"]), maxlen=self.recent_size
            ),
            seen=RecentSet.fromkeys(seen[-self.max_seen :] if self.max_seen else seen),
            purchased=RecentSet.fromkeys(
                purchased[-self.max_purchased :] if self.max_purchased else purchased
            ),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            n_events=int(data["n_events"]),
            first_seen=float(data["first_seen"]),
            last_seen=float(data["last_seen"]),
            session_id=data.get("session_id"),
            session_start=float(data["session_start"]),
            n_sessions=int(data["n_sessions"]),
            profile_sum=None if profile is None else np.array(profile, dtype=np.float32),
            profile_weight=float(data["profile_weight"]),
            last_event=int(data.get("last_event", 0)),
        )
        self._users[user_id] = state
        return state


class StreamModel:
    """Shared plumbing of the streaming models: items index, user store, exclusion, top-K.

    A subclass implements ``learn(event)`` (calling :meth:`_observe` for the bookkeeping) and
    ``score(user_id) -> np.ndarray`` over the index rows (higher is better); ``recommend`` is
    common. Scores are one numpy array per user over the whole catalogue: never one call per item.
    """

    reason_text = "recommended"

    def __init__(
        self,
        *,
        exclude: str = "purchased",
        index: ItemIndex | None = None,
        users: UserStore | None = None,
    ) -> None:
        if exclude not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {exclude!r}")
        self.exclude = exclude
        self.index = index if index is not None else ItemIndex()
        self.users = users if users is not None else UserStore()
        self.n_events = 0

    def add_items(self, item_ids: Iterable[str]) -> None:
        """Register catalogue items so they can be recommended before any event."""
        for item_id in item_ids:
            self.index.add(item_id)

    def _observe(self, event: Event) -> tuple[int, UserState]:
        row = self.index.add(event.item_id)
        state = self.users.update(event, row)
        self.n_events += 1
        return row, state

    def score(self, user_id: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rank(self, user_id: str, k: int, exclude: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, top-``k`` rows) for ``user_id``, excluded and deleted items removed."""
        mode = exclude or self.exclude
        if mode not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {mode!r}")
        scores = self.score(user_id)
        state = self.users.get(user_id)
        excluded = list(state.excluded(mode)) if state is not None else []
        return scores, top_k(scores, k, exclude=excluded, valid=self.index.active)

    def recommend(
        self, user_id: str, k: int = 10, *, exclude: str | None = None
    ) -> list[ScoredItem]:
        """The ``k`` best items for ``user_id``, best first, as :class:`ScoredItem`."""
        scores, rows = self._rank(user_id, k, exclude)
        return [ScoredItem(self.index.ids[r], float(scores[r]), self.reason_text) for r in rows]
