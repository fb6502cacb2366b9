"""Follow every partition of some topics, without a consumer group: what a Faust GlobalTable does.

With several workers in one group (``RECSTREAM_STATE_STORE=kafka``) each worker's agents get only
some partitions, but some topics must be read whole by every worker: the catalogue, the item
vectors (streams/catalogue_sync.py), the item deltas. :class:`GlobalReader` reads them with its
own aiokafka consumer: all partitions assigned by hand, no group, no commits; from the beginning
(or from the positions given), handing each batch of records to a callback.

``caught_up`` is set once every partition has reached the end offset it had when the reader
started (an empty topic is caught up at once): from then on what was written before the start
has been applied. Broker outages are the consumer's business (it reconnects); the reader logs
and goes on, and never raises out of its task.

    reader = GlobalReader(settings, ["shop.items"], apply, name="catalogue")
    await reader.start()
    await reader.caught_up.wait()
    ...
    await reader.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from recstream.adapters.kafka import kafka_client_options
from recstream.config import Settings

__all__ = ["GlobalReader", "OnRecords"]

log = logging.getLogger("recstream.worker")

# on_records(records): a batch, in offset order within each partition; sync or async
OnRecords = Callable[[list[ConsumerRecord]], Awaitable[Any] | Any]

RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits between start-up attempts (broker down, topic missing)


class GlobalReader:
    """Read all partitions of ``topics`` and call ``on_records`` with each batch.

    Parameters
    ----------
    settings
        Broker addresses and security options (the same as every other client of the worker).
    topics
        Topic names, read whole; partitions added after the start are not followed.
    on_records
        ``on_records(records)``: a list of aiokafka ``ConsumerRecord`` (raw bytes ``key`` and
        ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``), sync or async. An
        exception is logged and the reader goes on past the batch.
    isolation_level
        ``"read_committed"`` (default: never records of an aborted or open transaction) or
        ``"read_uncommitted"``.
    name
        For the logs and the client id.
    positions
        ``{(topic, partition): next offset}`` to start from; other partitions start at the
        beginning. An offset out of range starts at the beginning too.
    max_records
        Most records per ``on_records`` call.
    consumer_options
        More ``AIOKafkaConsumer`` options (e.g. ``max_partition_fetch_bytes`` for large
        records); they override the defaults here.

    Attributes
    ----------
    positions : dict[TopicPartition, int]
        The next offset of each partition, past the records ``on_records`` has been given.
    caught_up : asyncio.Event
        Set once every partition has reached its end offset as of the start.
    records : int
        Records handed to ``on_records`` so far.
    """

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        on_records: OnRecords,
        *,
        isolation_level: str = "read_committed",
        name: str,
        positions: Mapping[tuple[str, int], int] | None = None,
        max_records: int = 1000,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isolation_level not in ("read_committed", "read_uncommitted"):
            raise ValueError(f"isolation_level: {isolation_level!r}")
        if not topics:
            raise ValueError("GlobalReader needs at least one topic")
        self.settings = settings
        self.topics = list(topics)
        self.on_records = on_records
        self.isolation_level = isolation_level
        self.name = name
        self.max_records = max_records
        self.consumer_options = dict(consumer_options or {})
        self._start_at = {TopicPartition(t, p): int(o) for (t, p), o in (positions or {}).items()}
        self.positions: dict[TopicPartition, int] = {}
        self.caught_up = asyncio.Event()
        self.records = 0
        self._targets: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"GlobalReader({self.name!r}, {self.topics}, caught_up={self.caught_up.is_set()})"

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start reading in a task of its own; returns at once (a broker that is down, or a
        topic that does not exist yet, is waited for in that task)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"global-reader-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def wait_caught_up(self, timeout: float | None = None) -> bool:
        """True once caught up; False when ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def lag(self) -> int | None:
        """Records left before caught up (None until the start has read the end offsets)."""
        if self.caught_up.is_set():
            return 0
        if not self._targets and self._consumer is None:
            return None
        return sum(max(0, end - self.positions.get(tp, 0)) for tp, end in self._targets.items())

    # -- internals -----------------------------------------------------------------------------
    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **kafka_client_options(s),
            client_id=f"{s.app_id}-global-{self.name}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.isolation_level,
            metadata_max_age_ms=int(s.metadata_max_age_s * 1000),
            **self.consumer_options,
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._close()
                wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.warning(
                    "global reader %s: not started (%s: %.200s); retrying in %.1f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)
        await self._follow()

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the topics (a missing topic is an error: retried)."""
        admin = AIOKafkaAdminClient(
            **kafka_client_options(self.settings),
            client_id=f"{self.settings.app_id}-global-{self.name}-admin",
            request_timeout_ms=15_000,
        )
        await admin.start()
        try:
            # Listed first: asking for the metadata of a missing topic would create it on a
            # broker with auto.create.topics.enable.
            missing = set(self.topics) - set(await admin.list_topics())
            if missing:
                raise LookupError(f"no topic {', '.join(sorted(missing))}")
            described = await admin.describe_topics(self.topics)
        finally:
            await admin.close()
        found = {
            t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in described
            if t.get("error_code") == 0 and t.get("partitions")
        }
        if set(found) != set(self.topics):
            raise LookupError(
                f"no partitions of {', '.join(sorted(set(self.topics) - set(found)))}"
            )
        return [TopicPartition(t, p) for t in self.topics for p in found[t]]

    async def _connect(self) -> None:
        tps = await self._partitions()
        consumer = self._consumer = self._new_consumer()
        await consumer.start()
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        # A given position outside the log (deleted by retention, a re-created topic): the start.
        given = {
            tp: at
            for tp, at in self._start_at.items()
            if tp in ends and firsts[tp] <= at <= ends[tp]
        }
        from_start = [tp for tp in tps if tp not in given]
        if from_start:
            await consumer.seek_to_beginning(*from_start)
        for tp, at in given.items():
            consumer.seek(tp, at)
        starts = {tp: await consumer.position(tp) for tp in tps}
        self.positions = dict(starts)
        self._targets = {tp: int(end) for tp, end in ends.items() if int(end) > starts[tp]}
        log.info(
            "global reader %s: %d partitions of %s, %d records to catch up",
            self.name,
            len(tps),
            ",".join(self.topics),
            sum(end - starts[tp] for tp, end in self._targets.items()),
        )
        self._check_caught_up()

    async def _follow(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a topic deleted under us: log, wait, go on
                log.warning(
                    "global reader %s: fetch failed (%s: %.200s)",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(1.0)
                continue
            records = [r for tp in sorted(batches) for r in batches[tp]]
            if records:
                await self._deliver(records)
            for tp, batch in batches.items():
                if batch:
                    self.positions[tp] = batch[-1].offset + 1
            if self._targets:
                await self._update_targets(consumer)

    async def _deliver(self, records: list[ConsumerRecord]) -> None:
        try:
            result = self.on_records(records)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "global reader %s: on_records failed on %d records (skipped)",
                self.name,
                len(records),
            )
        self.records += len(records)

    async def _update_targets(self, consumer: AIOKafkaConsumer) -> None:
        for tp in list(self._targets):
            # The fetch position: past control records and compacted gaps too.
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
            except (Exception, TimeoutError):  # an outage: the next round asks again
                continue
            self.positions[tp] = max(self.positions.get(tp, 0), position)
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        for tp, end in list(self._targets.items()):
            if self.positions.get(tp, 0) >= end:
                del self._targets[tp]
        if not self._targets and not self.caught_up.is_set():
            log.info("global reader %s: caught up (%d records)", self.name, self.records)
            self.caught_up.set()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
