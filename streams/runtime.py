"""What the agents, timers and views share in one worker: model, sinks, metrics, checkpoints.

The logic is in :class:`recstream.pipeline.StreamProcessor` (pure); this class only moves data
between it and the outside world — Kafka (through Faust topics), Redis, Prometheus, the encoder
thread and the checkpoint directory — and holds the lock that keeps checkpoints consistent.

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
import signal
import socket
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from faust.types import TP, Message

from recstream.adapters.metrics import Metrics
from recstream.adapters.redis_sink import RedisSink
from recstream.checkpoint import CheckpointStore
from recstream.config import Settings
from recstream.dead_letters import dead_letter_key
from recstream.events import Item
from recstream.offsets import decide
from recstream.pipeline import StreamProcessor

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


class Runtime:
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
        async with self.lock:
            out = self.processor.handle_item(
                message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
            )
            self._report_rewinds()
            if await self._skipped_or_dead_lettered(out.status, out.dlq, message):
                return
            m.item_updates.labels(action=out.status).inc()
            if out.status == "deleted" and self.redis is not None:
                assert out.item is not None
                await self.redis.delete_item(out.item.item_id)
        if out.status == "halted":  # the items agent stops too (outside the lock: checkpoints)
            await self._wait_while_halted()
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
                self.metrics.users_forgotten.inc()
                self._prune_checkpoints = True
                log.info("forgot a user (request at offset %d)", message.offset)  # no id logged
            elif await self._skipped_or_dead_lettered(out.status, out.dlq, message):
                return
        if out.status == "halted":
            await self._wait_while_halted()

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
            pass  # a forgotten user's event from before the request, replayed: not learned
        elif status == "dlq":
            assert dlq is not None
            m.dlq.labels(reason=dlq["code"]).inc()
            await self._send_dead_letter(message, dlq)
        elif status != "halted":
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
        await self.publish(self.settings.topic("metrics"), self.worker_id.encode(), _json(snap))
        return snap

    # -- checkpoints -------------------------------------------------------------------------
    async def checkpoint(
        self, flush: Callable[[], Awaitable[Any]] | None = None, *, background: bool = True
    ) -> Path | None:
        """Save model + stream state + offsets atomically (models/README.md).

        The state is pickled in a forked child process where the OS allows it (POSIX): fork is
        a copy-on-write snapshot of the whole process, taken with the lock held, so the child
        writes exactly the state the offsets describe while the event loop goes on at once.
        The loop pauses for the fork alone (milliseconds) instead of the whole pickling, which
        grows with the state (160 ms at the latency benchmark's size, a second and more for a
        large model). ``background=False`` (the final checkpoint at shutdown) or no ``fork``
        writes in this process, with the loop paused.
        """
        if self.store is None or self.processor.changes == self._saved_changes:
            return None  # nothing new since the last one (or since the restore)
        if self._checkpoint_child is not None:
            if background:
                return None  # the previous one is still being written: next time
            await self._checkpoint_child  # shutdown: let it finish, then write the last one
        async with self.lock:
            if flush is not None:
                # Every recommendation of a reflected event is in Kafka before the offsets that
                # skip its event are saved: a crash right after cannot lose its output.
                await flush()
            if self.redis is not None:
                # Likewise for Redis, but never wait long: it is a cache, not the state.
                try:
                    await asyncio.wait_for(self.redis.flush(), timeout=10)
                except TimeoutError:
                    log.warning("checkpoint: %d Redis writes still queued", self.redis.pending)
            changes, events = self.processor.changes, self.processor.events_processed
            t0 = time.perf_counter()
            if background and hasattr(os, "fork"):
                pid = self._fork_checkpoint_writer()
                path = None
            else:
                pid = None
                path = self.processor.save_checkpoint(self.store, topic_ids=self.topic_ids)
            pause = time.perf_counter() - t0
        if pid is not None:
            self._checkpoint_child = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
            )
            try:
                _, status = await self._checkpoint_child
            except ChildProcessError:  # reaped by someone else: the store tells the outcome
                latest = self.store.latest()
                done = latest is not None and latest.meta.get("events_processed") == events
                status = 0 if done else 1
            finally:
                self._checkpoint_child = None
            if os.waitstatus_to_exitcode(status) != 0:
                self.metrics.checkpoint_errors.inc()
                log.error("checkpoint writer %d failed (status %d); retried next time", pid, status)
                return None
            latest = self.store.latest()
            assert latest is not None
            path = latest.path
        assert path is not None
        seconds = time.perf_counter() - t0
        self._saved_changes = changes
        if self._prune_checkpoints and self.store is not None:
            removed = self.store.keep_only_latest()
            self._prune_checkpoints = False
            log.info("checkpoint: %d older checkpoint(s) removed after a forget request", removed)
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(seconds)
        self.metrics.checkpoint_pause_seconds.observe(pause)
        self.metrics.last_checkpoint.set(time.time())
        self.last_checkpoint = {
            "path": str(path),
            "events_processed": events,
            "seconds": round(seconds, 3),
            "pause_s": round(pause, 4),
            "at": round(time.time(), 3),
        }
        log.info(
            "checkpoint %s: %d events, paused the loop %.4f s, written in %.3f s",
            path.name,
            events,
            pause,
            seconds,
        )
        return path

    def _fork_checkpoint_writer(self) -> int:
        """Fork; the child writes the checkpoint and exits. Returns the child's pid."""
        pid = os.fork()
        if pid:
            return pid
        # The child: only the forking thread exists here. Pickle, write, rename, and leave with
        # os._exit, never running the parent's atexit hooks, Faust's shutdown or torch.
        code = 1
        try:
            _die_with_parent()
            self.processor.save_checkpoint(self.store, topic_ids=self.topic_ids)
            code = 0
        except BaseException:  # reported by the exit code; the parent logs it
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)

    async def resume_offsets(self, consumer: Any, source_topics: set[str]) -> dict[TP, int]:
        """Make the group's committed offsets those of the restored state (every rebalance).

        Faust seeks each assigned partition to its *committed* offset right after this. Faust
        commits acked offsets every few seconds, so after a crash its offsets are ahead of the
        last checkpoint: resuming there would lose the events in between. Committing the
        state's own positions first makes Faust's seek land exactly where the state ends. A
        partition the state has never read starts from the beginning (the state is empty).

        No lock: each message's state change and position move happen in one synchronous call,
        so the positions read here always match the state, whatever an agent is awaiting.
        """
        assigned = [tp for tp in consumer.assignment() if tp.topic in source_topics]
        if assigned:
            await self._reset_senseless_offsets(consumer, assigned)
        offsets: dict[TP, int] = {}
        unknown = []
        for tp in assigned:
            position = self.processor.positions.next_offset(tp.topic, tp.partition)
            if position is None:
                unknown.append(tp)
            else:
                offsets[tp] = position
        if unknown:
            earliest = await consumer.earliest_offsets(*unknown)
            offsets.update({tp: int(earliest.get(tp) or 0) for tp in unknown})
        if offsets:
            # Consumer._commit(offsets) commits explicit offsets (Consumer.commit() would commit
            # Faust's acked ones); it is the transport's own commit, used by every driver.
            await consumer._commit(offsets)
        log.info(
            "resuming at %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(offsets.items())),
        )
        self.ready = True
        return offsets

    def _report_rewinds(self) -> None:
        """Loudly: partitions found reading a new log (see StreamProcessor._accept)."""
        while self.processor.rewinds:
            topic, partition, old = self.processor.rewinds.pop(0)
            log.warning(
                "offsets: %s[%d] went back from %d to 0: the log was replaced (a re-created "
                "topic); reading it from the start, events seen before count as duplicates",
                topic,
                partition,
                old,
            )
            self.metrics.offset_resets.labels(reason="topic_recreated").inc()

    async def check_topic_ids(self, consumer: Any, source_topics: set[str]) -> set[str]:
        """Every metrics interval: a source topic re-created since the last check (new Kafka
        topic id) is read from offset 0, whatever offset the consumer is at.

        A re-created topic that already holds more messages than the old position gives the
        consumer no error: it would read on from the old offset and skip the new log's first
        messages. Seeking to 0 makes the processor see the jump back to a new log
        (StreamProcessor._accept). Returns the re-created topics.
        """
        if self.topic_id_reader is None:
            return set()
        names = sorted(source_topics)
        try:
            now = await asyncio.get_running_loop().run_in_executor(
                None, self.topic_id_reader, names
            )
        except Exception as exc:  # the broker is away: the next interval tries again
            log.debug("topic ids unavailable: %s", exc)
            return set()
        recreated = {t for t, tid in now.items() if self.topic_ids.get(t) not in (None, tid)}
        self.topic_ids.update(now)
        for tp in sorted(consumer.assignment()):
            if tp.topic in recreated:
                log.warning(
                    "offsets: %s was re-created: reading [%d] from 0", tp.topic, tp.partition
                )
                await consumer.seek(tp, 0)
        return recreated

    async def _reset_senseless_offsets(self, consumer: Any, assigned: list[TP]) -> None:
        """Apply :mod:`recstream.offsets` to every assigned partition: a position into a
        re-created topic, beyond the log's end or before its start is reset to the log's start,
        with a WARNING and a metric, never skipped silently."""
        recreated: set[str] = set()
        if self.topic_id_reader is not None:
            names = sorted({tp.topic for tp in assigned})
            loop = asyncio.get_running_loop()
            try:
                now = await loop.run_in_executor(None, self.topic_id_reader, names)
            except Exception as exc:  # no answer: the offsets check below still runs
                log.warning("could not read the topic ids: %s", exc)
                now = {}
            recreated = {t for t, tid in now.items() if self.topic_ids.get(t) not in (None, tid)}
            self.topic_ids.update(now)  # the next checkpoint belongs to the new topics
        try:
            starts = await consumer.earliest_offsets(*assigned)
            ends = await consumer.highwaters(*assigned)
        except Exception as exc:
            log.warning("could not read the log offsets to check the positions: %s", exc)
            return
        for tp in assigned:
            reset = decide(
                (tp.topic, tp.partition),
                position=self.processor.positions.next_offset(tp.topic, tp.partition),
                start=int(starts.get(tp) or 0),
                end=int(ends.get(tp) or 0),
                topic_recreated=tp.topic in recreated,
            )
            if reset is None:
                continue
            log.warning("offsets: %s", reset.message())
            self.processor.reset_position(tp.topic, tp.partition, reset.resume_at)
            self.metrics.offset_resets.labels(reason=reset.reason).inc()
            self.metrics.offsets_lost.inc(reset.lost)

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
        if self.redis is not None:
            await self.redis.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _die_with_parent() -> None:
    """Linux: a checkpoint writer whose worker was killed dies too, so it cannot finish a
    checkpoint after a restarted worker has started from an older one."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
