"""The agents, timers and rebalance hook: decode the Kafka message, call the runtime, done.

Module-level, in the style of the Faust examples; every decision is made in
:class:`recstream.pipeline.StreamProcessor`, every side effect in :mod:`streams.runtime`.
"""

from __future__ import annotations

import logging
from typing import Any

from streams import runtime
from streams.app import app, settings
from streams.catalogue_sync import RECONCILE_S
from streams.topics import SOURCE_TOPICS, events_topic, forget_topic, items_topic

log = logging.getLogger("recstream.worker")

SOURCE_TOPIC_NAMES = {t.get_topic_name() for t in SOURCE_TOPICS}


@app.agent(events_topic)
async def process_events(stream: Any) -> None:
    """Queues each event message for the batch task below (waits when its inbox is full)."""
    async for event in stream.events():  # .events(): the message's partition/offset/timestamp
        await runtime.current().submit_event(event.message)


@app.task
async def event_batches() -> None:
    """Validate → dedup → learn → recommend → publish (Kafka + Redis), a batch at a time: the
    events that arrived while the previous batch was processed (Runtime.process_event_batches).
    """
    try:
        await runtime.current().process_event_batches()
    except Exception as exc:
        # Unexpected (a per-event error is dead-lettered, never raised): stop the worker loudly
        # rather than consume on without processing; a restart resumes from the checkpoint.
        await app.crash(exc)
        raise


@app.agent(items_topic)
async def process_items(stream: Any) -> None:
    """Catalogue upserts and deletions; new or changed text is queued for the encoder."""
    async for event in stream.events():
        try:
            await runtime.current().on_item(event.message)
        except Exception:
            # The processor dead-letters whatever it cannot apply, so this is a bug on the way
            # out (a sink): the item is applied, and an agent that raised would be restarted by
            # Faust past this message anyway. Logged, not fatal.
            log.exception("items agent: message at offset %s", event.message.offset)


@app.agent(forget_topic)
async def process_forget(stream: Any) -> None:
    """`recstream forget`: the user leaves the model, the online evaluation, Redis and every
    checkpoint written from now on."""
    async for event in stream.events():
        try:
            await runtime.current().on_forget(event.message)
        except Exception:  # as for items: the processor dead-letters what it cannot apply
            log.exception("forget agent: message at offset %s", event.message.offset)


@app.task
async def encoder() -> None:
    """Encode queued items every ``encoder_interval_s`` (or at ``encoder_max_queue`` items) in
    the encoder thread; events never wait for it."""
    await runtime.current().encoder_loop()


@app.task
async def redis_writer() -> None:
    """Writes the queued recommendations and profiles to Redis, one pipeline per batch."""
    await runtime.current().redis_writer()


@app.timer(interval=settings.metrics_interval_s)
async def publish_metrics() -> None:
    """JSON snapshot to ``<prefix>.metrics``; refreshes the gauges Prometheus scrapes."""
    rt = runtime.current()
    await rt.check_topic_ids(app.consumer, SOURCE_TOPIC_NAMES)
    await rt.publish_metrics(app.consumer)


@app.timer(interval=settings.checkpoint_interval_s)
async def checkpoint() -> None:
    await runtime.current().checkpoint(flush=app.producer.flush)


@app.timer(interval=settings.state_flush_interval_s)
async def flush_state() -> None:
    """Several workers: commit each owned partition's changed users and item delta."""
    rt = runtime.current()
    if rt.group_mode:
        await rt.flush_state()
        await rt.evict_idle_users()


@app.task
async def item_deltas() -> None:
    """Several workers: merge the item deltas the other workers commit, from the start."""
    rt = runtime.current()
    if rt.group_mode:
        await rt.follow_item_deltas()


@app.task
async def catalogue_sync() -> None:
    """Several workers: the whole catalogue and every item vector, from their topics."""
    await runtime.current().run_catalogue_sync()


@app.timer(interval=RECONCILE_S)
async def reconcile_encoding() -> None:
    """Several workers: an item of this worker's partitions still without a vector is queued."""
    runtime.current().reconcile_encoding(app.consumer.assignment())


@app.on_partitions_revoked.connect
async def release_partitions(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """Several workers: a last flush of the revoked partitions before another worker reads
    them (Faust has stopped handing their messages to the agents by now)."""
    rt = runtime.current()
    if rt.group_mode:
        events = settings.topic("events")
        await rt.release_partitions(tp.partition for tp in revoked if tp.topic == events)


@app.on_rebalance_complete.connect
async def resume_from_state(sender: Any, **kwargs: Any) -> None:
    """Before Faust seeks to the committed offsets, make them the restored state's own."""
    await runtime.current().resume_offsets(app.consumer, SOURCE_TOPIC_NAMES)


@app.on_before_shutdown.connect
async def final_checkpoint(sender: Any, **kwargs: Any) -> None:
    """A clean stop (SIGTERM, Ctrl-C) checkpoints, so a restart replays nothing; several
    workers flush their partitions instead (Faust sends no revocation when it stops, so the
    next owner would otherwise replay everything since the last interval)."""
    rt = runtime.current()
    if rt.group_mode:
        await rt.flush_state()
    await rt.checkpoint(flush=app.producer.flush, background=False)
