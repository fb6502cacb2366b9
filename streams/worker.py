"""``recstream worker`` / ``python -m streams.worker``: run the streaming worker.

Startup (:func:`start_up`), before Faust takes over: take this worker's slot (its own folder
under models/, recstream/worker_slots.py) and, with the local store, the checkpoint folder's
lock; create the topics (configured partitions), read their Kafka topic ids, restore the newest
checkpoint that belongs to those topics (models/README.md), and install the
:class:`~streams.runtime.Runtime`. Then the Faust worker (streams/faust_worker.py) runs the
agents, timers and the web server until SIGTERM/SIGINT, which checkpoint once more on the way
out. ``faust -A streams.app worker`` runs the same start-up from that worker class's first start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
import warnings
from pathlib import Path

# OPENBLAS_NUM_THREADS=1 is set by streams/__init__.py, which every entry point imports first.
from recstream.cli import port
from recstream.config import Settings

log = logging.getLogger("recstream.worker")

LOGLEVELS = ("debug", "info", "warning", "error", "critical")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web-port", type=port, help="HTTP port (default RECSTREAM_WEB_PORT or 6066)"
    )
    parser.add_argument(
        "--loglevel", "-l", default="info", choices=LOGLEVELS, help="log level (default info)"
    )


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _new_recommender(settings: Settings):
    """An empty model as the settings ask (ranker, its features, retrieval)."""
    from recstream.recommender import Recommender

    return Recommender(
        settings.recommender_config(),
        seed=settings.seed,
        exclude=settings.exclude,
        allow_unknown_items=settings.allow_unknown_items,
    )


def restore_processor(settings: Settings, topic_ids: dict[str, str], checkpoints: Path):
    """The processor of the newest usable checkpoint in ``checkpoints``, or a fresh one (and
    why, for the log)."""
    from recstream.checkpoint import CheckpointStore
    from recstream.pipeline import StreamProcessor
    from recstream.recommender import Recommender

    store = CheckpointStore(checkpoints)
    kwargs = {
        "k": settings.k,
        "dedup_window": settings.dedup_window,
        "max_event_bytes": settings.max_event_bytes,
        "max_consecutive_errors": settings.max_consecutive_errors,
        "require_user_key": settings.state_store == "kafka",
    }
    if settings.state_store == "kafka":
        # Several workers: no checkpoint of our own. Users come with their partitions from
        # <prefix>.user-state, the item side from <prefix>.item-deltas and item-vectors
        # (streams/partition_state.py, streams/catalogue_sync.py).
        recommender = _new_recommender(settings)
        recommender.track_item_deltas()
        log.info("state store: kafka (users per partition in %s)", settings.topic("user-state"))
        return None, StreamProcessor(recommender, **kwargs)
    for ckpt in store.candidates():
        saved = ckpt.meta.get("topic_ids", {})
        if any(saved.get(name) != tid for name, tid in topic_ids.items()):
            # The topics were deleted and re-created (e.g. `make clean`): the saved offsets
            # point into a log that no longer exists: start from scratch.
            removed = store.discard()
            log.warning(
                "checkpoints are for other topics (topic ids saved %s, now %s): removed %d",
                saved,
                topic_ids,
                removed,
            )
            break
        try:
            proc = StreamProcessor.from_checkpoint(ckpt, Recommender.load, **kwargs)
        except Exception as exc:  # a damaged newest checkpoint falls back to the previous one
            log.error("checkpoint %s unreadable (%s), trying an older one", ckpt.path, exc)
            continue
        log.info(
            "restored %s: %d events, offsets %s",
            ckpt.path,
            proc.events_processed,
            ckpt.meta.get("offsets"),
        )
        # A setting, not state: today's value applies to a model saved under another one.
        proc.recommender.allow_unknown_items = settings.allow_unknown_items
        return store, proc
    recommender = _new_recommender(settings)
    log.info("no checkpoint in %s: starting from an empty model", store.root)
    return store, StreamProcessor(recommender, **kwargs)


def build_runtime(settings: Settings, checkpoints: Path | None = None):
    """Everything the agents need, built synchronously before the event loop starts.
    ``checkpoints``: the folder this worker owns (:func:`start_up`); default the app's."""
    from recstream.adapters.kafka import ensure_topics, topic_ids
    from recstream.adapters.metrics import Metrics
    from recstream.adapters.redis_sink import RedisSink
    from streams.app import app
    from streams.runtime import Runtime, encoder_threads
    from streams.topics import dlq_topic, metrics_topic, recommendations_topic

    ensure_topics(settings)
    ids = topic_ids(settings, [settings.topic("events"), settings.topic("items")])
    if checkpoints is None:
        from streams.runtime import checkpoint_dir

        checkpoints = checkpoint_dir(settings)
    store, processor = restore_processor(settings, ids, checkpoints)
    metrics = Metrics()
    redis = RedisSink(
        settings,
        on_error=metrics.redis_errors.inc,
        on_skip=metrics.redis_skipped.inc,
        on_drop=metrics.redis_dropped_writes,
    )
    metrics.watch_redis(pending=redis.pending_writes, up=lambda: redis.up)
    outputs = {t.get_topic_name() for t in (recommendations_topic, dlq_topic, metrics_topic)}
    outputs.add(settings.topic("item-vectors"))  # several workers (streams/catalogue_sync.py)

    def delivered(future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            metrics.kafka_send_errors.inc()
            log.error("Kafka send failed: %r", future.exception())

    async def publish(topic: str, key: bytes | None, value: bytes) -> None:
        # Straight to Faust's producer, which buffers it (checkpoints flush it): Topic.send
        # wraps every message in Faust's future-message and callback machinery, which cost
        # more than the send itself at one list per event.
        assert topic in outputs, topic
        future = await app.producer.send(topic, key, value, None, None, None)
        future.add_done_callback(delivered)

    async def send_event(topic: str, key: bytes | None, value: bytes) -> None:
        # POST /events: the client is told "accepted" only once Kafka has the event.
        await app.producer.send_and_wait(topic, key, value, None, None, None)

    def make_encoder():
        from recstream.encoder import ItemEncoder

        return ItemEncoder(
            settings.encoder_model or None,
            device=settings.encoder_device,
            batch_size=settings.encoder_batch_size,
            cache_dir=Path(settings.models_dir) / "cache" / "encoder",
            num_threads=encoder_threads(),
        )

    # Built now, before the event loop runs: importing torch + transformers holds the GIL for
    # seconds, which in the encoder thread would stall event processing mid-stream.
    encoder = None
    t0 = time.perf_counter()
    try:
        encoder = make_encoder()
        log.info("encoder ready in %.1f s: %r", time.perf_counter() - t0, encoder)
    except Exception as exc:  # the stream runs without content vectors; retried per batch
        log.error(
            "encoder unavailable (%s: %s); retrying in the encoder thread", type(exc).__name__, exc
        )

    return Runtime(
        settings,
        processor,
        publish=publish,
        redis=redis,
        metrics=metrics,
        store=store,
        topic_ids=ids,
        encoder=encoder,
        encoder_factory=make_encoder,
        topic_id_reader=lambda names: topic_ids(settings, names),
        send_event=send_event,
    )


# This process's slot and checkpoint locks: held (open) until the process exits.
_files = None


def start_up(settings: Settings):
    """The start-up of every worker, whichever command started it (module docstring): claim
    this worker's files, build the Runtime and install it; returns it. Raises ConnectionError
    (no broker) or ValueError (a setting; a slot or checkpoint folder in use), holding nothing.
    """
    global _files
    from faust.exceptions import AlreadyConfiguredWarning

    import streams.agents  # registers the agents, timers and hooks
    import streams.web  # noqa: F401  (registers the views)
    from recstream.worker_slots import claim_worker_files
    from streams import runtime
    from streams.app import app
    from streams.runtime import checkpoint_dir

    files = claim_worker_files(settings, checkpoint_dir(settings))
    try:
        rt = build_runtime(settings, files.checkpoints)
    except BaseException:
        files.release()
        raise
    _files = files
    if settings.state_store == "kafka" and settings.user_ttl_s > 0:
        rt.open_idle_store(files.slot.folder / "idle-users.sqlite")  # the slot's own file
    runtime.install(rt)
    # The slot's own Faust data directory (Faust creates only the leaf). Faust warns that the
    # value was read already: by `faust worker`'s banner, before the app (the only user) starts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlreadyConfiguredWarning)
        app.conf.datadir = str(files.datadir)
    files.datadir.mkdir(parents=True, exist_ok=True)
    log.info(
        "worker %s: slot %d, topics %s.*, web http://%s:%d%s, checkpoints %s",
        rt.worker_id,
        files.slot.number,
        settings.topic_prefix,
        settings.web_host,
        app.conf.web_port,
        " (bearer token required)" if settings.http_token() else "",
        rt.store.root if rt.store else None,
    )
    return rt


def run(args: argparse.Namespace) -> int:
    if args.web_port is not None:
        # Settings is the one source of configuration: the option is passed as its variable.
        os.environ["RECSTREAM_WEB_PORT"] = str(args.web_port)
    settings = Settings.from_env()
    try:
        settings.http_token()  # a missing or empty token file is a start-up error
    except ValueError as exc:
        print(f"recstream worker: error: {exc}", file=sys.stderr)
        return 2
    if not _port_free(settings.web_host, settings.web_port):
        print(
            f"recstream worker: error: web port {settings.web_host}:{settings.web_port} is in use "
            "(another worker? use --web-port)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=args.loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    from streams.faust_worker import RecstreamWorker, quiet_kafka_python

    quiet_kafka_python(logging.getLevelName(args.loglevel.upper()))
    try:
        start_up(settings)
    except (ConnectionError, ValueError) as exc:  # no broker; a bad credential or TLS setting;
        print(f"recstream worker: error: {exc}", file=sys.stderr)  # a slot in use
        return 1
    from streams.app import app

    # Faust's worker, our subclass (app.conf.Worker): it finds the Runtime installed.
    worker = RecstreamWorker(app, loglevel=args.loglevel, redirect_stdouts=False)
    # At --loglevel warning or above Faust's startup spinner sets the *root* logger to DEBUG
    # (it spins once per log record), so every aiokafka debug call on the hot path built a
    # LogRecord: 3 % of the worker's CPU. The spinner is cosmetic; the log level is the user's.
    worker.spinner = None
    worker.execute_from_commandline()  # returns only by SystemExit
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.worker", description=__doc__)
    configure_parser(parser)
    try:
        return run(parser.parse_args(argv))
    except ValueError as exc:  # a setting that cannot work: one line, as `recstream worker` does
        print(f"python -m streams.worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
