"""One Settings object: the only place that reads ``RECSTREAM_*`` environment variables.

Every setting has a default that works on a laptop with ``make up``; each can be overridden by the
environment variable named in its comment (``RECSTREAM_`` + the upper-case field name).

>>> s = Settings.from_env({"RECSTREAM_TOPIC_PREFIX": "shop", "RECSTREAM_K": "5"})
>>> s.topic("events"), s.k
('shop.events', 5)
>>> Settings.from_env({"RECSTREAM_K": "many"})
Traceback (most recent call last):
...
ValueError: RECSTREAM_K: expected int, got 'many'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# How a bool setting is spelled (RECSTREAM_ALLOW_UNKNOWN_ITEMS=false): bool("false") is True.
_BOOLS = dict.fromkeys(("1", "true", "yes", "on"), True)
_BOOLS |= dict.fromkeys(("0", "false", "no", "off"), False)


@dataclass(frozen=True)
class Settings:
    # --- Kafka -----------------------------------------------------------------------------
    broker: str = "kafka://127.0.0.1:9092"  # RECSTREAM_BROKER (comma-separate several brokers)
    topic_prefix: str = "recstream"  # RECSTREAM_TOPIC_PREFIX: every topic is "<prefix>.<name>"
    partitions: int = 4  # RECSTREAM_PARTITIONS: partitions of the topics the worker creates
    replication_factor: int = 1  # RECSTREAM_REPLICATION_FACTOR
    app_id: str = "recstream"  # RECSTREAM_APP_ID: Faust app id = Kafka consumer group
    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = "redis://:recstream@127.0.0.1:6379/0"  # RECSTREAM_REDIS_URL
    redis_prefix: str = "recstream"  # RECSTREAM_REDIS_PREFIX: keys are "<prefix>:recs:<user>"
    recs_ttl_s: int = 7 * 24 * 3600  # RECSTREAM_RECS_TTL_S: TTL of recommendation keys
    # RECSTREAM_PROFILE_INTERVAL_S: a user's profile in Redis is rewritten at most this often
    # (the latest one; lists are written at once)
    profile_interval_s: float = 1.0
    # --- Recommender -----------------------------------------------------------------------
    k: int = 10  # RECSTREAM_K: recommendations per user
    exclude: str = "purchased"  # RECSTREAM_EXCLUDE: "purchased" or "seen"
    seed: int = 42  # RECSTREAM_SEED
    # --- Encoder ---------------------------------------------------------------------------
    encoder_model: str = ""  # RECSTREAM_ENCODER_MODEL: a local HF BERT folder; "" = bundled MiniLM
    encoder_device: str = "auto"  # RECSTREAM_ENCODER_DEVICE: "auto", "cpu", "cuda", "cuda:1"
    encoder_batch_size: int = 64  # RECSTREAM_ENCODER_BATCH_SIZE
    # RECSTREAM_ENCODER_INTERVAL_S: encoder batches start at least this far apart (a new item
    # after a quiet interval is encoded at once) ...
    encoder_interval_s: float = 2.0
    encoder_max_queue: int = 256  # RECSTREAM_ENCODER_MAX_QUEUE: ...unless this many wait
    # --- Worker ----------------------------------------------------------------------------
    web_port: int = 6066  # RECSTREAM_WEB_PORT: /recommendations, /healthz, /metrics
    metrics_interval_s: float = 10.0  # RECSTREAM_METRICS_INTERVAL_S: snapshot to the metrics topic
    checkpoint_interval_s: float = 30.0  # RECSTREAM_CHECKPOINT_INTERVAL_S
    # RECSTREAM_BATCH_MAX: most events learned in one batch; a batch is whatever has arrived
    # (no waiting to fill it), and each user in it gets one list. 1 = a list for every event;
    # larger catches up faster, but a batch's time adds to latency (BENCHMARKS.md, "Batch size")
    batch_max: int = 32
    # RECSTREAM_SESSION_TIMEOUT_S: Kafka group session; a killed worker's partitions (and a
    # restarted worker's first rebalance) wait this long for the dead member to expire
    session_timeout_s: float = 30.0
    models_dir: str = str(PROJECT_ROOT / "models")  # RECSTREAM_MODELS_DIR: cache and checkpoints
    dedup_window: int = 1_000_000  # RECSTREAM_DEDUP_WINDOW: event ids remembered for dedup
    max_event_bytes: int = 64 * 1024  # RECSTREAM_MAX_EVENT_BYTES: larger events go to the DLQ
    # RECSTREAM_MAX_CONSECUTIVE_ERRORS: processing errors in a row (exceptions while applying
    # valid messages, each dead-lettered) after which the worker halts: /healthz says why, the
    # recstream_halted gauge fires an alert, and nothing more is applied until a restart
    max_consecutive_errors: int = 100
    # RECSTREAM_ALLOW_UNKNOWN_ITEMS: false = only the items topic makes an item recommendable
    # (an event naming an unknown item is learned, the item waits for its catalogue entry);
    # true = events add items too, for shops without a catalogue feed
    allow_unknown_items: bool = False
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def topic(self, name: str) -> str:
        """Full topic name, e.g. ``topic("events") == "recstream.events"``."""
        return f"{self.topic_prefix}.{name}"

    def redis_key(self, *parts: str) -> str:
        """Redis key, e.g. ``redis_key("recs", "u1") == "recstream:recs:u1"``."""
        return ":".join((self.redis_prefix, *parts))

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker addresses without the ``kafka://`` scheme, for kafka-python/aiokafka."""
        return [b.split("://", 1)[-1] for b in self.broker.split(",") if b.strip()]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            env_name = "RECSTREAM_" + f.name.upper()
            if env_name not in environ:
                continue
            raw = environ[env_name]
            kind = type(f.default)
            try:
                if kind is bool:
                    values[f.name] = _BOOLS[raw.strip().lower()]
                else:
                    values[f.name] = kind(raw) if kind is not str else raw
            except (ValueError, KeyError):
                raise ValueError(f"{env_name}: expected {kind.__name__}, got {raw!r}") from None
        return cls(**values)
