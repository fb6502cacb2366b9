"""Prometheus metrics of the worker (prometheus_client), served by the Faust web server.

Names follow the Prometheus conventions (``recstream_`` prefix, ``_total`` counters, base units
in ``_seconds``); the alert rules in ``deploy/prometheus/`` use them, so renaming one is an
interface change. Each :class:`Metrics` owns a private registry: two workers in one process
(tests) never collide, and ``/metrics`` shows exactly the worker's own series plus the process
collectors.

Counters are per process and restart from zero with the worker, as Prometheus expects
(``rate()`` handles the reset). The cumulative, checkpointed counts (events since the stream
began) are in the JSON snapshot on the metrics topic and in ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

# The classic text format (0.0.4), which every Prometheus and promtool version parses; our names
# are all legacy-valid, so the body is the same as the newer 1.0.0 text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Event→recommendation latency: sub-millisecond to a minute (a worker catching up on a backlog
# has latencies of seconds); 0.05 is a bucket bound because the p99 alert threshold is 50 ms.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# What the Redis sink keeps pending (recstream.adapters.redis_sink.PENDING_KINDS; this module
# does not import the sink, which would pull redis into every Metrics user).
REDIS_KINDS = ("list", "profile", "item")
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
ENCODE_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# The "_created" series double the exposition for no use here (Prometheus ignores them in the
# text format). Process-wide, and this module is the only prometheus_client user in a worker.
disable_created_metrics()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.events = Counter(
            "recstream_events_total",
            "Valid, distinct events processed, by type",
            ["type"],
            registry=r,
        )
        self.dlq = Counter(
            "recstream_dlq_total",
            "Messages sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "recstream_duplicate_events_total",
            "Events dropped as duplicates (event_id)",
            registry=r,
        )
        self.replayed = Counter(
            "recstream_replayed_messages_total",
            "Redelivered messages skipped: their offset is already in the restored state",
            registry=r,
        )
        self.latency = Histogram(
            "recstream_event_to_recommendation_seconds",
            "From the event's Kafka record timestamp to its recommendation being published",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "recstream_event_processing_seconds",
            "Time inside the worker per event: receive, learn, recommend, publish",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_updates = Counter(
            "recstream_model_updates_total", "Model updates (one per learned event)", registry=r
        )
        self.recommendations = Counter(
            "recstream_recommendations_total", "Recommendation lists published", registry=r
        )
        self.item_updates = Counter(
            "recstream_item_updates_total",
            "Catalogue messages applied, by action",
            ["action"],
            registry=r,
        )
        self.items_encoded = Counter(
            "recstream_items_encoded_total",
            "Item vectors installed from the BERT encoder",
            registry=r,
        )
        self.event_batch_size = Histogram(
            "recstream_event_batch_size",
            "Event messages per processing batch (1 while the worker keeps up; more when behind)",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.encode_batch_size = Histogram(
            "recstream_encode_batch_size",
            "Items per encoder batch",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.encode_batch_seconds = Histogram(
            "recstream_encode_batch_seconds",
            "Wall time of one encoder batch (worker thread)",
            buckets=ENCODE_SECONDS_BUCKETS,
            registry=r,
        )
        self.encode_errors = Counter(
            "recstream_encode_errors_total", "Encoder batches that failed (retried)", registry=r
        )
        self.encode_queue = Gauge(
            "recstream_encode_queue_items",
            "Items waiting for, or in, an encoder batch",
            registry=r,
        )
        self.online_hit_rate = Gauge(
            "recstream_online_hit_rate",
            "Prequential hr@K on live purchases against the user's last published list",
            registry=r,
        )
        self.online_ndcg = Gauge(
            "recstream_online_ndcg", "Prequential ndcg@K on live purchases", registry=r
        )
        self.coverage = Gauge(
            "recstream_catalogue_coverage_ratio",
            "Share of the catalogue recommended at least once",
            registry=r,
        )
        self.catalogue_items = Gauge(
            "recstream_catalogue_items", "Live (not deleted) catalogue items", registry=r
        )
        self.new_items = Gauge(
            "recstream_new_items",
            "Items published while the worker runs that are still new (within the new-item "
            "slot's window and fewer than 5 events): the slot's candidates",
            registry=r,
        )
        self.slot_lists = Counter(
            "recstream_new_item_slot_lists_total",
            "Lists whose last place the new-item slot gave to a new item",
            registry=r,
        )
        self.redis_errors = Counter(
            "recstream_redis_errors_total",
            "Redis pipelines (or pings) that failed; their writes are kept for a retry",
            registry=r,
        )
        self.kafka_send_errors = Counter(
            "recstream_kafka_send_errors_total",
            "Output messages (lists, dead letters, snapshots) the Kafka producer failed to deliver",
            registry=r,
        )
        self.redis_skipped = Counter(
            "recstream_redis_skipped_writes_total",
            "Redis writes (one per user list or item) deferred while Redis is down: kept for a "
            "retry, the latest per user or item",
            registry=r,
        )
        # The two below read the sink when scraped (watch_redis), so they are never stale.
        self.redis_up = Gauge(
            "recstream_redis_up",
            "1 when Redis answered the worker's last write or ping, 0 when it failed",
            registry=r,
        )
        self.redis_pending = Gauge(
            "recstream_redis_pending_writes",
            "Redis writes not done yet, by kind: queued, or kept for a retry during an outage "
            "(profiles also wait up to RECSTREAM_PROFILE_INTERVAL_S by design)",
            ["kind"],
            registry=r,
        )
        self.redis_dropped = Counter(
            "recstream_redis_dropped_writes_total",
            "Pending Redis writes given up, by kind: the oldest, beyond "
            "RECSTREAM_REDIS_MAX_PENDING during an outage",
            ["kind"],
            registry=r,
        )
        for kind in REDIS_KINDS:  # a 0 series from the start, for rate() and increase()
            self.redis_dropped.labels(kind=kind)
        self.consumer_lag = Gauge(
            "recstream_consumer_lag",
            "Messages behind the partition's high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoints = Counter("recstream_checkpoints_total", "Checkpoints written", registry=r)
        self.checkpoint_seconds = Histogram(
            "recstream_checkpoint_seconds",
            "Time to write one checkpoint (in a forked process where possible)",
            buckets=ENCODE_SECONDS_BUCKETS,
            registry=r,
        )
        self.checkpoint_pause_seconds = Histogram(
            "recstream_checkpoint_pause_seconds",
            "Event-loop pause of one checkpoint (the fork, or the whole write without fork)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.checkpoint_errors = Counter(
            "recstream_checkpoint_errors_total",
            "Checkpoint writers that failed (retried at the next interval)",
            registry=r,
        )
        self.last_checkpoint = Gauge(
            "recstream_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint",
            registry=r,
        )
        self.intake_events = Counter(
            "recstream_intake_events_total",
            "Events accepted by POST /events and produced to the events topic",
            registry=r,
        )
        self.users_forgotten = Counter(
            "recstream_users_forgotten_total",
            "Forget requests applied (recstream forget): users removed from the state and Redis",
            registry=r,
        )
        self.forgotten_events_skipped = Counter(
            "recstream_forgotten_events_skipped_total",
            "Events of a forgotten user from before the request (a replay), not learned",
            registry=r,
        )
        self.kafka_up = Gauge(
            "recstream_kafka_up",
            "1 when the broker answered the worker's last offsets request (every metrics "
            "interval), 0 when it did not",
            registry=r,
        )
        self.offset_resets = Counter(
            "recstream_offset_resets_total",
            "Input partitions whose state position made no sense for the log and was reset to "
            "the log's start, by reason (topic_recreated, beyond_log_end, before_log_start)",
            ["reason"],
            registry=r,
        )
        self.offsets_lost = Counter(
            "recstream_offset_lost_messages_total",
            "Messages deleted by retention before the worker read them (before_log_start)",
            registry=r,
        )
        self.offset_gaps = Counter(
            "recstream_offset_gap_offsets_total",
            "Offsets a partition's position jumped over without reading them (a transactional "
            "producer's markers; anything else means skipped messages: see the WARNING)",
            registry=r,
        )
        self.halted = Gauge(
            "recstream_halted",
            "1 while the worker has stopped applying messages after too many consecutive "
            "processing errors (a bug or an incompatible model; see /healthz)",
            registry=r,
        )
        # --- several workers (RECSTREAM_STATE_STORE=kafka, streams/partition_state.py) ---
        self.state_flush_seconds = Histogram(
            "recstream_state_flush_seconds",
            "One partition's flush: its changed users, item delta and marker in one transaction",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.state_records = Counter(
            "recstream_state_records_total", "Records committed to the user-state topic", registry=r
        )
        self.state_flush_errors = Counter(
            "recstream_state_flush_errors_total",
            "Flushes not committed (fenced: another worker owns the partition now; error: "
            "retried) and item deltas that could not be read (bad_delta)",
            ["reason"],
            registry=r,
        )
        self.owned_partitions = Gauge(
            "recstream_owned_partitions",
            "Events partitions whose users this worker holds",
            registry=r,
        )
        self.item_deltas_applied = Counter(
            "recstream_item_deltas_applied_total",
            "Item deltas of other workers merged into this worker's item side",
            registry=r,
        )
        # --- item vectors shared by several workers (streams/catalogue_sync.py) ---
        self.item_vectors_from_topic = Counter(
            "recstream_item_vectors_from_topic_total",
            "Item vectors installed from the item-vectors topic: encoded by another worker, or "
            "by this one before a restart (recstream_items_encoded_total: encoded here)",
            registry=r,
        )
        self.item_vector_records_skipped = Counter(
            "recstream_item_vector_records_skipped_total",
            "Records of the item-vectors topic not installed, by reason (invalid: unreadable, "
            "wrong shape, NaN; other_model: another encoder model's)",
            ["reason"],
            registry=r,
        )
        # No model-version label on purpose: the version changes with every event, and each new
        # label value would be a new Prometheus series. It is in the snapshot and /healthz.

    def watch_redis(self, pending: Callable[[str], int], up: Callable[[], bool]) -> None:
        """Serve the Redis gauges from the sink: ``pending(kind)`` for each of ``REDIS_KINDS``,
        ``up()`` for ``recstream_redis_up``."""
        for kind in REDIS_KINDS:
            self.redis_pending.labels(kind=kind).set_function(lambda kind=kind: pending(kind))
        self.redis_up.set_function(lambda: 1.0 if up() else 0.0)

    def redis_dropped_writes(self, kind: str, n: int) -> None:
        """The sink's ``on_drop`` callback."""
        self.redis_dropped.labels(kind=kind).inc(n)

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def exposition(self) -> bytes:
        """The text format for ``GET /metrics``."""
        return generate_latest(self.registry)
