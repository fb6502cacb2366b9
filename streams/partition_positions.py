"""Where each input partition resumes: the state's own positions, checked against the log.

A mixin of :class:`streams.runtime.Runtime`. At every rebalance :meth:`resume_offsets` makes the
group's committed offsets those of the state (so Faust's seek lands exactly where the state
ends), after :mod:`recstream.offsets` has reset any position that makes no sense for the log;
every metrics interval :meth:`check_topic_ids` catches a topic re-created while the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from faust.types import TP

from recstream.adapters.metrics import Metrics
from recstream.config import Settings
from recstream.offsets import decide
from recstream.pipeline import StreamProcessor

log = logging.getLogger("recstream.worker")


class PartitionPositions:
    """Expects the attributes below (set by Runtime)."""

    processor: StreamProcessor
    settings: Settings
    metrics: Metrics
    topic_ids: dict[str, str]
    topic_id_reader: Callable[[list[str]], dict[str, str]] | None
    ready: bool
    lock: asyncio.Lock

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
        group = getattr(self, "group_mode", False)
        rebalance = getattr(self, "rebalances", 0)
        assigned = [tp for tp in consumer.assignment() if tp.topic in source_topics]
        if group:
            # Several workers: first the users of the events partitions assigned now (their
            # positions come with them, streams/partition_state.py), unless a newer rebalance
            # overtook this one (it resumes the partitions itself).
            events = self.settings.topic("events")
            mine = [tp.partition for tp in assigned if tp.topic == events]
            if not await self.take_partitions(mine, rebalance):
                log.info("rebalance superseded while taking partitions over: left to the next")
                return {}
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
            if group:
                # An empty partition state starts at the log's start: an explicit position, so
                # that a first message further on is reported as a jump (StreamProcessor.gaps)
                # instead of silently taken as the start.
                for tp in unknown:
                    if tp.topic == self.settings.topic("events"):
                        self.processor.reset_position(tp.topic, tp.partition, offsets[tp])
        if offsets:
            # Consumer._commit(offsets) commits explicit offsets: Faust has no public call for
            # it (Consumer.commit() commits the offsets Faust acked), and a seek of ours would
            # be undone by Faust's own seek to the committed offsets right after this hook.
            if not await consumer._commit(offsets):
                log.warning("the resume offsets were not committed (a new rebalance is on)")
            # Except at 0: aiokafka's seek_to_committed skips a committed offset of 0 (`if
            # offset and offset > 0`), so a partition stays wherever the fetcher was put at
            # assignment, from the committed offset of then: a killed worker's, Faust's acks
            # ahead of any state. Seen: a partition taken over without a marker started at
            # 12, and 12 events were never learned. Faust's seek leaves these alone, so ours
            # holds (tests/integration/test_worker_resume.py).
            for tp in sorted(tp for tp, o in offsets.items() if o == 0):
                await consumer.seek(tp, 0)
        log.info(
            "resuming at %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(offsets.items())),
        )
        self.ready = True
        return offsets

    def _report_rewinds(self) -> None:
        """Loudly: partitions found reading a new log (see StreamProcessor._accept), and
        positions that jumped forward past messages never seen."""
        while self.processor.gaps:
            topic, partition, expected, offset = self.processor.gaps.pop(0)
            log.warning(
                "offsets: %s[%d] jumped from %d to %d: %d offset(s) never read (markers of a "
                "transactional producer, or messages skipped)",
                topic,
                partition,
                expected,
                offset,
                offset - expected,
            )
            self.metrics.offset_gaps.inc(offset - expected)
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
        messages. So every position the state holds for the topic goes back to 0 (also those
        of partitions not assigned right now: the next rebalance resumes them at 0), and the
        assigned ones are sought there. Returns the re-created topics.
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
        if not recreated:
            return recreated
        async with self.lock:  # between two batches: positions and seeks move together
            for topic in sorted(recreated):
                self._read_recreated_topic_from_start(topic)
            self.topic_ids.update(now)
            for tp in sorted(consumer.assignment()):
                if tp.topic in recreated:
                    await consumer.seek(tp, 0)
        return recreated

    def _read_recreated_topic_from_start(self, topic: str) -> None:
        positions = self.processor.positions.as_dict()
        for (name, partition), old in sorted(positions.items()):
            if name != topic or old == 0:
                continue
            log.warning(
                "offsets: %s[%d]: the topic was re-created (new topic id): the state's position "
                "%d belonged to the deleted log; reading the new one from 0",
                topic,
                partition,
                old,
            )
            self.processor.reset_position(topic, partition, 0)
            self.metrics.offset_resets.labels(reason="topic_recreated").inc()

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
