"""kafka-python helpers shared by ``produce``, ``consume`` and the worker's startup.

The Faust worker itself talks to Kafka through aiokafka; these synchronous helpers do the
administrative work around it: create the topics with the configured partition count (a broker
auto-creating them would use its own default), and read the topic ids a checkpoint is tied to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError

from recstream.config import Settings

__all__ = [
    "SOURCE_TOPICS",
    "admin_client",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "topic_ids",
    "topic_layout",
]

SOURCE_TOPICS = ("events", "items")


def topic_layout(settings: Settings) -> dict[str, int]:
    """Every topic of the interface and its partition count."""
    p = settings.partitions
    return {
        settings.topic("events"): p,  # key user_id: one user's events stay in order
        settings.topic("items"): p,  # key item_id
        settings.topic("recommendations"): p,  # key user_id
        settings.topic("events.dlq"): p,
        settings.topic("metrics"): 1,  # a few snapshots a minute: order beats parallelism
    }


@contextlib.contextmanager
def admin_client(settings: Settings, timeout_s: float = 20.0) -> Iterator[KafkaAdminClient]:
    """An admin client; waits up to ``timeout_s`` for a broker that is still starting."""
    try:
        client = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.app_id}-admin",
            request_timeout_ms=15_000,
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaTimeoutError:
        raise ConnectionError(
            f"no Kafka broker at {','.join(settings.bootstrap_servers)} "
            "(is the stack up? `make up`)"
        ) from None
    try:
        yield client
    finally:
        client.close()


def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the missing topics of :func:`topic_layout`; returns the names created."""
    layout = topic_layout(settings)
    wanted = {n: layout[n] for n in (names or layout)}
    with admin_client(settings) as admin:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, partitions, settings.replication_factor)
            for name, partitions in wanted.items()
            if name not in existing
        ]
        if not new:
            return []
        result = admin.create_topics(new, raise_errors=False, wait_for_metadata=True)
        for t in result.get("topics", []):
            # 36 = TOPIC_ALREADY_EXISTS: another worker or producer won the race, fine.
            if t.get("error_code") not in (0, 36):
                raise KafkaError(f"creating topic {t['name']}: {t.get('error_message')}")
        return [t.name for t in new]


def topic_ids(settings: Settings, names: Iterable[str]) -> dict[str, str]:
    """Kafka's UUID of each existing topic: a re-created topic gets a new one."""
    names = list(names)
    with admin_client(settings) as admin:
        return {
            t["name"]: str(t.get("topic_id"))
            for t in admin.describe_topics(names)
            if t.get("error_code") == 0
        }


def make_producer(settings: Settings, **overrides) -> KafkaProducer:
    config = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.app_id}-producer",
        "acks": 1,
        "linger_ms": 5,  # small batches: throughput without hurting the demo's latency
        "retries": 5,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(settings: Settings, **overrides) -> KafkaConsumer:
    """A group-less consumer: partitions are assigned by the caller (no offsets committed)."""
    config = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"{settings.app_id}-consumer",
        "group_id": None,
        "enable_auto_commit": False,
    }
    config.update(overrides)
    return KafkaConsumer(**config)
