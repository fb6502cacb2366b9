"""kafka-python helpers shared by ``produce``, ``consume`` and the worker's startup.

The Faust worker itself talks to Kafka through aiokafka; these synchronous helpers do the
administrative work around it: create the topics with the configured partition count (a broker
auto-creating them would use its own default), and read the topic ids a checkpoint is tied to.

The one place where the security settings (TLS, SASL) become client options:
:func:`kafka_client_options` for kafka-python, :func:`faust_broker_credentials` for Faust (and
its aiokafka clients). Both build their TLS context with :func:`ssl_context`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiokafka.helpers import create_ssl_context
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError

from recstream.config import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "SOURCE_TOPICS",
    "admin_client",
    "ensure_topics",
    "faust_broker_credentials",
    "kafka_client_options",
    "make_consumer",
    "make_producer",
    "ssl_context",
    "topic_ids",
    "topic_layout",
]

SOURCE_TOPICS = ("events", "items", "forget")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every client, or None when the protocol is not SSL / SASL_SSL."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )
    # The context verifies the certificate chain whatever this says; the name check can be turned
    # off for a broker whose certificate does not name the address dialled (a tunnel, a NAT).
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Connection options of a kafka-python client (admin, producer, consumer): the bootstrap
    servers and, when the protocol asks for them, the TLS context and the SASL credentials.

    The password is read here (from the file, if one is configured): never log the result.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        # kafka-python names the SCRAM credentials sasl_plain_* too.
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        options["sasl_plain_password"] = settings.kafka_sasl_password()
    return options


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """``faust.App(broker_credentials=...)``: the same TLS context and SASL credentials as
    :func:`kafka_client_options`; Faust passes them to each of its aiokafka clients (consumer,
    producer, and the topic creation they do). None for PLAINTEXT."""
    import faust  # here, not at the top: `recstream produce` and `consume` never need Faust

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL_"):
        # With a context Faust picks SASL_SSL, without one SASL_PLAINTEXT.
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_sasl_password(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def topic_layout(settings: Settings) -> dict[str, int]:
    """Every topic of the interface and its partition count."""
    p = settings.partitions
    return {
        settings.topic("events"): p,  # key user_id: one user's events stay in order
        settings.topic("items"): p,  # key item_id
        # key user_id, like the events: the worker that owns a user's events owns its requests
        settings.topic("forget"): p,
        settings.topic("recommendations"): p,  # key user_id
        settings.topic("events.dlq"): p,
        settings.topic("metrics"): 1,  # a few snapshots a minute: order beats parallelism
        **dict.fromkeys(topic_configs(settings), p),
    }


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The topics of several workers (``RECSTREAM_STATE_STORE=kafka``) and their settings;
    partition ``p`` of each belongs with partition ``p`` of the events (README, "Scaling out")."""
    if settings.state_store != "kafka":
        return {}
    return {
        # key u:<user> / f:<hash> / p:<partition>: the latest record per key is the state
        settings.topic("user-state"): {"cleanup.policy": "compact"},
        # one record per flush of a partition: every worker replays them all from the start
        settings.topic("item-deltas"): {"cleanup.policy": "delete", "retention.ms": "-1"},
        # key item_id: the newest vector of each item (streams/catalogue_sync.py)
        settings.topic("item-vectors"): {"cleanup.policy": "compact"},
    }


@contextlib.contextmanager
def admin_client(settings: Settings, timeout_s: float = 20.0) -> Iterator[KafkaAdminClient]:
    """An admin client; waits up to ``timeout_s`` for a broker that is still starting."""
    try:
        client = KafkaAdminClient(
            **kafka_client_options(settings),
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
            NewTopic(
                name,
                partitions,
                settings.replication_factor,
                topic_configs=topic_configs(settings).get(name, {}),
            )
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
        **kafka_client_options(settings),
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
        **kafka_client_options(settings),
        "client_id": f"{settings.app_id}-consumer",
        "group_id": None,
        "enable_auto_commit": False,
    }
    config.update(overrides)
    return KafkaConsumer(**config)
