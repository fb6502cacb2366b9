"""What the agents, timers and views share in one worker: model, sinks, metrics, checkpoints.

The logic is in :class:`recstream.pipeline.StreamProcessor` (pure); this class only moves data
between it and the outside world — Kafka (through Faust topics), Redis, Prometheus, the encoder
thread and the checkpoint directory — and holds the lock that keeps checkpoints consistent.

The other concerns live in their own files as mixins: checkpoints (:mod:`streams.checkpointing`),
where each partition resumes (:mod:`streams.partition_positions`), what the live page reads
(:mod:`streams.live`), the encoder (:mod:`streams.encoding`), and what the worker reports:
lag, the metrics snapshot, ``/healthz`` (:mod:`streams.reporting`).

One :class:`Runtime` per process, installed by ``recstream worker`` (:func:`install`) before the
Faust worker starts, or by a test with fake outputs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from faust.types import Message

from recstream.adapters.metrics import Metrics
from recstream.adapters.redis_sink import RedisSink
from recstream.checkpoint import CheckpointStore
from recstream.config import Settings
from recstream.dead_letters import dead_letter_key
from recstream.handover import TimeSlices
from recstream.pipeline import StreamProcessor
from recstream.pipeline_types import EventOutcome
from streams.catalogue_sync import CatalogueSync
from streams.checkpointing import Checkpointing
from streams.encoding import ItemEncoding, encoder_threads
from streams.live import Catalogue, LiveFeed, Subscribers
from streams.partition_positions import PartitionPositions
from streams.partition_state import PartitionState
from streams.reporting import Reporting

__all__ = [
    "Publish",
    "Runtime",
    "checkpoint_dir",
    "current",
    "encoder_threads",
    "install",
]

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


class Runtime(
    Checkpointing,
    PartitionPositions,
    PartitionState,
    CatalogueSync,
    LiveFeed,
    ItemEncoding,
    Reporting,
):
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
        # the new-item slot's list count at start-up (a restored model's): not this process's
        self._slot_lists_seen = processor.recommender.stats().get("slot_lists", 0)
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
        m = self.metrics
        async with self.lock:
            if self.group_mode:  # only the owned partitions' events (partition_state.py)
                outcomes, listed = self.learn_owned_events(messages)
            else:
                outcomes, listed = self.processor.learn_events(messages)
            learned: Counter[str] = Counter()
            handed: dict[str, float] = {}  # user -> when their list was handed over
            for message, out in zip(messages, outcomes, strict=True):
                if await self._skipped_or_dead_lettered(out.status, out.dlq, message):
                    continue
                assert out.event is not None
                learned[out.event.type] += 1
                await self._hand_over(out, handed)  # (none yet: lists come below)
            # Each user's list, handed over as soon as it is scored; the loop gets a turn every
            # slice of scoring, so the writers send them while the rest are scored
            # (recstream/handover.py). One list per user, after all of the batch is learned.
            slices = TimeSlices(self.settings.handover_slice_ms / 1e3)
            for index in listed:
                message = messages[index]
                out = outcomes[index] = self.processor.recommend_after(message, outcomes[index])
                if not await self._skipped_or_dead_lettered(out.status, out.dlq, message):
                    await self._hand_over(out, handed)
                if slices.due():
                    await asyncio.sleep(0)
            for event_type, n in learned.items():
                m.events.labels(type=event_type).inc(n)
            m.model_updates.inc(learned.total())
            m.event_batch_size.observe(len(messages))
            self._report_rewinds()
            # Every learned event's latency ends when the list reflecting it was handed over,
            # whether it triggered that list or was folded into it (its user's later event).
            done = time.time()
            for message, out in zip(messages, outcomes, strict=True):
                if out.status == "ok":
                    assert out.event is not None
                    end = handed.get(out.event.user_id, done)
                    since = message.timestamp if message.timestamp else out.received_at
                    latency = max(0.0, end - since)
                    m.latency.observe(latency)
                    m.processing.observe(max(0.0, end - out.received_at))
                    self.processor.observe_latency(latency)

    async def _hand_over(self, out: EventOutcome, handed: dict[str, float]) -> None:
        """An outcome's list (if it has one) to Kafka, Redis and the live page's streams."""
        if out.recommendation is None:
            return  # the user's later event in this batch carries their list
        s = self.settings
        body = out.recommendation.to_json()
        key = out.event.user_id.encode()
        if await self._send(s.topic("recommendations"), key, body):
            self.metrics.recommendations.inc()
        if self.redis is not None:  # queued: the writer task pipelines it
            await self.redis.put_recommendation(out.event.user_id, body, out.profile)
        self.subscribers.publish(out.event.user_id, body)  # never waits
        handed[out.event.user_id] = time.time()

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

    async def redis_writer(self) -> None:
        if self.redis is not None:
            await self.redis.run_writer()

    async def close(self) -> None:
        await self.close_partition_state()
        if self.redis is not None:
            await self.redis.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
