"""Several workers (``RECSTREAM_STATE_STORE=kafka``): each partition's users in Kafka.

A mixin of :class:`streams.runtime.Runtime`. What is persisted, and why it is exact, is
:mod:`recstream.user_partitions`; this file moves it:

* **assigned** (:meth:`take_partitions`, at every rebalance before Faust seeks): for each events
  partition new to this worker, a transactional producer with the partition's own transactional
  id starts, which fences the previous owner (its open transaction is aborted, and it can never
  commit one again); then the partition of ``<prefix>.user-state`` is read to its end with
  ``read_committed`` and becomes the users, dedup ids, counts and position here;
* **every** ``RECSTREAM_STATE_FLUSH_INTERVAL_S`` (:meth:`flush_state`): for each owned partition
  with changes, one transaction writes its changed users, its item delta (to
  ``<prefix>.item-deltas``) and its marker (position + counts);
* **revoked** (:meth:`release_partitions`): a last flush, then the partition is no longer
  applied here; its users leave memory once it is assigned elsewhere;
* **item deltas** of the other workers are merged as they arrive
  (:mod:`streams.item_delta_exchange`);
* **idle users** leave memory after ``RECSTREAM_USER_TTL_S`` (:mod:`streams.idle_parking`).

The Kafka clients (producers, read_committed reads) are :mod:`streams.user_state_topic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from recstream.adapters.metrics import Metrics
from recstream.config import Settings
from recstream.deltas import combine
from recstream.forget import ForgottenUsers
from recstream.online import id_hash
from recstream.pipeline import EventOutcome, StreamProcessor
from recstream.user_partitions import PartitionBook, RestoredPartition, encode_value
from streams.idle_parking import IdleParking
from streams.item_delta_exchange import WRITER_HEADER, ItemDeltaExchange
from streams.user_state_topic import read_user_state, start_state_producer, user_state_ends

log = logging.getLogger("recstream.worker")


class PartitionState(IdleParking, ItemDeltaExchange):
    """Expects the attributes below (set by Runtime); see the module docstring."""

    settings: Settings
    processor: StreamProcessor
    metrics: Metrics
    lock: asyncio.Lock
    inbox: asyncio.Queue
    worker_id: str

    def _init_partition_state(self) -> None:
        self.book = PartitionBook()
        # This process's deltas are skipped when they come back from the topic: already here.
        self.writer_id = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        self._state_producers: dict[int, AIOKafkaProducer] = {}
        self._flush_lock = asyncio.Lock()
        # user-state end offset right after this worker's last commit, per partition: equal at
        # the next assignment means nobody else wrote in between (the state here is current).
        self._end_after_flush: dict[int, int] = {}
        # Rebalances seen (bumped at each revocation): a take-over started for an older
        # assignment stops before it fences anyone (Faust runs it after the rebalance itself,
        # so a newer rebalance can overtake it).
        self.rebalances = 0
        self._take_lock = asyncio.Lock()
        self.state_flushes = 0
        self.state_restore_s: dict[int, float] = {}
        self.moved_messages = 0  # events of a partition no longer (or not yet) held here
        self._init_idle_parking()  # streams/idle_parking.py
        self._init_item_delta_exchange()  # streams/item_delta_exchange.py

    @property
    def group_mode(self) -> bool:
        return self.settings.state_store == "kafka"

    # -- events: only the owned partitions', a partition's events together --------------------
    def learn_owned_events(self, messages: Sequence[Any]) -> tuple[list[EventOutcome], list[int]]:
        """:meth:`StreamProcessor.learn_events` per owned partition, recording which users
        changed and the item delta each partition's events made; others are ``moved``. Returns
        the outcomes and the indexes that get a list (each user's last learned event), scored
        by the caller once every partition is learned (``recommend_after``): lists are handed
        over as each is scored, as without a group, and reflect the whole batch."""
        outcomes: list[EventOutcome | None] = [None] * len(messages)
        listed: list[int] = []
        groups: dict[int, list[int]] = defaultdict(list)
        now = time.time()
        for i, message in enumerate(messages):
            if self.book.owns(message.partition):
                groups[message.partition].append(i)
            else:
                outcomes[i] = EventOutcome("moved", received_at=now)
                self.moved_messages += 1
        recommender = self.processor.recommender
        for partition, indexes in groups.items():
            if self.idle_store is not None:
                self._bring_back(partition, [messages[i] for i in indexes])
            part, part_listed = self.processor.learn_events([messages[i] for i in indexes])
            for i, out in zip(indexes, part, strict=True):
                outcomes[i] = out
                if out.status == "ok" and out.event is not None:
                    e = out.event
                    self.book.learned(partition, e.user_id, id_hash(e.event_id), e.type)
                    self._stream_time = max(self._stream_time, e.ts)
            listed.extend(indexes[j] for j in part_listed)  # a user's events: one partition
            # Scoring changes no item-side state, so the delta is complete once learned.
            self.book.add_delta(partition, recommender.item_delta())
        return [o for o in outcomes if o is not None], listed

    def forgot_user(self, partition: int, user_id: str, at: float) -> None:
        if self.group_mode and self.book.owns(partition):
            self.book.forgot(partition, user_id, ForgottenUsers.key(user_id), at)
            if self.idle_store is not None:
                self.idle_store.take(partition, user_id)  # a parked copy goes too

    # -- assignment -------------------------------------------------------------------------
    async def take_partitions(
        self, partitions: Iterable[int], rebalance: int | None = None
    ) -> bool:
        """Own exactly ``partitions`` of the events topic from now on (see module docstring).

        ``rebalance``: the :attr:`rebalances` count the assignment belongs to; when another
        rebalance started meanwhile, nothing more is done and False returned (the newer one
        takes over). Producers are started one at a time, each after that check: a stale
        take-over must never fence the partition's current owner."""
        async with self._take_lock:
            return await self._take_partitions(set(partitions), rebalance)

    def _stale(self, rebalance: int | None) -> bool:
        return rebalance is not None and rebalance != self.rebalances

    async def _take_partitions(self, wanted: set[int], rebalance: int | None) -> bool:
        for p in [p for p in self.book.partitions if p not in wanted]:
            self._drop_partition(p)
        for p in [p for p in list(self._state_producers) if p not in wanted]:
            await self._stop_producer(p)
        held = [p for p in sorted(wanted) if self.book.owns(p)]
        # Kept only if nobody wrote the partition since our last commit (the end is where that
        # commit left it): an eager rebalance revokes and re-assigns everything each time.
        ends = await self._end_offsets(held) if held else {}
        new = [
            p
            for p in sorted(wanted)
            if p not in held or ends.get(p) is None or ends[p] != self._end_after_flush.get(p)
        ]
        self.metrics.owned_partitions.set(len(self.book.partitions))
        if not new:
            return True
        t0 = time.perf_counter()
        for p in new:
            self._drop_partition(p)
            await self._stop_producer(p)
            if self._stale(rebalance):
                return False
            # Fences the previous owner and aborts its open transaction before we read, so
            # the partition's end is final for as long as we own it.
            self._state_producers[p] = await self._start_producer(p)
        restored = await self._read_partitions(new)
        if self._stale(rebalance):
            return False
        async with self.lock:
            for r in restored:
                self._adopt(r)
        seconds = time.perf_counter() - t0
        self.metrics.owned_partitions.set(len(self.book.partitions))
        for r in restored:
            self.state_restore_s[r.partition] = round(seconds, 3)
        log.info(
            "partitions %s taken over in %.2f s: %s",
            new,
            seconds,
            ", ".join(f"[{r.partition}] {len(r.users)} users @{r.position}" for r in restored),
        )
        return True

    def _adopt(self, restored: RestoredPartition) -> None:
        rec, proc = self.processor.recommender, self.processor
        for user_id, data in restored.users.items():
            rec.import_user(user_id, data)
        for ids in restored.recent_ids.values():
            for h in ids:
                proc.dedup.add_hash(h)
        for key, at in restored.forgotten.items():
            proc.forgotten.add_key(key, at)
        for name, position in (
            ("events", restored.position),
            ("forget", restored.forget_position),
        ):
            topic = self.settings.topic(name)
            if position is None:
                proc.positions.discard(topic, restored.partition)
            else:
                proc.positions.reset(topic, restored.partition, position)
        self.book.adopt(restored)
        if restored.bad_records:
            log.error(
                "user-state[%d]: %d unreadable records skipped",
                restored.partition,
                restored.bad_records,
            )

    def _drop_partition(self, partition: int) -> None:
        ledger = self.book.release(partition)
        if ledger is None:
            return
        rec = self.processor.recommender
        if self.idle_store is not None:
            self.idle_store.drop_partition(partition)
        for user_id in ledger.users:
            rec.drop_user(user_id)
            self.processor.online.forget(user_id)
        for name in ("events", "forget"):
            self.processor.positions.discard(self.settings.topic(name), partition)
        self._end_after_flush.pop(partition, None)

    async def release_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked: flush them one last time. They stay in memory until the next assignment
        says whether they come back (an eager rebalance revokes everything first).

        Their messages still queued for the batch task are dropped: Faust has cleared its own
        buffers and will hand them again, from the committed position, to whoever owns the
        partition next (this worker included)."""
        revoked = set(partitions)
        self.rebalances += 1
        async with self.lock:
            self._drop_queued(revoked)
        owned = [p for p in revoked if self.book.owns(p)]
        if owned:
            await self.flush_state(owned)

    def _drop_queued(self, partitions: set[int]) -> int:
        kept, dropped = [], 0
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            self.inbox.task_done()
            if message.partition in partitions:
                dropped += 1
            else:
                kept.append(message)
        for message in kept:
            self.inbox.put_nowait(message)
        return dropped

    # -- flushing ---------------------------------------------------------------------------
    async def flush_state(self, partitions: Iterable[int] | None = None) -> int:
        """One transaction per owned partition with changes; returns the partitions written."""
        async with self._flush_lock:
            async with self.lock:  # a consistent cut: users, delta and position together
                work = []
                for p in self.book.partitions if partitions is None else partitions:
                    if not self.book.owns(p) or not self.book.has_changes(p):
                        continue
                    work.append(self._take_flush(p))
            # One producer per partition: their transactions commit side by side.
            done = await asyncio.gather(*(self._commit(flush) for flush in work))
            return sum(done)

    def _take_flush(self, p: int) -> dict[str, Any]:
        book, rec = self.book, self.processor.recommender
        ledger = book.ledger(p)
        flush = {
            "partition": p,
            "dirty": set(ledger.dirty),
            "dropped": set(ledger.dropped),
            "forgotten": dict(ledger.forgotten),
            "records": book.user_records(p, rec.export_user),
            "deltas": book.take_deltas(p),
            "marker": book.marker_record(
                p,
                self.processor.positions.next_offset(self.settings.topic("events"), p),
                self.processor.positions.next_offset(self.settings.topic("forget"), p),
            ),
        }
        book.flushed(p)  # changes from now on go to the next flush
        return flush

    async def _commit(self, flush: dict[str, Any], retry: bool = True) -> bool:
        p = flush["partition"]
        producer = self._state_producers.get(p)
        if producer is None:
            self._give_back(flush)
            return False
        state_topic, delta_topic = (
            self.settings.topic("user-state"),
            self.settings.topic("item-deltas"),
        )
        t0 = time.perf_counter()
        try:
            await producer.begin_transaction()
            for key, value in flush["records"]:
                await producer.send(state_topic, key=key, value=value, partition=p)
            if flush["deltas"]:
                delta = encode_value(combine(flush["deltas"]))
                headers = [(WRITER_HEADER, self.writer_id.encode())]
                await producer.send(
                    delta_topic, key=str(p).encode(), value=delta, partition=p, headers=headers
                )
            key, value = flush["marker"]
            marker = await producer.send(state_topic, key=key, value=value, partition=p)
            await producer.commit_transaction()
            written_at = (await marker).offset
        except ProducerFenced:
            self.metrics.state_flush_errors.labels(reason="fenced").inc()
            if retry and await self._refence(p):
                return await self._commit(flush, retry=False)
            # Another worker committed to the partition: it owns it now (we were too slow to
            # notice), and its state is the truth; ours goes at the next assignment.
            log.warning("user-state[%d]: fenced by a newer owner; flush dropped", p)
            self.book.release(p)
            return False
        except Exception as exc:
            log.error("user-state[%d]: flush failed, retried: %s: %s", p, type(exc).__name__, exc)
            self.metrics.state_flush_errors.labels(reason="error").inc()
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            self._give_back(flush)
            return False
        # The marker is the transaction's last record and the commit marker follows it: the
        # partition's end is two past it, unless someone else writes there.
        self._end_after_flush[p] = written_at + 2
        self.state_flushes += 1
        self.metrics.state_flush_seconds.observe(time.perf_counter() - t0)
        self.metrics.state_records.inc(len(flush["records"]) + 1)
        return True

    async def _refence(self, p: int) -> bool:
        """Fenced, but nobody committed since our last commit (a worker that started to take
        the partition over for an assignment already superseded, and stopped): take the
        transactional id back. True when the partition is still ours to write."""
        ends = await self._end_offsets([p])
        if ends.get(p) is None or ends[p] != self._end_after_flush.get(p):
            return False
        await self._stop_producer(p)
        self._state_producers[p] = await self._start_producer(p)
        log.warning("user-state[%d]: fenced by a superseded take-over; producer restarted", p)
        return True

    def _give_back(self, flush: dict[str, Any]) -> None:
        """A failed flush: its changes go into the next one (the state still holds them)."""
        p = flush["partition"]
        if not self.book.owns(p):
            return
        ledger = self.book.ledger(p)
        ledger.dirty |= flush["dirty"] - ledger.dropped
        ledger.dropped |= flush["dropped"] - ledger.dirty
        ledger.forgotten = {**flush["forgotten"], **ledger.forgotten}
        ledger.deltas[:0] = flush["deltas"]

    # -- Kafka clients (streams/user_state_topic.py) ------------------------------------------
    async def _start_producer(self, partition: int) -> AIOKafkaProducer:
        return await start_state_producer(self.settings, partition)

    async def _read_partitions(self, partitions: list[int]) -> list[RestoredPartition]:
        restored, ends = await read_user_state(self.settings, partitions)
        self._end_after_flush.update(ends)
        return restored

    async def _end_offsets(self, partitions: list[int]) -> dict[int, int]:
        return await user_state_ends(self.settings, partitions)

    async def _stop_producer(self, partition: int) -> None:
        producer = self._state_producers.pop(partition, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def close_partition_state(self) -> None:
        await self.stop_item_deltas()
        for p in list(self._state_producers):
            await self._stop_producer(p)

    def partitions_health(self) -> dict[str, Any]:
        summary = self.book.summary()
        topic = self.settings.topic("events")
        for p, info in summary.items():
            info["position"] = self.processor.positions.next_offset(topic, int(p))
        return summary
