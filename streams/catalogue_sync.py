"""Several workers, one catalogue: every item encoded once in the group, every vector everywhere.

A mixin of :class:`streams.runtime.Runtime`, active only with ``RECSTREAM_STATE_STORE=kafka``
(with "local" every method here is a no-op and the worker is what it always was). The policy
is :class:`recstream.vector_sync.VectorSync`; this file moves records between it and Kafka:

* a :class:`~streams.global_reader.GlobalReader` over ``<prefix>.items`` (every partition)
  applies the catalogue to this worker's recommender and live page;
* a second one over ``<prefix>.item-vectors`` (compacted) installs the vectors every worker
  produced (those of the item's current text and of this worker's encoder model);
* the items agent, which gets this worker's partitions of ``<prefix>.items``, validates and
  dead-letters as always, then (:meth:`owned_item`) queues an item for the encoder only when
  the item-vectors topic, read up to its end as of the start, has no vector of its text;
  a deletion produces a tombstone;
* the encoder's vectors are installed here, written to Redis (by this owner only) and produced
  to the item-vectors topic (:meth:`vectors_encoded`);
* every ``RECONCILE_S`` an item of an assigned partition still without a vector in the topic,
  two rounds in a row, is queued (:meth:`reconcile_encoding`): an owner that died between
  taking an item and producing its vector is made good by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np

from recstream.adapters.metrics import Metrics
from recstream.config import Settings
from recstream.events import Item
from recstream.item_vectors import InvalidItemVector
from recstream.pipeline import StreamProcessor
from recstream.vector_sync import VectorSync
from streams.global_reader import GlobalReader
from streams.live import Catalogue

log = logging.getLogger("recstream.worker")

RECONCILE_S = 10.0  # agents.py runs reconcile_encoding this often (group mode)


class CatalogueSync:
    """Expects the attributes below (set by Runtime, which calls :meth:`_init_catalogue_sync`)."""

    settings: Settings
    processor: StreamProcessor
    metrics: Metrics
    lock: asyncio.Lock
    catalogue: Catalogue
    encoder: Any
    _send: Callable[[str, bytes | None, bytes], Awaitable[bool]]

    def _init_catalogue_sync(self) -> None:
        self.vector_sync = VectorSync(
            self.processor.recommender,
            max_item_bytes=self.settings.max_event_bytes,
            model_id=lambda: getattr(self.encoder, "model_id", None) or None,
        )
        self.items_encoded_here = 0  # vectors this process encoded (either mode)
        self.reader_factory: Callable[..., GlobalReader] = GlobalReader  # tests replace it
        self.catalogue_reader: GlobalReader | None = None
        self.vectors_reader: GlobalReader | None = None
        # both topics read up to their end as of the start: the items agent may decide now
        self.vectors_ready = asyncio.Event()
        self._claimed: dict[str, str] = {}  # item_id -> text hash queued for the encoder here
        # item_id -> (partition, offset) of its newest record on the items topic, as read
        self._item_position: dict[str, tuple[int, int]] = {}
        self._missing_before: set[str] = set()  # reconcile_encoding's previous round

    @property
    def _shares_vectors(self) -> bool:
        return self.settings.state_store == "kafka"

    # -- readers -------------------------------------------------------------------------------
    async def run_catalogue_sync(self) -> None:
        """Group mode: run both readers until cancelled (the worker's shutdown)."""
        if not self._shares_vectors:
            return
        s = self.settings
        self.vectors_reader = self.reader_factory(
            s, [s.topic("item-vectors")], self._on_vector_records, name="item-vectors"
        )
        self.catalogue_reader = self.reader_factory(
            s, [s.topic("items")], self._on_catalogue_records, name="catalogue"
        )
        try:
            await self.vectors_reader.start()
            await self.catalogue_reader.start()
            await self.vectors_reader.caught_up.wait()
            await self.catalogue_reader.caught_up.wait()
            self._drop_queued_with_vectors()
            self.vectors_ready.set()
            await asyncio.Event().wait()  # until cancelled
        finally:
            for reader in (self.catalogue_reader, self.vectors_reader):
                with contextlib.suppress(Exception):
                    await reader.stop()

    async def _on_catalogue_records(self, records: list[Any]) -> None:
        sync = self.vector_sync
        before = sync.counts["from_topic"]
        async with self.lock:
            sync.recommender = self.processor.recommender
            items = sync.apply_items((r.key, r.value) for r in records)
            for item in items:
                self.catalogue.apply(item)
            self.processor.changes += 1
        for r in records:
            if r.key is not None:
                with contextlib.suppress(UnicodeDecodeError):
                    self._item_position[bytes(r.key).decode("utf-8")] = (r.partition, r.offset)
        self.metrics.item_vectors_from_topic.inc(sync.counts["from_topic"] - before)

    async def _on_vector_records(self, records: list[Any]) -> None:
        sync = self.vector_sync
        before = sync.counts["from_topic"]
        async with self.lock:
            sync.recommender = self.processor.recommender
            outcomes = sync.apply_vectors((r.key, r.value) for r in records)
            if outcomes.get("installed"):
                self.processor.changes += 1
            # Queued here while another worker produced the same vector (a rebalance): done.
            for r in records:
                if r.key is None:
                    continue
                with contextlib.suppress(UnicodeDecodeError):
                    item_id = bytes(r.key).decode("utf-8")
                    claimed = self._claimed.get(item_id)
                    if claimed is not None and sync.published.get(item_id) == claimed:
                        self.processor.encode_queue.discard(item_id)
                        del self._claimed[item_id]
        m = self.metrics
        m.item_vectors_from_topic.inc(sync.counts["from_topic"] - before)
        for reason in ("invalid", "other_model"):
            if outcomes.get(reason):
                m.item_vector_records_skipped.labels(reason=reason).inc(outcomes[reason])

    def _drop_queued_with_vectors(self) -> None:
        """Items queued before the topic was read (restored from a checkpoint) whose vector the
        topic has: not encoded again."""
        queue = self.processor.encode_queue
        for item in queue.items():
            if not self.vector_sync.needs_encoding(item):
                queue.discard(item.item_id)
        self.metrics.encode_queue.set(len(queue))

    # -- the items agent (this worker's partitions) --------------------------------------------
    async def before_owned_item(self) -> None:
        """Group mode: the items agent decides nothing before both topics are read up to their
        end as of the start (which vectors exist; which record of an item is its newest)."""
        if self._shares_vectors and not self.vectors_ready.is_set():
            await self.vectors_ready.wait()

    async def before_encoding(self) -> None:
        """Group mode: the encoder waits for the topic too (a restored queue is checked first)."""
        await self.before_owned_item()

    async def owned_item(
        self, status: str, item: Item | None, position: tuple[int, int] | None = None
    ) -> None:
        """After StreamProcessor.handle_item applied an item of this worker's partitions (with
        the lock held): queue it for the encoder only when it is the item's newest record and
        the group has no vector of its text; a deletion's tombstone goes to the item-vectors
        topic (unless the topic's newest record of the item is one already)."""
        if not self._shares_vectors or item is None:
            return
        queue, item_id, sync = self.processor.encode_queue, item.item_id, self.vector_sync
        if _older(position, self._item_position.get(item_id)):
            # A replay (a partition read again from its start): a later record of the item
            # exists and decides; its older text is never encoded.
            if status == "upserted" and self._claimed.get(item_id) != item.text_hash:
                queue.discard(item_id)  # handle_item queued it (in place of any newer one)
                self._claimed.pop(item_id, None)  # so the newest record queues it again
            return
        if item.deleted:
            self._claimed.pop(item_id, None)
            if sync.own.get(item_id, sync.published.get(item_id)) is None:
                return  # no vector of it in the topic
            key, value = sync.deleted(item_id)
            await self._send(self.settings.topic("item-vectors"), key, value)  # type: ignore[arg-type]
            return
        digest = item.text_hash
        if self.vector_sync.needs_encoding(item):
            if self._claimed.get(item_id) != digest:
                # "unchanged" when the catalogue reader upserted it first: queued all the same
                queue.put(item)
                self._claimed[item_id] = digest
        elif status == "upserted" or self._claimed.get(item_id) is not None:
            queue.discard(item_id)  # handle_item queued it, but its vector is in the topic
            self._claimed.pop(item_id, None)

    def reconcile_encoding(self, assigned: Iterable[Any]) -> int:
        """Queue the items of ``assigned`` partitions (of the items topic) that have been without
        a vector in the topic for two rounds; returns how many. Group mode, once caught up."""
        if not self._shares_vectors or not self.vectors_ready.is_set():
            return 0
        reader = self.catalogue_reader
        if reader is None or not reader.caught_up.is_set():
            return 0
        items_topic = self.settings.topic("items")
        mine = {tp.partition for tp in assigned if tp.topic == items_topic}
        sync, missing = self.vector_sync, set()
        for item_id, item in sync.unencoded.items():
            position = self._item_position.get(item_id)
            if position is None or position[0] not in mine or item_id in self._claimed:
                continue
            if sync.needs_encoding(item):
                missing.add(item_id)
        queued = 0
        for item_id in missing & self._missing_before:
            item = sync.unencoded[item_id]
            self.processor.encode_queue.put(item)
            self._claimed[item_id] = item.text_hash
            queued += 1
        self._missing_before = missing
        if queued:
            log.warning(
                "item vectors: %d items of this worker's partitions had none: queued", queued
            )
            self._wakeup.set()  # type: ignore[attr-defined]
        return queued

    # -- the encoder ---------------------------------------------------------------------------
    async def vectors_encoded(self, batch: list[Item], ids: list[str], vectors: np.ndarray) -> None:
        """Vectors encoded and installed here: counted, and in group mode produced to the
        item-vectors topic for every other worker (and this one's next start)."""
        self.items_encoded_here += len(ids)
        if not self._shares_vectors or not ids:
            return
        by_id = {item.item_id: item for item in batch}
        items = [by_id[i] for i in ids]
        model = str(getattr(self.encoder, "model_id", "") or "")
        topic = self.settings.topic("item-vectors")
        for item, vector in zip(items, vectors, strict=True):
            if self._claimed.get(item.item_id) == item.text_hash:
                del self._claimed[item.item_id]
            try:
                [(key, value)] = self.vector_sync.encoded([item], vector[None, :], model)
            except InvalidItemVector as exc:  # NaN from a broken model: not for the others
                log.error("item vectors: %s not produced: %s", item.item_id, exc)
                continue
            await self._send(topic, key, value)  # type: ignore[arg-type]

    # -- reporting -----------------------------------------------------------------------------
    def catalogue_sync_health(self) -> dict[str, Any]:
        health: dict[str, Any] = {
            "items_encoded": self.items_encoded_here,
            "item_vectors_from_topic": self.vector_sync.counts["from_topic"],
        }
        if self._shares_vectors:
            health["catalogue_sync"] = {
                "catalogue_caught_up": _caught_up(self.catalogue_reader),
                "vectors_caught_up": _caught_up(self.vectors_reader),
                "catalogue_items": len(self.vector_sync.catalogue),
                **self.vector_sync.stats(),
            }
        return health


def _caught_up(reader: GlobalReader | None) -> bool:
    return reader is not None and reader.caught_up.is_set()


def _older(position: tuple[int, int] | None, newest: tuple[int, int] | None) -> bool:
    """Whether the record at ``position`` (partition, offset) is older than ``newest``."""
    if position is None or newest is None or position[0] != newest[0]:
        return False
    return newest[1] > position[1]
