"""The Faust app, built from the one :class:`~recstream.config.Settings` object.

Importing this module reads ``RECSTREAM_*`` once; ``recstream worker`` sets the variables its
options override (``--web-port``) before importing it.

``faust -A streams.app worker -l info`` works too: Faust's command imports the agents and views
(``autodiscover``) and runs the worker class named by ``Worker``, which does the same start-up as
``recstream worker`` (streams/faust_worker.py). Its ``--web-port`` overrides the port Faust binds;
everything else comes from ``RECSTREAM_*`` as always.
"""

from __future__ import annotations

from pathlib import Path

import faust

from recstream.adapters.kafka import faust_broker_credentials
from recstream.config import Settings
from streams.http_guard import guard, quiet_client_errors

settings = Settings.from_env()
quiet_client_errors()

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    # TLS and SASL, the same as the kafka-python clients' (RECSTREAM_KAFKA_*; None = PLAINTEXT).
    broker_credentials=faust_broker_credentials(settings),
    # No Faust tables: the model state is checkpointed by the worker itself (models/README.md),
    # so the in-memory store is all Faust needs.
    store="memory://",
    # Faust's default data dir is "<app id>-data" in the current directory; keep it with the
    # other regenerated files (it stays empty with the memory store).
    datadir=str(Path(settings.models_dir) / "cache" / "faust" / settings.app_id),
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    # We never use leader election (no leader timers): skip the extra "__assignor-__leader" topic.
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    web_port=settings.web_port,
    # Loopback unless configured (Faust binds every interface by default), and none of Faust's
    # debugging views (/router/, /table/, /graph/, the stats index): they expose internals
    # and nobody here needs them. streams/web.py adds the token check and error handling.
    web_bind=settings.web_host,
    web_host=settings.web_host,
    web_router_enabled=False,
    web_tables_enabled=False,
    web_graph_enabled=False,
    web_stats_enabled=False,
    web_metrics_enabled=False,
    web_application_options={"middlewares": [guard(settings.http_token())]},
    web_in_thread=False,
    broker_session_timeout=settings.session_timeout_s,
    # aiokafka's default is 5 minutes: that long a re-created topic would go unread.
    consumer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
    broker_rebalance_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
    # What `faust -A streams.app ...` imports (the agents and views register themselves), and
    # the worker class it runs; `recstream worker` imports them itself and runs the same class.
    # The origin (always scanned with autodiscovery) is this module, not the whole package.
    autodiscover=["streams.agents", "streams.web"],
    origin="streams.app",
    Worker="streams.faust_worker:RecstreamWorker",
    # Faust's statistics without the per-message counters nobody here reads (lean_monitor.py).
    Monitor="streams.lean_monitor:LeanMonitor",
)
