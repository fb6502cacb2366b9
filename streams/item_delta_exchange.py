"""Several workers: the item deltas every other worker committed, merged here.

A mixin of :class:`streams.partition_state.PartitionState`. Each worker's deltas travel in its
partitions' transactions to ``<prefix>.item-deltas`` (with the users they came from); every
worker reads the topic from the start and merges each committed delta exactly once, skipping
its own (already in its model; the writer header says whose it is).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from recstream.adapters.metrics import Metrics
from recstream.config import Settings
from recstream.pipeline import StreamProcessor
from recstream.user_partitions import decode_value
from streams.global_reader import GlobalReader
from streams.user_state_topic import MAX_STATE_MESSAGE_BYTES

log = logging.getLogger("recstream.worker")

WRITER_HEADER = "recstream-writer"


class ItemDeltaExchange:
    """Expects the attributes below (set by Runtime and PartitionState)."""

    settings: Settings
    processor: StreamProcessor
    metrics: Metrics
    lock: asyncio.Lock
    writer_id: str

    def _init_item_delta_exchange(self) -> None:
        self.deltas_applied = 0
        self.delta_reader: GlobalReader | None = None

    async def apply_delta_records(self, records: Iterable[Any]) -> int:
        """Merge the deltas other workers committed (ours are already in the model)."""
        applied = 0
        mine = self.writer_id.encode()
        async with self.lock:
            for record in records:
                writer = dict(record.headers or ()).get(WRITER_HEADER)
                if writer == mine or record.value is None:
                    continue
                try:
                    self.processor.recommender.apply_item_delta(decode_value(record.value))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error(
                        "item-deltas[%d]@%d skipped: %s", record.partition, record.offset, exc
                    )
                    self.metrics.state_flush_errors.labels(reason="bad_delta").inc()
                    continue
                applied += 1
        self.deltas_applied += applied
        return applied

    async def follow_item_deltas(self) -> None:
        """Forever: every committed item delta, from the start of the topic."""
        self.delta_reader = GlobalReader(
            self.settings,
            [self.settings.topic("item-deltas")],
            self._on_delta_records,
            name="item-deltas",
            consumer_options={
                "max_partition_fetch_bytes": MAX_STATE_MESSAGE_BYTES,
                "fetch_max_bytes": 4 * MAX_STATE_MESSAGE_BYTES,
            },
        )
        await self.delta_reader.start()

    async def _on_delta_records(self, records: list[Any]) -> None:
        self.metrics.item_deltas_applied.inc(await self.apply_delta_records(records))

    async def stop_item_deltas(self) -> None:
        if self.delta_reader is not None:
            await self.delta_reader.stop()
