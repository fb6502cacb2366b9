"""Several workers: users idle longer than ``RECSTREAM_USER_TTL_S`` leave memory.

A mixin of :class:`streams.partition_state.PartitionState`. Parked users go to a local SQLite
store in the worker's own slot (:mod:`recstream.idle_users`; their committed state stays in the
partition's topic too) and come back with their next event, before it is applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from recstream.config import Settings
from recstream.idle_users import IdleUserStore, bring_back, evict_idle
from recstream.pipeline import StreamProcessor
from recstream.user_partitions import PartitionBook

log = logging.getLogger("recstream.worker")


class IdleParking:
    """Expects the attributes below (set by Runtime and PartitionState)."""

    settings: Settings
    processor: StreamProcessor
    lock: asyncio.Lock
    book: PartitionBook

    def _init_idle_parking(self) -> None:
        self.idle_store: IdleUserStore | None = None  # None: nobody is parked
        self.users_evicted = 0
        self.users_brought_back = 0
        self._stream_time = 0.0  # the newest event time learned here: the TTL's clock
        self._last_eviction = time.monotonic()

    def open_idle_store(self, path: Path) -> None:
        """Evict idle users to ``path`` (RECSTREAM_USER_TTL_S > 0; the worker's own slot)."""
        self.idle_store = IdleUserStore(path)

    def _bring_back(self, partition: int, messages: list[Any]) -> None:
        """The parked users among these messages' keys come back before they are applied."""
        assert self.idle_store is not None
        keys = {bytes(m.key).decode("utf-8", "replace") for m in messages if m.key is not None}
        self.users_brought_back += bring_back(
            self.processor.recommender,
            self.book,
            partition,
            keys,
            self.idle_store,
            self._remember_ids,
        )

    def _remember_ids(self, ids: list) -> None:
        for h in ids:
            self.processor.dedup.add_hash(h)

    async def evict_idle_users(self) -> int:
        """Users idle longer than the TTL leave memory (after a flush: committed ones only)."""
        ttl = self.settings.user_ttl_s
        if self.idle_store is None or ttl <= 0:
            return 0
        if time.monotonic() - self._last_eviction < min(60.0, ttl / 4):
            return 0
        self._last_eviction = time.monotonic()
        moved = 0
        async with self.lock:
            for p in self.book.partitions:
                moved += evict_idle(
                    self.processor.recommender,
                    self.book,
                    p,
                    self.idle_store,
                    before_ts=self._stream_time - ttl,
                )
        self.users_evicted += moved
        if moved:
            log.info("%d idle users parked (%d in the store)", moved, len(self.idle_store))
        return moved
