"""The clients the project uses against the real broker: kafka-python (producers, admin, tests)
and aiokafka (under Faust). Produce/consume, consumer groups with committed offsets, topic creation
by the admin API and by auto-creation."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def test_kafka_python_round_trip_with_consumer_group(
    bootstrap_servers: str, unique_topic, create_topics, kafka_admin: KafkaAdminClient
) -> None:
    (topic,) = create_topics(unique_topic("events"), partitions=3)
    group = unique_topic("group")
    sent = {f"u{i}".encode(): f"event-{i}".encode() for i in range(20)}
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=30_000,  # ends the loop instead of hanging when records are missing
    )
    received = {}
    for record in consumer:
        received[record.key] = record.value
        if len(received) == len(sent):
            break
    consumer.commit()
    consumer.close()

    assert received == sent
    # Keys spread over the 3 partitions, and the group's committed offsets account for every record.
    offsets = kafka_admin.list_group_offsets(group)[group]
    assert {tp.partition for tp in offsets} == {0, 1, 2}
    assert sum(meta.offset for meta in offsets.values()) == len(sent)


def test_topic_auto_created_on_first_produce(
    bootstrap_servers: str, unique_topic, kafka_admin: KafkaAdminClient
) -> None:
    topic = unique_topic("auto")
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    metadata = producer.send(topic, value=b"first").get(timeout=30)
    producer.close()
    try:
        assert metadata.topic == topic and metadata.offset == 0
        assert topic in kafka_admin.list_topics()
    finally:
        kafka_admin.delete_topics([topic], raise_errors=False)


def test_aiokafka_round_trip_with_consumer_group(
    bootstrap_servers: str, unique_topic, create_topics
) -> None:
    (topic,) = create_topics(unique_topic("aio"), partitions=2)
    group = unique_topic("group")
    values = [f"m{i}".encode() for i in range(10)]

    async def round_trip() -> tuple[list[bytes], int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=b"same-key")  # one partition: order
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            async for record in consumer:
                got.append(record.value)
                if len(got) == len(values):
                    break
            await consumer.commit()
            committed = [await consumer.committed(tp) or 0 for tp in consumer.assignment()]
            return got, sum(committed)
        finally:
            await consumer.stop()

    got, committed = asyncio.run(asyncio.wait_for(round_trip(), timeout=60))
    assert got == values
    assert committed == len(values)
