"""The Faust app, built from the one :class:`~recstream.config.Settings` object.

Importing this module reads ``RECSTREAM_*`` once; ``recstream worker`` sets the variables its
options override (``--web-port``) before importing it.
"""

from __future__ import annotations

from pathlib import Path

import faust

from recstream.config import Settings

settings = Settings.from_env()

app = faust.App(
    settings.app_id,
    broker=settings.broker,
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
    web_in_thread=False,
    broker_session_timeout=settings.session_timeout_s,
    broker_rebalance_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
    autodiscover=False,
    origin="streams",
)
