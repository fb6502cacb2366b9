"""The topics of the public interface (ARCHITECTURE.md §3), named ``<prefix>.<name>``.

Keys and values are raw bytes on every topic: inputs are validated by :mod:`recstream.events`
(so a malformed message reaches the agent and is dead-lettered instead of crashing Faust's
deserializer), and outputs are the JSON that :mod:`recstream.events` / the worker produce.
"""

from __future__ import annotations

import faust

from streams.app import app, settings

# Raw bytes in and out: validation and JSON live in recstream.events, not in Faust models.
RAW = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

# key user_id · {"event_id", "user_id", "item_id", "type", "ts", "context"}
events_topic = app.topic(settings.topic("events"), schema=RAW, partitions=settings.partitions)
# key item_id · {"item_id", "title", "description", "categories", "tags", "ts", "deleted"}
items_topic = app.topic(settings.topic("items"), schema=RAW, partitions=settings.partitions)
# key user_id · {"user_id", "ts"}: `recstream forget` (recstream/forget.py)
forget_topic = app.topic(settings.topic("forget"), schema=RAW, partitions=settings.partitions)
# key user_id · {"user_id", "items": [{"item_id", "score", "reason"}], "trigger_event_id",
#                "model_version", "generated_at", "latency_ms"}
recommendations_topic = app.topic(
    settings.topic("recommendations"), schema=RAW, partitions=settings.partitions
)
# key = the original key · {"reason", "code", "raw", "raw_encoding", "topic", "partition", "offset"}
# Invalid catalogue messages land here too ("topic" says which input they came from).
dlq_topic = app.topic(settings.topic("events.dlq"), schema=RAW, partitions=settings.partitions)
# key = worker id · the periodic JSON snapshot (StreamProcessor.snapshot)
metrics_topic = app.topic(settings.topic("metrics"), schema=RAW, partitions=1)

SOURCE_TOPICS = (events_topic, items_topic, forget_topic)
