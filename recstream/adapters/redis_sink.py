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
not stop the stream: every error is counted and swallowed, and after one the sink backs off
(writes are skipped and counted) for an interval that doubles up to 30 s, so a dead Redis costs
one connection timeout per interval instead of one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recstream.config import Settings

log = logging.getLogger(__name__)

__all__ = ["RedisSink", "decode_vector"]

MAX_BACKOFF_S = 30.0
PROFILES_PER_PIPELINE = 128


def decode_vector(raw: bytes) -> np.ndarray:
    """The float32 vector stored under ``vec``."""
    return np.frombuffer(raw, dtype="<f4")


def _encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class RedisSink:
    def __init__(
        self,
        settings: Settings,
        *,
        on_error: Callable[[], None] | None = None,
        on_skip: Callable[[], None] | None = None,
        client: aioredis.Redis | None = None,
        max_pending: int = 50_000,
    ) -> None:
        self.settings = settings
        # Short timeouts: a stalled Redis must not hold the event loop for long.
        self.client = client or aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._on_error = on_error or (lambda: None)
        self._on_skip = on_skip or (lambda: None)
        self._down_until = 0.0
        self._backoff = 0.0
        self.errors = 0
        self.writes = 0
        self.last_error: str | None = None
        self.max_pending = max_pending
        self._pending: dict[str, bytes] = {}
        self._profiles: dict[str, np.ndarray] = {}  # the latest of each user, not yet written
        self._profiles_due = 0.0  # monotonic time of the next profile write
        self._flush_profiles = False  # flush(): write the profiles now
        self._wakeup = asyncio.Event()  # something was queued
        self._idle = asyncio.Event()  # nothing queued, nothing being written
        self._idle.set()
        self._room = asyncio.Event()  # the queue is below max_pending
        self._room.set()

    def _available(self, n: int = 1) -> bool:
        if time.monotonic() < self._down_until:
            for _ in range(n):
                self._on_skip()
            return False
        return True

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._on_error()
        self._backoff = min(MAX_BACKOFF_S, max(0.5, self._backoff * 2))
        self._down_until = time.monotonic() + self._backoff
        log.warning("redis: %s (backing off %.1f s)", self.last_error, self._backoff)

    def _ok(self) -> None:
        self._backoff = 0.0

    # -- recommendations: queued, coalesced per user, written by one task in pipelines --------
    async def put_recommendation(
        self, user_id: str, recommendation_json: bytes, profile: np.ndarray | None
    ) -> None:
        """Queue the user's list (and profile) for the writer task; returns at once.

        One Redis round trip per event cost as much as the rest of the event's processing, so
        the writer sends everything queued in one pipeline, and a newer list for a user
        replaces a queued older one (Redis only ever keeps the latest). Waits only when
        ``max_pending`` users are queued: Redis slower than the stream slows the stream.
        """
        while len(self._pending) >= self.max_pending and user_id not in self._pending:
            self._room.clear()
            await self._room.wait()
        self._pending[user_id] = recommendation_json
        if profile is not None:
            self._profiles[user_id] = profile
        self._idle.clear()
        self._wakeup.set()

    async def run_writer(self) -> None:
        """The writer task: drains the queue, one pipeline per batch, forever."""
        while True:
            if self._profiles:  # wake up for them even if no list comes
                wait = max(0.0, self._profiles_due - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending or self._profiles_ready():
                batch, self._pending = self._pending, {}
                profiles: dict[str, np.ndarray] = {}
                if self._profiles_ready():
                    profiles = self._take_profiles()
                self._room.set()
                await self._write(batch, profiles)
            if not self._profiles:
                self._idle.set()

    def _take_profiles(self) -> dict[str, np.ndarray]:
        """Up to PROFILES_PER_PIPELINE due profiles. Packing a pipeline is Python work on the
        event loop: a thousand profiles at once held it for tens of milliseconds once per
        interval (a latency spike), while chunks let events run between them."""
        if len(self._profiles) <= PROFILES_PER_PIPELINE:
            chunk, self._profiles = self._profiles, {}
        else:
            users = list(self._profiles)[:PROFILES_PER_PIPELINE]
            chunk = {user: self._profiles.pop(user) for user in users}
        if not self._profiles:  # the round is over: the next one is an interval away
            self._flush_profiles = False
            self._profiles_due = time.monotonic() + self.settings.profile_interval_s
        return chunk

    def _profiles_ready(self) -> bool:
        return bool(self._profiles) and (
            self._flush_profiles or time.monotonic() >= self._profiles_due
        )

    async def flush(self) -> None:
        """Until everything queued so far, profiles included, is written (or dropped after an
        error)."""
        if self._profiles:
            self._flush_profiles = True
            self._wakeup.set()
        await self._idle.wait()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _write(self, lists: dict[str, bytes], profiles: dict[str, np.ndarray]) -> None:
        if not self._available(len(lists) + len(profiles)):
            return
        s = self.settings
        now = time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
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
            self._failed(exc)
            return
        self.writes += len(lists)
        self._ok()

    async def write_item_vectors(
        self, item_ids: Sequence[str], vectors: np.ndarray, text_hashes: Sequence[str]
    ) -> bool:
        if not item_ids or not self._available():
            return False
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for item_id, vector, text_hash in zip(item_ids, vectors, text_hashes, strict=True):
                    pipe.hset(
                        self.settings.redis_key("item", item_id),
                        mapping={
                            "vec": _encode_vector(vector),
                            "dim": int(vector.shape[-1]),
                            "text_hash": text_hash,
                        },
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def delete_item(self, item_id: str) -> bool:
        if not self._available():
            return False
        try:
            await self.client.delete(self.settings.redis_key("item", item_id))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def get_recommendation(self, user_id: str) -> bytes | None:
        try:
            return await self.client.get(self.settings.redis_key("recs", user_id))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
