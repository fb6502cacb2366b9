"""The Kafka side of ``<prefix>.user-state`` (several workers): each partition's transactional
producer, and reading partitions back with ``read_committed``.

Kept apart from :mod:`streams.partition_state` (when to take, flush and release partitions) so
that file holds the policy and this one the clients. Only public aiokafka APIs.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from recstream.adapters.kafka import kafka_client_options
from recstream.config import Settings
from recstream.user_partitions import RestoredPartition, restore_partition

log = logging.getLogger("recstream.worker")

# One flush of a partition may carry a large item delta (a busy partition's co-visitation pairs
# of a few seconds): well above Kafka's 1 MiB default, set on the topic, producer and consumer.
MAX_STATE_MESSAGE_BYTES = 16 * 1024 * 1024


async def start_state_producer(settings: Settings, partition: int) -> AIOKafkaProducer:
    """The partition's transactional producer; starting it fences the previous owner (its open
    transaction is aborted, and it can never commit one again)."""
    producer = AIOKafkaProducer(
        **kafka_client_options(settings),
        client_id=f"{settings.app_id}-state-{partition}",
        transactional_id=f"{settings.app_id}-state-{partition}",
        enable_idempotence=True,
        acks="all",
        max_request_size=MAX_STATE_MESSAGE_BYTES,
        compression_type=None,  # values are zlib-compressed already
    )
    await producer.start()  # init_transactions
    return producer


async def read_user_state(
    settings: Settings, partitions: list[int]
) -> tuple[list[RestoredPartition], dict[int, int]]:
    """Every committed record of these partitions, from the start to the end: the restored
    partitions, and each partition's end offset (read_committed: the last stable offset)."""
    topic = settings.topic("user-state")
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_STATE_MESSAGE_BYTES,
        fetch_max_bytes=4 * MAX_STATE_MESSAGE_BYTES,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in partitions}
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, batch in batches.items():
                records[tp.partition].extend((r.key, r.value) for r in batch)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    restored = [restore_partition(p, records[p]) for p in partitions]
    return restored, {tp.partition: int(ends[tp]) for tp in tps}


async def user_state_ends(settings: Settings, partitions: list[int]) -> dict[int, int]:
    """The partitions' end offsets (read_committed); empty when the broker does not answer."""
    tps = [TopicPartition(settings.topic("user-state"), p) for p in partitions]
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), group_id=None, isolation_level="read_committed"
    )
    try:
        await consumer.start()
        ends = await consumer.end_offsets(tps)
    except KafkaError as exc:
        log.warning("user-state end offsets unavailable: %s", exc)
        return {}
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return {tp.partition: int(o) for tp, o in ends.items()}
