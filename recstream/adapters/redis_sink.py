"""Redis side of the worker: recommendations, user profiles and item vectors (redis-py asyncio).

Keys (``<p>`` = ``Settings.redis_prefix``, default ``recstream``):

* ``<p>:recs:{user_id}`` — string, the recommendation JSON of the public interface, with a TTL
  of ``Settings.recs_ttl_s``;
* ``<p>:user:{user_id}`` — hash ``vec`` (float32 little-endian bytes of the L2-normalised
  content profile), ``dim``, ``updated_at``; same TTL;
* ``<p>:item:{item_id}`` — hash ``vec``, ``dim``, ``text_hash`` (the text the vector encodes);
  deleted when the item is deleted.

Recommendations are queued and written by one task (:meth:`RedisSink.run_writer`) in pipelines,
coalesced per user, so the event loop never waits for a Redis round trip per event. A user's
profile (1.5 KB and two commands, twice the cost of the list) is written at most once per
``Settings.profile_interval_s``: the latest one, so it lags the list by at most that interval.

Redis is a cache of what the worker computes, never a source of truth, so a Redis outage must
not stop the stream, nor leave Redis stale once it is back. Every error is counted and
swallowed; during an outage (:class:`~recstream.adapters.redis_outage.Outage`: a back-off that
doubles up to 30 s, and a few log lines) the latest list and profile of each user and the
latest vector (or deletion) of each item are kept and written when Redis answers again. Memory
is bounded by ``Settings.redis_max_pending`` users (and as many items): beyond it the oldest
pending writes are dropped and counted. When Redis is up, a full queue slows the stream instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recstream.adapters.redis_client import make_client
from recstream.adapters.redis_outage import Outage
from recstream.config import Settings

__all__ = ["PENDING_KINDS", "RedisSink", "decode_vector"]

PROFILES_PER_PIPELINE = 128
# After an outage thousands of lists wait: packing them into one pipeline would hold the event
# loop for as long, so they go out in chunks with events running in between.
LISTS_PER_PIPELINE = 512
ITEMS_PER_PIPELINE = 128
# An idle writer pings this often, so recstream_redis_up is current and an outage that began
# while nothing was written is noticed before the next write.
HEALTH_CHECK_S = 5.0
PENDING_KINDS = ("list", "profile", "item")

# An item write kept for a retry: (vector bytes, dim, text hash), or None for a deletion.
ItemWrite = tuple[bytes, int, str] | None
V = TypeVar("V")


def decode_vector(raw: bytes) -> np.ndarray:
    """The float32 vector stored under ``vec``."""
    return np.frombuffer(raw, dtype="<f4")


def _encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _put_latest(queue: dict[str, V], key: str, value: V) -> None:
    """The newest value, moved to the end: the front of a queue is its oldest entry."""
    queue.pop(key, None)
    queue[key] = value


def _take(queue: dict[str, V], n: int) -> dict[str, V]:
    """Remove and return the ``n`` oldest entries."""
    if len(queue) <= n:
        chunk = dict(queue)
        queue.clear()
        return chunk
    keys = list(queue)[:n]  # a slice of the dict's order, no copy of the values
    return {key: queue.pop(key) for key in keys}


def _put_back(queue: dict[str, V], failed: dict[str, V]) -> None:
    """Return a failed chunk to the front of ``queue`` (its entries are older than what was
    queued since), without replacing a newer value queued for the same key meanwhile."""
    newer = dict(queue)
    queue.clear()
    queue.update((k, v) for k, v in failed.items() if k not in newer)
    queue.update(newer)


class RedisSink:
    def __init__(
        self,
        settings: Settings,
        *,
        on_error: Callable[[], None] | None = None,
        on_skip: Callable[[], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
        client: aioredis.Redis | None = None,
        max_pending: int | None = None,
        outage: Outage | None = None,
    ) -> None:
        """``on_error()``: a command or pipeline failed; ``on_skip()``: a write was deferred
        because Redis is down (kept for a retry); ``on_drop(kind, n)``: ``n`` pending writes of
        ``kind`` (one of :data:`PENDING_KINDS`) were given up, the oldest over the cap."""
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self._on_error = on_error or (lambda: None)
        self._on_skip = on_skip or (lambda: None)
        self._on_drop = on_drop or (lambda kind, n: None)
        self.outage = outage or Outage()
        self.errors = 0
        self.writes = 0  # lists written
        self.dropped = 0
        self.last_error: str | None = None
        self.max_pending = settings.redis_max_pending if max_pending is None else max_pending
        self._lists: dict[str, bytes] = {}  # the latest list of each user, not yet written
        self._profiles: dict[str, np.ndarray] = {}  # the latest profile of each user, likewise
        self._items: dict[str, ItemWrite] = {}  # item writes that failed, kept for a retry
        # Users to erase (`recstream forget`): never dropped over the cap, retried until done.
        self._forget: set[str] = set()
        # Item writes come from the encoder (direct) and the writer (retries): one at a time, so
        # a retried old vector can never land after a newer one written directly.
        self._items_lock = asyncio.Lock()
        self._profiles_due = 0.0  # monotonic time of the next profile write
        self._flush_profiles = False  # flush(): write the profiles now
        self._last_contact = -math.inf  # monotonic time of the last command that succeeded
        self._wakeup = asyncio.Event()  # something was queued
        self._idle = asyncio.Event()  # nothing that can be written now, nothing being written
        self._idle.set()
        self._room = asyncio.Event()  # the queue is below max_pending, or Redis is down
        self._room.set()

    # -- state -------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """Redis answered the last command (write or ping)."""
        return self.outage.up

    @property
    def pending(self) -> int:
        """Writes not done yet: lists, profiles, items (queued, or kept for a retry)."""
        return len(self._lists) + len(self._profiles) + len(self._items)

    def pending_writes(self, kind: str) -> int:
        """``pending`` of one of :data:`PENDING_KINDS` (the gauge's label)."""
        return len({"list": self._lists, "profile": self._profiles, "item": self._items}[kind])

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._on_error()
        self.outage.failed(self.last_error, pending=self.pending, dropped=self.dropped)
        self._room.set()  # a producer waiting for room keeps its writes for the retry instead

    def _succeeded(self, written: int) -> None:
        self._last_contact = time.monotonic()
        if not self.outage.up:
            self.outage.succeeded(retried=written + self.pending, dropped=self.dropped)
            if self.pending:  # the writer may sleep until its back-off ends: retry now
                self._queued()

    def _trim(self) -> None:
        """Drop the oldest pending writes beyond ``max_pending`` (per kind), counted."""
        self._drop_oldest("list", self._lists)
        self._drop_oldest("profile", self._profiles)
        self._drop_oldest("item", self._items)

    def _drop_oldest(self, kind: str, queue: dict[str, V]) -> None:
        over = len(queue) - self.max_pending
        if over > 0:
            _take(queue, over)
            self.dropped += over
            self._on_drop(kind, over)

    def _work_now(self) -> bool:
        """Something can be written now (not backing off, and something is due)."""
        if self.outage.backing_off():
            return False
        return (
            bool(self._lists) or bool(self._items) or bool(self._forget) or self._profiles_ready()
        )

    def _profiles_ready(self) -> bool:
        return bool(self._profiles) and (
            self._flush_profiles or time.monotonic() >= self._profiles_due
        )

    def _queued(self) -> None:
        self._idle.clear()
        self._wakeup.set()

    # -- recommendations: queued, coalesced per user, written by one task in pipelines --------
    async def put_recommendation(
        self, user_id: str, recommendation_json: bytes, profile: np.ndarray | None
    ) -> None:
        """Queue the user's list (and profile) for the writer task; returns at once.

        One Redis round trip per event cost as much as the rest of the event's processing, so
        the writer sends what is queued in pipelines, and a newer list for a user replaces a
        queued older one (Redis only ever keeps the latest). Waits only when ``max_pending``
        users are queued and Redis is up: Redis slower than the stream slows the stream, a
        Redis that is down does not (the oldest pending writes are dropped instead).
        """
        while self.outage.up and len(self._lists) >= self.max_pending:
            if user_id in self._lists:
                break
            self._room.clear()
            await self._room.wait()
        if not self.outage.up:
            self._on_skip()  # deferred: kept for the retry
        _put_latest(self._lists, user_id, recommendation_json)
        if profile is not None:
            _put_latest(self._profiles, user_id, profile)
        self._trim()
        self._queued()

    async def run_writer(self) -> None:
        """The writer task: pings once, then drains the queues (and retries) forever."""
        await self.ping()
        while True:
            await self._wait_for_work()
            self._idle.clear()
            if self._lists or self._forget or self._profiles_ready():
                lists = _take(self._lists, LISTS_PER_PIPELINE)
                profiles = self._take_profiles() if self._profiles_ready() else {}
                if len(self._lists) < self.max_pending:
                    self._room.set()
                await self._write(lists, profiles)
            if self._items and not self.outage.backing_off():
                await self._retry_items()

    async def _wait_for_work(self) -> None:
        """Until something can be written; meanwhile ``_idle`` is set (for :meth:`flush`), and
        a ping checks Redis when it has been quiet, or down with nothing to retry."""
        while not self._work_now():
            now = time.monotonic()
            if self.outage.backing_off():
                deadline = self.outage.down_until  # then retry what is kept, or ping
            elif not self.outage.up or now >= self._last_contact + HEALTH_CHECK_S:
                await self.ping()
                continue
            else:
                deadline = self._last_contact + HEALTH_CHECK_S
                if self._profiles:  # wake up for them even if no list comes
                    deadline = min(deadline, self._profiles_due)
            self._idle.set()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - now))

    def _take_profiles(self) -> dict[str, np.ndarray]:
        """Up to PROFILES_PER_PIPELINE due profiles. Packing a pipeline is Python work on the
        event loop: a thousand profiles at once held it for tens of milliseconds once per
        interval (a latency spike), while chunks let events run between them."""
        chunk = _take(self._profiles, PROFILES_PER_PIPELINE)
        if not self._profiles:  # the round is over: the next one is an interval away
            self._flush_profiles = False
            self._profiles_due = time.monotonic() + self.settings.profile_interval_s
        return chunk

    async def flush(self) -> None:
        """Until everything queued so far, profiles included, is written, or kept for a retry
        because Redis is down (a flush never waits for an outage to end)."""
        if self._profiles:
            self._flush_profiles = True
        if self._work_now():
            self._queued()
        await self._idle.wait()

    def forget_user(self, user_id: str) -> None:
        """Erase the user's list and profile from Redis (the writer deletes both keys), and
        whatever is queued for them now; kept until done, whatever the outage or the cap."""
        self._lists.pop(user_id, None)
        self._profiles.pop(user_id, None)
        self._forget.add(user_id)
        self._queued()

    async def _write(self, lists: dict[str, bytes], profiles: dict[str, np.ndarray]) -> None:
        s = self.settings
        now = time.time()
        forget, self._forget = self._forget, set()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id in forget:  # first: a list queued after the request is newer
                    pipe.delete(s.redis_key("recs", user_id), s.redis_key("user", user_id))
                for user_id, body in lists.items():
                    pipe.set(s.redis_key("recs", user_id), body, ex=s.recs_ttl_s)
                for user_id, profile in profiles.items():
                    key = s.redis_key("user", user_id)
                    pipe.hset(
                        key,
                        mapping={
                            "vec": _encode_vector(profile),
                            "dim": int(profile.shape[-1]),
                            "updated_at": now,
                        },
                    )
                    pipe.expire(key, s.recs_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._forget |= forget
            # A user forgotten while this pipeline was in flight gets nothing back: their old
            # list must not follow the deletion into Redis.
            _put_back(self._lists, {u: v for u, v in lists.items() if u not in self._forget})
            _put_back(self._profiles, {u: v for u, v in profiles.items() if u not in self._forget})
            self._trim()
            self._failed(exc)
            return
        self.writes += len(lists)
        self._succeeded(len(lists) + len(profiles))

    # -- item vectors: written at once by the encoder, kept for a retry when that fails -------
    async def write_item_vectors(
        self, item_ids: Sequence[str], vectors: np.ndarray, text_hashes: Sequence[str]
    ) -> bool:
        """True when written; False when kept for a retry (Redis down) or nothing to write."""
        if not item_ids:
            return False
        writes: dict[str, ItemWrite] = {
            item_id: (_encode_vector(vector), int(vector.shape[-1]), text_hash)
            for item_id, vector, text_hash in zip(item_ids, vectors, text_hashes, strict=True)
        }
        return await self._write_items(writes)

    async def delete_item(self, item_id: str) -> bool:
        """True when deleted; False when kept for a retry (Redis down)."""
        return await self._write_items({item_id: None})

    async def _write_items(self, writes: dict[str, ItemWrite]) -> bool:
        if self.outage.backing_off():
            for item_id, write in writes.items():
                _put_latest(self._items, item_id, write)
                self._on_skip()
            self._trim()
            self._queued()
            return False
        async with self._items_lock:
            for item_id in writes:  # superseded by what is written now
                self._items.pop(item_id, None)
            return await self._send_items(writes)

    async def _retry_items(self) -> None:
        async with self._items_lock:
            await self._send_items(_take(self._items, ITEMS_PER_PIPELINE))

    async def _send_items(self, writes: dict[str, ItemWrite]) -> bool:
        """One pipeline; on failure the writes go back to the retry queue (held lock)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for item_id, write in writes.items():
                    key = self.settings.redis_key("item", item_id)
                    if write is None:
                        pipe.delete(key)
                    else:
                        vec, dim, text_hash = write
                        pipe.hset(key, mapping={"vec": vec, "dim": dim, "text_hash": text_hash})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            _put_back(self._items, writes)
            self._trim()
            self._failed(exc)
            self._queued()
            return False
        self._succeeded(len(writes))
        return True

    # -- reads and health --------------------------------------------------------------------
    async def get_recommendation(self, user_id: str) -> bytes | None:
        try:
            body = await self.client.get(self.settings.redis_key("recs", user_id))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._succeeded(0)
        return body

    async def ping(self) -> bool:
        """Redis answers PING; updates ``up`` (and ends or starts an outage)."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._succeeded(0)
        return True

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
