"""What the agents, timers and views share in one worker: model, sinks, metrics, checkpoints.

The logic is in :class:`recstream.pipeline.StreamProcessor` (pure); this class only moves data
between it and the outside world — Kafka (through Faust topics), Redis, Prometheus, the encoder
thread and the checkpoint directory — and holds the lock that keeps checkpoints consistent.

Three concerns live in their own files as mixins: checkpoints (:mod:`streams.checkpointing`),
where each partition resumes (:mod:`streams.partition_positions`) and what the live page reads
(:mod:`streams.live`).

One :class:`Runtime` per process, installed by ``recstream worker`` (:func:`install`) before the
Faust worker starts, or by a test with fake outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from faust.types import Message

from recstream.adapters.metrics import Metrics
from recstream.adapters.redis_sink import RedisSink
from recstream.checkpoint import CheckpointStore
from recstream.config import Settings
from recstream.dead_letters import dead_letter_key
from recstream.events import Item
from recstream.pipeline import StreamProcessor
from streams.catalogue_sync import CatalogueSync
from streams.checkpointing import Checkpointing
from streams.live import Catalogue, LiveFeed, Subscribers
from streams.partition_positions import PartitionPositions
from streams.partition_state import PartitionState

log = logging.getLogger("recstream.worker")

# publish(topic_name, key, value): the agents' only way out to Kafka (tests replace it).
Publish = Callable[[str, bytes | None, bytes], Awaitable[Any]]

_runtime: Runtime | None = None

AGENT_TURNS = 8  # see Runtime._agent_queues_more


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    if _runtime is None:
        raise RuntimeError("no Runtime installed: start the worker with `recstream worker`")
    return _runtime


def checkpoint_dir(settings: Settings) -> Path:
    return Path(settings.models_dir) / "checkpoints" / settings.app_id


def encoder_threads() -> int:
    # Leave one core to the event loop: encoding a large catalogue must not starve the events
    # (BERT on every core doubled the event p99 on the 2-core reference machine).
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


class Runtime(Checkpointing, PartitionPositions, PartitionState, CatalogueSync, LiveFeed):
    def __init__(
        self,
        settings: Settings,
        processor: StreamProcessor,
        *,
        publish: Publish,
        redis: RedisSink | None,
        metrics: Metrics | None = None,
        store: CheckpointStore | None = None,
        topic_ids: dict[str, str] | None = None,
        encoder: Any = None,
        encoder_factory: Callable[[], Any] | None = None,
        topic_id_reader: Callable[[list[str]], dict[str, str]] | None = None,
        send_event: Publish | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.publish = publish
        self.redis = redis
        self.metrics = metrics or Metrics()
        self.store = store
        self.topic_ids = topic_ids or {}
        self.encoder_factory = encoder_factory
        # Blocking (kafka-python admin): called in a thread at each rebalance, see resume_offsets
        self.topic_id_reader = topic_id_reader
        # POST /events: produce one event and wait until Kafka has it (tests replace it)
        self.send_event = send_event
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self.ready = False
        self.last_checkpoint: dict[str, Any] | None = None
        self._saved_changes = processor.changes  # what the newest checkpoint reflects
        # A user was forgotten: once the next checkpoint is written, the older ones go.
        self._prune_checkpoints = False
        self._checkpoint_child: asyncio.Future | None = None  # a forked writer still running
        self.encoder: Any = encoder  # None: built by encoder_factory in the encoder thread
        self.encoder_error: str | None = None
        # One thread: batches run one at a time, in order, and torch gets a stable thread.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        # Held for the whole of one message (state change + its sends): a checkpoint taken
        # while it is free never sees a reflected event whose outputs are not handed over yet.
        self.lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._halted_forever = asyncio.Event()  # never set: a halt lasts until the restart
        # Event messages between the agent (which only queues them) and the batch task. Bounded:
        # a full inbox makes the agent wait, so Faust stops fetching — backpressure, not memory.
        self.inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, settings.batch_max))
        # The live page (streams/live.py): titles from the items topic, and the open streams.
        self.catalogue = Catalogue()
        self.subscribers = Subscribers()
        self._init_partition_state()  # several workers (streams/partition_state.py)
        self._init_catalogue_sync()  # several workers: items and vectors (catalogue_sync.py)

    # -- inputs ------------------------------------------------------------------------------
    async def submit_event(self, message: Message) -> None:
        """The events agent's whole job: queue the message for :meth:`process_event_batches`."""
        await self.inbox.put(message)

    async def process_event_batches(self) -> None:
        """Forever: take everything queued (up to ``batch_max``, never waiting for more) and
        process it as one batch. Idle, each event is a batch of one and waits for nothing;
        behind, batches grow and the per-message costs (sends, metrics, scoring a user
        twice) are paid once per batch."""
        inbox, most = self.inbox, self.settings.batch_max
        while True:
            if self.processor.halted is not None:
                await self._wait_while_halted()
            batch = [await inbox.get()]
            while len(batch) < most:
                if inbox.empty() and not await self._agent_queues_more():
                    break
                batch.append(inbox.get_nowait())
            try:
                await self.on_events(batch)
            finally:
                for _ in batch:
                    inbox.task_done()

    async def _wait_while_halted(self) -> None:
        """A halted processor applies nothing, until the worker is fixed and restarted.

        The batch task stops taking messages, so the agent's inbox fills and Faust stops
        fetching; the state's positions stay where the last applied message left them, and so
        do the checkpoints' offsets: a restart resumes exactly there. Faust may still commit
        the offsets of what it handed the agent, which is harmless: every (re)start seeks to
        the state's own positions (:meth:`resume_offsets`). /healthz answers 503 with the
        reason, and ``recstream_halted`` is 1 (the RecstreamHalted alert).
        """
        self.metrics.halted.set(1)
        log.critical(
            "worker halted, no message is applied until it is fixed and restarted: %s",
            self.processor.halted,
        )
        await self._halted_forever.wait()

    async def _agent_queues_more(self) -> bool:
        """Give the events agent a few loop turns to queue a message Faust already holds.

        Faust's stream hands the agent its messages one per several loop turns, so without
        these turns a batch never grew past one event (measured: 19,785 batches for 20,000
        events of a backlog, 1,270 events/s; with 8 turns, full batches and 3× the rate).
        An idle worker pays 8 empty turns, microseconds, once per event.
        """
        for _ in range(AGENT_TURNS):
            await asyncio.sleep(0)
            if not self.inbox.empty():
                return True
        return False

    async def drain_events(self) -> None:
        """Until every queued event message is processed (tests, benchmarks)."""
        await self.inbox.join()

    async def on_events(self, messages: list[Message]) -> None:
        m, s = self.metrics, self.settings
        async with self.lock:
            if self.group_mode:
                outcomes = self.handle_owned_events(messages)
            else:
                outcomes = self.processor.handle_events(messages)
            learned: Counter[str] = Counter()
            for message, out in zip(messages, outcomes, strict=True):
                if await self._skipped_or_dead_lettered(out.status, out.dlq, message):
                    continue
                assert out.event is not None
                learned[out.event.type] += 1
                if out.recommendation is None:
                    continue  # the user's later event in this batch carries their list
                body = out.recommendation.to_json()
                key = out.event.user_id.encode()
                if await self._send(s.topic("recommendations"), key, body):
                    m.recommendations.inc()
                if self.redis is not None:  # queued: the writer task pipelines it
                    await self.redis.put_recommendation(out.event.user_id, body, out.profile)
                self.subscribers.publish(out.event.user_id, body)  # never waits
            for event_type, n in learned.items():
                m.events.labels(type=event_type).inc(n)
            m.model_updates.inc(learned.total())
            m.event_batch_size.observe(len(messages))
            self._report_rewinds()
            # Every learned event's latency ends now, when the list reflecting it is handed
            # over, whether it triggered that list or was folded into it.
            done = time.time()
            for message, out in zip(messages, outcomes, strict=True):
                if out.status == "ok":
                    since = message.timestamp if message.timestamp else out.received_at
                    latency = max(0.0, done - since)
                    m.latency.observe(latency)
                    m.processing.observe(max(0.0, done - out.received_at))
                    self.processor.observe_latency(latency)

    async def on_item(self, message: Message) -> None:
        m, s = self.metrics, self.settings
        await self.before_owned_item()  # several workers: the item-vectors topic is read first
        async with self.lock:
            out = self.processor.handle_item(
                message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
            )
            self._report_rewinds()
            applied = not await self._skipped_or_dead_lettered(out.status, out.dlq, message)
            if applied:
                m.item_updates.labels(action=out.status).inc()
                if out.item is not None:
                    self.catalogue.apply(out.item)
            if applied and out.status == "deleted" and self.redis is not None:
                assert out.item is not None
                await self.redis.delete_item(out.item.item_id)
            if applied:
                # several workers: encode it or not
                await self.owned_item(out.status, out.item, (message.partition, message.offset))
        if out.status == "halted":  # the items agent stops too (outside the lock: checkpoints)
            await self._wait_while_halted()
        if not applied:
            return
        m.encode_queue.set(len(self.processor.encode_queue))
        waiting = self.processor.encode_queue.waiting
        if waiting == 1 or waiting >= s.encoder_max_queue:
            self._wakeup.set()  # the first item waits (see encoder_loop), or a full batch does

    async def on_forget(self, message: Message) -> None:
        """Apply a forget request (StreamProcessor.handle_forget), erase the user's Redis keys,
        and have the next checkpoint be the only one left (older ones hold the user)."""
        async with self.lock:
            out = self.processor.handle_forget(
                message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                timestamp=message.timestamp,
                key=message.key,
            )
            if out.status == "forgotten":
                assert out.user_id is not None
                if self.redis is not None:
                    self.redis.forget_user(out.user_id)
                at = self.processor.forgotten.when(out.user_id) or time.time()
                self.forgot_user(message.partition, out.user_id, at)
                self.metrics.users_forgotten.inc()
                self._prune_checkpoints = True
                log.info("forgot a user (request at offset %d)", message.offset)  # no id logged
            else:
                await self._skipped_or_dead_lettered(out.status, out.dlq, message)
        if out.status == "halted":
            await self._wait_while_halted()

    async def intake(self, batch: list[tuple[bytes, bytes]]) -> int:
        """Produce validated events (``POST /events``) to the events topic, waiting for Kafka's
        acknowledgement of each; returns how many it took (in order, the first refusal ends)."""
        if self.send_event is None:
            raise RuntimeError("no event intake configured")
        topic = self.settings.topic("events")
        sent = 0
        for key, value in batch:
            try:
                await self.send_event(topic, key, value)
            except Exception as exc:
                self.metrics.kafka_send_errors.inc()
                log.error("intake: Kafka refused an event: %s: %.200s", type(exc).__name__, exc)
                break
            sent += 1
        self.metrics.intake_events.inc(sent)
        return sent

    async def _skipped_or_dead_lettered(
        self, status: str, dlq: dict[str, Any] | None, message: Message
    ) -> bool:
        """Count a message the processor did not apply (redelivered, duplicate) and send an
        invalid one to the DLQ; True when there is nothing else to do with it."""
        m = self.metrics
        if status == "replayed":
            m.replayed.inc()
        elif status == "duplicate":
            m.duplicates.inc()
        elif status == "forgotten":
            # a forgotten user's event from before the request, replayed: not learned
            m.forgotten_events_skipped.inc()
        elif status == "dlq":
            assert dlq is not None
            m.dlq.labels(reason=dlq["code"]).inc()
            await self._send_dead_letter(message, dlq)
        elif status not in ("halted", "moved"):
            return False
        return True

    async def _send_dead_letter(self, message: Message, dlq: dict[str, Any]) -> None:
        """Send a dead letter; never raises. Should the broker refuse the record itself (it is
        bounded, but a broker may be configured with a smaller message size), the same record
        without the raw copy goes instead, so the reason and position are never lost."""
        topic, key = self.settings.topic("events.dlq"), dead_letter_key(message.key)
        if await self._send(topic, key, _json(dlq)):
            return
        bare = {**dlq, "raw": "", "raw_truncated": True}
        await self._send(topic, key, _json(bare))

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Hand one output to Kafka; a refusal (too large, producer stopped) is counted and
        logged, never raised: one message's output must not stop the worker."""
        try:
            await self.publish(topic, key, value)
        except Exception as exc:
            self.metrics.kafka_send_errors.inc()
            log.error("Kafka send to %s refused: %s: %.200s", topic, type(exc).__name__, exc)
            return False
        return True

    # -- encoder -----------------------------------------------------------------------------
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
        await self.before_encoding()  # several workers: the item-vectors topic is read first
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

    async def redis_writer(self) -> None:
        if self.redis is not None:
            await self.redis.run_writer()

    # -- reporting ---------------------------------------------------------------------------
    async def consumer_lag(self, consumer: Any) -> dict[tuple[str, int], int]:
        """End offset minus the state's position, per assigned partition."""
        tps = sorted(consumer.assignment())
        if not tps:
            return {}
        try:
            # Asked of the broker (one ListOffsets request): exact whatever the fetch state.
            ends = await asyncio.wait_for(consumer.highwaters(*tps), timeout=10)
        except Exception as exc:  # metrics must never take the worker down
            self.metrics.kafka_up.set(0)
            log.warning("consumer lag unavailable (is the broker up?): %s", exc)
            return {}
        self.metrics.kafka_up.set(1)
        lags = {}
        for tp in tps:
            end = ends.get(tp)
            if end is not None:
                position = self.processor.positions.next_offset(tp.topic, tp.partition) or 0
                lags[(tp.topic, tp.partition)] = max(0, int(end) - position)
        return lags

    def snapshot(self, lags: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
        lags = lags or {}
        encoder = self.encoder.stats() if self.encoder is not None else {}
        snap = self.processor.snapshot(
            worker=self.worker_id,
            uptime_s=round(time.time() - self.started_at, 1),
            encoder={
                **encoder,
                "device": str(getattr(self.encoder, "device", "")) or None,
                "error": self.encoder_error,
            },
            consumer_lag={f"{t}[{p}]": lag for (t, p), lag in sorted(lags.items())},
            last_checkpoint=self.last_checkpoint,
        )
        m = self.metrics
        m.set_lag(lags)
        if snap["online"][f"hr@{self.processor.k}"] is not None:
            m.online_hit_rate.set(snap["online"][f"hr@{self.processor.k}"])
            m.online_ndcg.set(snap["online"][f"ndcg@{self.processor.k}"])
        if snap["coverage"] is not None:
            m.coverage.set(snap["coverage"])
        m.catalogue_items.set(snap["catalogue_items"])
        m.encode_queue.set(len(self.processor.encode_queue))
        return snap

    async def publish_metrics(self, consumer: Any = None) -> dict[str, Any]:
        lags = await self.consumer_lag(consumer) if consumer is not None else {}
        snap = self.snapshot(lags)
        await self._send(self.settings.topic("metrics"), self.worker_id.encode(), _json(snap))
        return snap

    def health(self) -> dict[str, Any]:
        stats = self.processor.recommender.stats()
        halted = self.processor.halted
        return {
            "status": "halted" if halted else "ok" if self.ready else "starting",
            "ready": self.ready and not halted,
            "halted": halted,
            "consecutive_errors": self.processor.consecutive_errors,
            "worker": self.worker_id,
            "model_version": self.processor.recommender.model_version,
            "events_processed": self.processor.events_processed,
            "model_events": stats.get(
                "n_events"
            ),  # events the model has learned, restored ones too
            "events_by_type": dict(self.processor.counts.events_by_type),
            "duplicates": self.processor.counts.duplicates,
            "replayed_skipped": self.processor.counts.replayed,
            "dlq_total": sum(self.processor.counts.dlq_by_reason.values()),
            "users": stats.get("n_users"),
            "items": stats.get("n_active_items"),
            "item_vectors": stats.get("n_vectors"),
            "encode_queue": len(self.processor.encode_queue),
            "encoder_error": self.encoder_error,
            "redis_errors": self.redis.errors if self.redis is not None else None,
            "last_checkpoint": self.last_checkpoint,
            "state_store": self.settings.state_store,
            **self.catalogue_sync_health(),
            **(self._group_health() if self.group_mode else {}),
        }

    def _group_health(self) -> dict[str, Any]:
        """Several workers: the partitions held here, each with the events learned from it by
        every owner so far and its position (sum them over the group to reconcile)."""
        return {
            "partitions": self.partitions_health(),
            "state_flushes": self.state_flushes,
            "item_deltas_applied": self.deltas_applied,
            "moved_messages": self.moved_messages,
            "state_restore_s": self.state_restore_s,
            "idle_users": {
                "parked": len(self.idle_store) if self.idle_store is not None else None,
                "evicted": self.users_evicted,
                "brought_back": self.users_brought_back,
            },
        }

    def recommend(self, user_id: str, k: int) -> dict[str, Any]:
        """A fresh list from the in-memory model (the web view; not published anywhere)."""
        t0 = time.perf_counter()
        items = self.processor.recommender.recommend(user_id, k)
        return {
            "user_id": user_id,
            "items": [i.to_dict() for i in items],
            # False: a cold user, served popular and fresh items.
            "known_user": user_id in getattr(self.processor.recommender, "users", ()),
            "model_version": self.processor.recommender.model_version,
            "generated_at": round(time.time(), 6),
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 3),
        }

    async def close(self) -> None:
        await self.close_partition_state()
        if self.redis is not None:
            await self.redis.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
