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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recstream.recommender_config import RecommenderConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What Kafka's clients call them (security.protocol, sasl.mechanism).
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# How a bool setting is spelled (RECSTREAM_ALLOW_UNKNOWN_ITEMS=false): bool("false") is True.
_BOOLS = dict.fromkeys(("1", "true", "yes", "on"), True)
_BOOLS |= dict.fromkeys(("0", "false", "no", "off"), False)
STATE_STORES = ("local", "kafka")
RANKERS = ("fixed", "learned")  # recstream.recommender_config.RANKERS, without importing it
RETRIEVALS = ("exact", "two_stage", "auto")  # recstream.retrieval.RETRIEVALS, likewise


def read_secret(value: str, path: str, variable: str, *, strip: bool = False) -> str:
    """``value``, or the content of the file at ``path`` (``RECSTREAM_<variable>``) without
    its trailing newline (``strip``: without surrounding whitespace), read at each call so a
    client built after a rotation gets the new secret. A missing or empty file is an error."""
    if not path:
        return value
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"RECSTREAM_{variable}: cannot read {path}: {exc.strerror}") from None
    secret = text.strip() if strip else text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"RECSTREAM_{variable}: {path} is empty")
    return secret


@dataclass(frozen=True)
class Settings:
    # --- Kafka -----------------------------------------------------------------------------
    broker: str = "kafka://127.0.0.1:9092"  # RECSTREAM_BROKER (comma-separate several brokers)
    topic_prefix: str = "recstream"  # RECSTREAM_TOPIC_PREFIX: every topic is "<prefix>.<name>"
    partitions: int = 4  # RECSTREAM_PARTITIONS: partitions of the topics the worker creates
    replication_factor: int = 1  # RECSTREAM_REPLICATION_FACTOR
    app_id: str = "recstream"  # RECSTREAM_APP_ID: Faust app id = Kafka consumer group
    # --- Kafka security --------------------------------------------------------------------
    # The same settings reach every client, Faust's and kafka-python's alike
    # (recstream/adapters/kafka.py). `make up SECURE=1` prints the values for the local broker.
    # RECSTREAM_KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    kafka_security_protocol: str = "PLAINTEXT"
    # RECSTREAM_KAFKA_SASL_MECHANISM (SASL_* only): SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""  # RECSTREAM_KAFKA_USERNAME (SASL_* only)
    # RECSTREAM_KAFKA_PASSWORD, or RECSTREAM_KAFKA_PASSWORD_FILE (a file holding only the
    # password, which keeps it out of the environment); exactly one with SASL. Never in repr.
    kafka_password: str = field(default="", repr=False)
    kafka_password_file: str = ""
    # RECSTREAM_KAFKA_SSL_CAFILE (SSL, SASL_SSL): PEM of the CA that signed the broker's
    # certificate; "" = the system's CAs
    kafka_ssl_cafile: str = ""
    # RECSTREAM_KAFKA_SSL_CERTFILE, RECSTREAM_KAFKA_SSL_KEYFILE: a client certificate (PEM), for
    # brokers that require one (mutual TLS); the key may be in the certificate file
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # RECSTREAM_KAFKA_SSL_CHECK_HOSTNAME: the broker's certificate must name the host dialled
    kafka_ssl_check_hostname: bool = True
    # --- Redis -----------------------------------------------------------------------------
    # RECSTREAM_REDIS_URL: no credentials by default (see "Redis security" below); a user or
    # password written in the URL is used as is
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "recstream"  # RECSTREAM_REDIS_PREFIX: keys are "<prefix>:recs:<user>"
    recs_ttl_s: int = 7 * 24 * 3600  # RECSTREAM_RECS_TTL_S: TTL of recommendation keys
    # RECSTREAM_PROFILE_INTERVAL_S: a user's profile in Redis is rewritten at most this often
    # (the latest one; lists are written at once)
    profile_interval_s: float = 1.0
    # RECSTREAM_REDIS_MAX_PENDING: users whose list (or profile) waits for Redis, at most. Up,
    # a full queue slows the stream; during an outage writes are kept for a retry and beyond
    # this many the oldest are dropped (counted). Same cap for item vectors kept for a retry.
    redis_max_pending: int = 50_000
    # --- Redis security --------------------------------------------------------------------
    # The worker should log in as its ACL user (deploy/redis/redis.sh creates it), never as the
    # admin. Credentials in RECSTREAM_REDIS_URL and here must not both be given (an error).
    redis_username: str = ""  # RECSTREAM_REDIS_USERNAME: the ACL user; "" = the URL's, or none
    # RECSTREAM_REDIS_PASSWORD, or RECSTREAM_REDIS_PASSWORD_FILE (a file holding only the
    # password, which keeps it out of the environment). No default: `make run` passes the file
    # deploy/redis/redis.sh generated. Never in repr.
    redis_password: str = field(default="", repr=False)
    redis_password_file: str = ""
    # TLS: on when the URL is rediss:// or a CA is given. RECSTREAM_REDIS_TLS_CA: CA bundle that
    # signed the server's certificate; RECSTREAM_REDIS_TLS_CERT / _KEY: a client certificate
    # (servers with tls-auth-clients yes); RECSTREAM_REDIS_TLS_VERIFY: "required" (default),
    # "optional" or "none" (no check at all: tests only)
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    redis_tls_verify: str = "required"
    # --- Recommender -----------------------------------------------------------------------
    k: int = 10  # RECSTREAM_K: recommendations per user
    exclude: str = "purchased"  # RECSTREAM_EXCLUDE: "purchased" or "seen"
    seed: int = 42  # RECSTREAM_SEED
    # RECSTREAM_RANKER: "fixed" = the hybrid's hand-set weights; "learned" = a ranker learned
    # online from the purchases (recstream/ranker.py, docs/evaluation/ranker.md); with several
    # workers its steps travel with the item deltas. A model restored from a checkpoint keeps
    # the ranker it was saved with. Learned is the default since issue 11 (held out it beats the
    # fixed weights: docs/evaluation/ranker.md)
    ranker: str = "learned"
    # RECSTREAM_RANKER_FEATURES: the learned ranker's features, comma-separated; "" = the
    # default set (category_taste among them); "+name,..." = the default plus these (e.g.
    # "+content_taste", a long-term content taste for shops whose users keep stable tastes:
    # docs/evaluation/synth_gap.md). Names: recstream/features.py. A restored checkpoint keeps
    # its own
    ranker_features: str = ""
    # RECSTREAM_RETRIEVAL: "exact" = every list scores the whole catalogue; "two_stage" =
    # gather bounded candidates (co-visited neighbours, ANN over content and MF vectors,
    # popular and fresh pools), score only those; "auto" = two-stage from 50,000 items on
    # (recstream/retrieval.py, docs/retrieval.md): the default, so the exact path serves a
    # catalogue below the cross-over and nothing scores a large one whole. A restored
    # checkpoint keeps its own
    retrieval: str = "auto"
    # RECSTREAM_ITEM_VECTOR_DTYPE: how the model stores the item vectors lists are scored on:
    # "f32" | "i8" (a quarter of the memory, e.g. 3.9 GB instead of 15.4 for 10M items of 384
    # dims; cosines move by ~1e-3: docs/retrieval.md). A restored checkpoint keeps its own
    item_vector_dtype: str = "f32"
    # --- Encoder ---------------------------------------------------------------------------
    encoder_model: str = ""  # RECSTREAM_ENCODER_MODEL: a local HF BERT folder; "" = bundled MiniLM
    encoder_device: str = "auto"  # RECSTREAM_ENCODER_DEVICE: "auto", "cpu", "cuda", "cuda:1"
    encoder_batch_size: int = 64  # RECSTREAM_ENCODER_BATCH_SIZE
    # RECSTREAM_ENCODER_INTERVAL_S: encoder batches start at least this far apart (a new item
    # after a quiet interval is encoded at once) ...
    encoder_interval_s: float = 2.0
    encoder_max_queue: int = 256  # RECSTREAM_ENCODER_MAX_QUEUE: ...unless this many wait
    # RECSTREAM_ENCODER_FINETUNE_INTERVAL_S: seconds between rounds that fine-tune the encoder
    # on the stream's co-interaction pairs in a background process, re-encode the catalogue and
    # swap it in under a new model_version (streams/finetuning.py, docs/evaluation/finetune.md).
    # 0 = off (the default: on ml-latest-small it did not lift cold_hr@10 beyond noise)
    encoder_finetune_interval_s: float = 0.0
    encoder_finetune_steps: int = 60  # RECSTREAM_ENCODER_FINETUNE_STEPS: most steps per round
    encoder_finetune_seconds: float = 180.0  # RECSTREAM_ENCODER_FINETUNE_SECONDS: round budget
    # RECSTREAM_ENCODER_FINETUNE_MIN_PAIRS: a round waits for this many co-interaction pairs
    encoder_finetune_min_pairs: int = 500
    # --- Worker ----------------------------------------------------------------------------
    web_port: int = 6066  # RECSTREAM_WEB_PORT: /recommendations, /healthz, /metrics
    # RECSTREAM_WEB_HOST: the address the HTTP server binds; 127.0.0.1 unless you mean to serve
    # others (0.0.0.0 = every interface: set a token too)
    web_host: str = "127.0.0.1"
    # RECSTREAM_WEB_TOKEN, or RECSTREAM_WEB_TOKEN_FILE (a file holding only the token): when
    # set, every HTTP request needs "Authorization: Bearer <token>". Never in repr.
    web_token: str = field(default="", repr=False)
    web_token_file: str = ""
    metrics_interval_s: float = 10.0  # RECSTREAM_METRICS_INTERVAL_S: snapshot to the metrics topic
    checkpoint_interval_s: float = 30.0  # RECSTREAM_CHECKPOINT_INTERVAL_S
    # RECSTREAM_BATCH_MAX: most events learned in one batch; a batch is whatever has arrived
    # (no waiting to fill it), and each user in it gets one list. 1 = a list for every event;
    # larger catches up faster, but a batch's time adds to latency (BENCHMARKS.md, "Batch size")
    batch_max: int = 32
    # RECSTREAM_HANDOVER_SLICE_MS: a batch's lists go to Kafka and Redis as each is scored, and
    # the event loop gets a turn (the writers send) at least every this many ms of scoring
    # (recstream/handover.py); 0 = a turn after every list, a large value = all of a batch's
    # lists at its end (the behaviour before)
    handover_slice_ms: float = 2.0
    # RECSTREAM_SESSION_TIMEOUT_S: Kafka group session; a killed worker's partitions (and a
    # restarted worker's first rebalance) wait this long for the dead member to expire
    session_timeout_s: float = 30.0
    # RECSTREAM_METADATA_MAX_AGE_S: how often the consumer refreshes topic metadata, so a topic
    # deleted and re-created while the worker runs is noticed (and read from its start)
    metadata_max_age_s: float = 30.0
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
    # --- Several workers (README, "Scaling out") ---------------------------------------------
    # RECSTREAM_STATE_STORE: "local" = one worker owns the whole model and checkpoints it to
    # models/checkpoints (models/README.md); "kafka" = several workers in one consumer group:
    # each holds the users of its partitions, persisted per partition in <prefix>.user-state,
    # and the item side travels through <prefix>.item-deltas and <prefix>.item-vectors
    state_store: str = "local"
    # RECSTREAM_STATE_FLUSH_INTERVAL_S ("kafka"): how often a worker commits its partitions'
    # changed users and its item deltas; the bound on how stale one worker's item side is in
    # another's (plus the time to read them), and what a SIGKILL makes the new owner replay
    state_flush_interval_s: float = 2.0
    # RECSTREAM_USER_TTL_S ("kafka"): a user idle this long in stream time (the newest event
    # time seen) leaves memory for the worker's local store and comes back with their next
    # event (recstream/idle_users.py); 0 = everyone stays in memory
    user_ttl_s: float = 0.0
    # RECSTREAM_WORKER_SLOT: this worker's own folder under models/ (cache, Faust data), locked
    # while it runs; "" = the first free one (0, 1, ...), so two workers started from one clone
    # never share files
    worker_slot: str = ""
    # RECSTREAM_NEW_ITEM_SLOTS: places at the end of a list kept for the user's best new items
    # (published while the worker runs, still cold) when none is in it; 0 = lists exactly as
    # scored (recstream/new_item_slot.py). A restored checkpoint keeps its own
    new_item_slots: int = 1
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_kafka_security()
        self._check_state_store()

    def recommender_config(self) -> RecommenderConfig:
        """The model these settings ask for: ranker, its features and retrieval (one place for
        the worker and the benchmarks that compare with it).

        >>> Settings(ranker_features="+content_taste").recommender_config().ranker_features[-1]
        'content_taste'
        >>> Settings(ranker_features="covisit,nonsense").recommender_config()
        Traceback (most recent call last):
        ...
        ValueError: RECSTREAM_RANKER_FEATURES: unknown feature(s) nonsense
        """
        from recstream.recommender_config import RecommenderConfig

        spec = self.ranker_features.strip()
        extra = {}
        if spec:
            names = tuple(n.strip() for n in spec.lstrip("+").split(",") if n.strip())
            if spec.startswith("+"):
                names = tuple(dict.fromkeys((*RecommenderConfig().ranker_features, *names)))
            extra["ranker_features"] = names
        try:
            return RecommenderConfig(
                ranker=self.ranker,
                retrieval=self.retrieval,
                new_item_slots=self.new_item_slots,
                item_vector_dtype=self.item_vector_dtype,
                **extra,
            )
        except ValueError as e:
            if str(e).startswith("unknown feature"):
                raise ValueError(f"RECSTREAM_RANKER_FEATURES: {e}") from None
            raise

    def _check_state_store(self) -> None:
        if self.ranker not in RANKERS:
            raise ValueError(f"RECSTREAM_RANKER: expected one of {', '.join(RANKERS)}")
        if self.retrieval not in RETRIEVALS:
            raise ValueError(f"RECSTREAM_RETRIEVAL: expected one of {', '.join(RETRIEVALS)}")
        if self.item_vector_dtype not in ("f32", "i8"):
            raise ValueError("RECSTREAM_ITEM_VECTOR_DTYPE: expected f32 or i8")
        if self.state_store not in STATE_STORES:
            raise ValueError(
                f"RECSTREAM_STATE_STORE: expected one of {', '.join(STATE_STORES)}, "
                f"got {self.state_store!r}"
            )
        if self.state_flush_interval_s <= 0:
            raise ValueError("RECSTREAM_STATE_FLUSH_INTERVAL_S must be > 0")

    def _check_kafka_security(self) -> None:
        """Refuse at start-up what would fail at the first connection, or be silently ignored."""
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(
                f"RECSTREAM_KAFKA_SECURITY_PROTOCOL: expected one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {protocol!r}"
            )
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ValueError(
                f"RECSTREAM_KAFKA_SASL_MECHANISM: expected one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)}, got {mechanism!r}"
            )
        secrets = bool(self.kafka_password) + bool(self.kafka_password_file)
        if protocol.startswith("SASL_"):
            if not self.kafka_username:
                raise ValueError(f"RECSTREAM_KAFKA_USERNAME is required with {protocol}")
            if secrets != 1:
                raise ValueError(
                    f"{protocol} needs exactly one of RECSTREAM_KAFKA_PASSWORD and "
                    f"RECSTREAM_KAFKA_PASSWORD_FILE, got {'both' if secrets else 'neither'}"
                )
        elif self.kafka_username or secrets:
            raise ValueError(
                f"a Kafka username or password is set but RECSTREAM_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}, which sends none: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if any(tls_files) and protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(
                f"RECSTREAM_KAFKA_SSL_* files are set but RECSTREAM_KAFKA_SECURITY_PROTOCOL is "
                f"{protocol}, which does not use TLS: use SSL or SASL_SSL"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("RECSTREAM_KAFKA_SSL_KEYFILE needs RECSTREAM_KAFKA_SSL_CERTFILE")

    def kafka_sasl_password(self) -> str:
        """The SASL password: ``kafka_password``, or the file's content without its trailing
        newline, read at each call (a client built after a rotation gets the new one)."""
        return read_secret(self.kafka_password, self.kafka_password_file, "KAFKA_PASSWORD_FILE")

    def http_token(self) -> str:
        """The bearer token the HTTP server requires ("" = none): ``web_token`` or the file's
        content without surrounding whitespace."""
        return read_secret(self.web_token, self.web_token_file, "WEB_TOKEN_FILE", strip=True)

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
