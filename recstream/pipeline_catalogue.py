"""The catalogue side of :class:`recstream.pipeline.StreamProcessor`: item upserts and deletions
from the items topic, and the encode queue between them and the BERT encoder.

A mixin: the processor supplies the model, the counters, the encode queue and the admission /
dead-letter steps every input shares (:mod:`recstream.pipeline`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from recstream.events import InvalidMessage, Item, parse_item
from recstream.online import EncodeQueue
from recstream.pipeline_types import Counters, ItemOutcome, RecommenderLike, tombstone_item

log = logging.getLogger("recstream.pipeline")


class CatalogueInputs:
    """Mixin of StreamProcessor, which also provides ``_admit``, ``_dead_letter`` and
    ``_processing_error`` (the steps every input shares)."""

    recommender: RecommenderLike
    counts: Counters
    encode_queue: EncodeQueue
    recommended: set[str]
    max_event_bytes: int
    changes: int
    _errors_in_a_row: Any

    def handle_item(
        self,
        raw: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
    ) -> ItemOutcome:
        """One catalogue upsert or deletion; new or changed text joins the encode queue.

        A null value (a Kafka tombstone) deletes the item its key names, as compaction would.
        """
        skip = self._admit(topic, partition, offset)
        if skip is not None:
            return ItemOutcome(skip)
        where = {"topic": topic, "partition": partition, "offset": offset}
        try:
            item = (
                tombstone_item(key)
                if raw is None
                else parse_item(raw, max_bytes=self.max_event_bytes)
            )
        except InvalidMessage as exc:
            return ItemOutcome("dlq", dlq=self._dead_letter(raw, exc, where, key))
        except Exception as exc:  # a parser bug: contained like any processing error
            log.exception("parsing the item at %s failed", where)
            return ItemOutcome("dlq", dlq=self._processing_error(raw, exc, where, key))
        try:
            outcome = self._apply_item(item)
        except Exception as exc:  # as for events: dead-letter, log, count, go on
            log.exception("processing item %s failed", item.item_id)
            return ItemOutcome("dlq", item, dlq=self._processing_error(raw, exc, where, key))
        self._errors_in_a_row[topic] = 0
        return outcome

    def _apply_item(self, item: Item) -> ItemOutcome:
        if item.deleted:
            self.recommender.delete_item(item.item_id)
            self.encode_queue.discard(item.item_id)
            self.recommended.discard(item.item_id)
            self.counts.items_deleted += 1
            return ItemOutcome("deleted", item)
        self.counts.items_upserted += 1
        if self.recommender.upsert_item(item):
            if item.text:
                self.encode_queue.put(item)
            return ItemOutcome("upserted", item)
        return ItemOutcome("unchanged", item)

    # -- encoding --------------------------------------------------------------------------
    def take_encode_batch(self, n: int) -> list[Item]:
        return self.encode_queue.take(n)

    def apply_vectors(self, batch: list[Item], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Install the vectors of an encoded batch that are still current; returns them."""
        keep = self.encode_queue.complete(batch)
        ids = [batch[i].item_id for i in keep]
        kept = np.asarray(vectors, dtype=np.float32)[keep]
        if ids:
            self.recommender.set_item_vectors(ids, kept)
            self.counts.items_encoded += len(ids)
            self.changes += 1
        return ids, kept

    def encode_failed(self, batch: list[Item]) -> None:
        self.encode_queue.fail(batch)
