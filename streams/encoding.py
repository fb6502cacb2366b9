"""The worker's BERT encoder: waiting catalogue items are encoded in batches, in a thread of their
own, so the event loop (and every event) never waits for torch.

A mixin of :class:`streams.runtime.Runtime` (which sets ``settings``, ``processor``, ``metrics``,
``redis``, ``encoder``, ``encoder_factory``, ``encoder_error``, ``_pool`` and ``_wakeup``). The
encoder task also runs the periodic fine-tune of the encoder when it is switched on
(:mod:`streams.finetuning`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from typing import Any

import numpy as np

from recstream.events import Item
from streams.finetuning import EncoderFinetuning

log = logging.getLogger("recstream.worker")

PROJECTION_CHECK_S = 1.0  # how often the projection loop looks for a due refit (cheap check)


def encoder_threads() -> int:
    # Leave one core to the event loop: encoding a large catalogue must not starve the events
    # (BERT on every core doubled the event p99 on the 2-core reference machine).
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


class ItemEncoding(EncoderFinetuning):
    """Mixin of Runtime; ``before_encoding`` and ``vectors_encoded`` come from
    :class:`streams.catalogue_sync.CatalogueSync` (several workers share the vectors)."""

    settings: Any
    processor: Any
    metrics: Any
    redis: Any
    encoder: Any
    encoder_factory: Any
    encoder_error: str | None
    _pool: Any
    _wakeup: asyncio.Event

    def _encode_sync(self, texts: list[str]) -> np.ndarray:
        # Runs in the encoder thread: loading torch + BERT takes seconds, so it happens here too.
        if self.encoder is None:
            if self.encoder_factory is None:
                raise RuntimeError("no encoder configured")
            self.encoder = self.encoder_factory()
            log.info("encoder ready: %r", self.encoder)
        return self.encoder.encode(texts)

    async def encode_pending(self) -> int:
        """Encode everything waiting, one batch at a time, off the event loop. Returns items."""
        loop = asyncio.get_running_loop()
        total = 0
        while self.processor.encode_queue.waiting:
            batch: list[Item] = self.processor.take_encode_batch(self.settings.encoder_max_queue)
            t0 = time.perf_counter()
            try:
                vectors = await loop.run_in_executor(
                    self._pool, self._encode_sync, [item.text for item in batch]
                )
            except Exception as exc:
                # The stream goes on without fresh vectors; the batch is retried next round.
                self.processor.encode_failed(batch)
                self.metrics.encode_errors.inc()
                self.encoder_error = f"{type(exc).__name__}: {exc}"
                log.error("encoder: batch of %d failed: %s", len(batch), self.encoder_error)
                return total
            seconds = time.perf_counter() - t0
            ids, kept = self.processor.apply_vectors(batch, vectors)
            await self.vectors_encoded(batch, ids, kept)  # several workers: to item-vectors
            noted = self.note_encoded(batch, ids)  # fine-tune on: the texts a round re-encodes
            if noted:
                await loop.run_in_executor(self._pool, self.append_items_file, noted)
            self.encoder_error = None
            m = self.metrics
            m.encode_batch_size.observe(len(batch))
            m.encode_batch_seconds.observe(seconds)
            m.items_encoded.inc(len(ids))
            m.encode_queue.set(len(self.processor.encode_queue))
            total += len(ids)
            if ids and self.redis is not None:
                hashes = {item.item_id: item.text_hash for item in batch}
                await self.redis.write_item_vectors(ids, kept, [hashes[i] for i in ids])
        return total

    async def encoder_loop(self) -> None:
        """The encoder task: :meth:`encode_loop`, and beside it, when switched on, the periodic
        fine-tune of the encoder (:meth:`finetune_loop`); the tuned encoder of the last round
        is taken back first if the restored checkpoint holds its vectors."""
        await self.before_encoding()  # several workers: the item-vectors topic is read first
        await self.restore_finetuned()
        async with asyncio.TaskGroup() as tasks:  # one fails or is cancelled: all end
            tasks.create_task(self.encode_loop())
            tasks.create_task(self.finetune_loop())
            tasks.create_task(self.projection_loop())

    async def projection_loop(self) -> None:
        """Refit the content projection off the event loop (issue 12: nothing O(n) on the loop
        per event): the index no longer refits inside ``recommend``; a due refit runs in the
        encoder thread and is swapped in between two events (:mod:`recstream.projection`)."""
        self.processor.recommender.index.background_refit = True
        while True:
            await asyncio.sleep(PROJECTION_CHECK_S)
            await self.refit_projection()

    async def refit_projection(self) -> bool:
        """One due refit, if any: True when a new projection was swapped in."""
        index = self.processor.recommender.index
        work = index.begin_refit()
        if work is None:
            return False
        refit = None
        try:
            t0 = time.perf_counter()
            refit = await asyncio.get_running_loop().run_in_executor(self._pool, work)
            log.info(
                "content projection refitted on %d vectors in %.2f s (encoder thread)",
                refit.n_vectors,
                time.perf_counter() - t0,
            )
        except Exception:  # the old projection stays; the next check tries again
            log.exception("content projection refit failed")
        finally:
            index.finish_refit(refit)  # also when cancelled: the next refit may start
        return refit is not None

    async def encode_loop(self) -> None:
        """Encode waiting items at most once per ``encoder_interval_s``, sooner for a full batch.

        Batches start at least an interval apart, so a trickle of catalogue updates is encoded
        in batches and the encoder thread (which shares the cores with the events) runs at
        most once per interval. But an item arriving after a quiet interval is encoded at
        once: a new item waits for the encoder only while it is busy or has just run, never
        for the phase of a free-running timer.
        """
        interval = self.settings.encoder_interval_s
        spacing = interval
        last_start = -math.inf
        while True:
            if not self.processor.encode_queue.waiting:
                await self._wakeup.wait()  # on_item: the first item is waiting
            self._wakeup.clear()
            delay = last_start + spacing - time.monotonic()
            if delay > 0 and self.processor.encode_queue.waiting < self.settings.encoder_max_queue:
                with contextlib.suppress(TimeoutError):  # a full batch wakes it sooner
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                self._wakeup.clear()
            if not self.processor.encode_queue.waiting:
                continue  # a stale wake-up: the last round took the item
            last_start = time.monotonic()
            await self.encode_pending()
            # A broken encoder (model missing, OOM) is retried slower and slower, up to a minute.
            failing = self.encoder_error is not None
            spacing = min(60.0, spacing * 2) if failing else interval
