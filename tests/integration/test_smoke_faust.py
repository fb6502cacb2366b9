"""A faust-streaming agent on the real broker: consumes one topic, produces to another (what the
worker does with events -> recommendations), checked from outside with kafka-python, and stopped
cleanly (its consumer leaves the group)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import faust
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def test_faust_agent_consumes_and_produces(
    bootstrap_servers: str,
    unique_topic,
    create_topics,
    kafka_admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    # Topics exist before the app starts: Faust subscribes once, and a topic missing at that moment
    # is only picked up at the next metadata refresh (minutes), not in a test's lifetime.
    source, sink = create_topics(unique_topic("events"), unique_topic("recs"), partitions=2)
    app_id = f"it-faust-{uuid.uuid4().hex[:12]}"
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap_servers}",
        store="memory://",
        datadir=str(tmp_path),  # Faust's default is "<app id>-data" in the current directory
        web_enabled=False,
        topic_replication_factor=1,
        autodiscover=False,
    )
    events = app.topic(source, key_type=bytes, value_serializer="json")
    recommendations = app.topic(sink, key_type=bytes, value_serializer="json")

    @app.agent(events)
    async def recommend(stream):
        async for key, event in stream.items():
            await recommendations.send(
                key=key, value={"user_id": event["user_id"], "items": [event["item_id"] + "-next"]}
            )

    sent = {f"u{i}": f"i{i}" for i in range(6)}
    received: dict[str, dict] = {}

    def produce_and_collect() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
        for user, item in sent.items():
            value = json.dumps({"user_id": user, "item_id": item, "type": "view"}).encode()
            producer.send(source, key=user.encode(), value=value)
        producer.flush(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            sink,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=45_000,
        )
        for record in consumer:
            received[record.key.decode()] = json.loads(record.value)
            if len(received) == len(sent):
                break
        consumer.close()

    async def run() -> None:
        await asyncio.wait_for(app.start(), timeout=60)
        try:
            # kafka-python blocks: run it in a thread so the agent keeps going on this loop.
            await asyncio.get_running_loop().run_in_executor(None, produce_and_collect)
        finally:
            await asyncio.wait_for(app.stop(), timeout=60)

    try:
        asyncio.run(run())
        assert received == {u: {"user_id": u, "items": [i + "-next"]} for u, i in sent.items()}
        # Stopped cleanly: the app's consumer left its group (Faust's app id is the group id).
        (group,) = kafka_admin.describe_groups([app_id]).values()
        assert group["members"] == [] and group["group_state"] == "Empty"
    finally:
        kafka_admin.delete_topics([f"{app_id}-__assignor-__leader"], raise_errors=False)
