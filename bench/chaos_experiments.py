"""The reliability experiments of ``bench/chaos.py`` (the two outages: ``chaos_outages.py``).
Each starts its own worker (own topics, group, Redis keys, models folder), streams valid events
through the fault, and returns its numbers; :class:`bench.chaos_lab.Lab` undoes everything it
started, also on failure."""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import time
from collections import Counter
from typing import Any

from bench.chaos_lab import (
    POST_S,
    PRE_S,
    USERS,
    Lab,
    Shared,
    accounting,
    health,
    metric,
    new_progress,
    new_stream,
    repeated_ids,
    settle,
    since,
    start_worker,
    stream_report,
)
from bench.chaos_outages import broker_outage, redis_outage
from bench.chaos_stack import Worker, say, time_until

# --- 1. hostile messages ------------------------------------------------------------------------


def hostile(shared: Shared, n_events: int = 6_000, n_items: int = 400) -> dict[str, Any]:
    """Every other message hostile (the shapes of tests/integration/test_hostile_stream.py), on
    both input topics, produced as fast as the producer goes."""
    from test_hostile_stream import HOSTILE_EVENT_SHAPES, HOSTILE_ITEM_SHAPES, hostile_stream

    with Lab("hostile") as lab:
        w = lab.worker(shared.bootstrap, shared.admin_redis, shared.worker_redis)
        start_worker(w)
        rng = random.Random(9)
        producer = w.producer()
        futures: list[tuple[Any, str | None]] = []
        stream = hostile_stream(rng, n_events, n_items, users=USERS, items=50, id_prefix="h-")
        for topic, key, value, shape in stream:
            futures.append((producer.send(w.topic(topic), key=key, value=value), shape))
        producer.flush(timeout=120)
        producer.close()
        t_sent = time.monotonic()
        hostile_at: dict[tuple[str, int, int], str] = {}
        n_valid = failed = 0
        for future, shape in futures:
            try:
                meta = future.get(timeout=30)
            except Exception:
                failed += 1
                continue
            if shape is not None:
                hostile_at[(meta.topic, meta.partition, meta.offset)] = shape
            elif meta.topic == w.topic("events"):
                n_valid += 1
        n_hostile = len(hostile_at)
        say(
            f"hostile: {n_valid} valid events and {n_hostile} hostile messages sent ({failed} "
            "refused by the producer); waiting for the worker"
        )
        done = time_until(
            lambda: (h := health(w))["events_processed"] >= n_valid and h["dlq_total"] >= n_hostile,
            300,
        )
        time.sleep(2)
        final = health(w)
        dlq = w.read_json("events.dlq")
        where = [(r["topic"], r["partition"], r["offset"]) for r in dlq]
        twice = len(where) - len(set(where))
        missing = set(hostile_at) - set(where)
        valid_dead = set(where) - set(hostile_at)
        codes = Counter(
            f"{hostile_at.get(p, 'VALID')}->{r['code']}" for p, r in zip(where, dlq, strict=True)
        )
        lab.check("every hostile message dead-lettered", not missing, f"{len(missing)} missing")
        lab.check("none dead-lettered twice", twice == 0, f"{twice} twice")
        lab.check("no valid message dead-lettered", not valid_dead, f"{len(valid_dead)}")
        lab.check(
            "no hostile message reached processing_error",
            not any(c.endswith("->processing_error") for c in codes),
        )
        out = accounting(lab, w, n_valid, final, dlq)
        out.update(
            sent_hostile=n_hostile,
            recovery_s=since(done, t_sent),
            recovery_means="from the last message acknowledged to every valid event learned "
            "and every hostile one dead-lettered (draining the flood)",
            hostile_missing=len(missing),
            dead_lettered_twice=twice,
            valid_dead_lettered=len(valid_dead),
            refused_by_producer=failed,
            dlq_codes=dict(sorted(codes.items())),
        )
        out["note"] = (
            f"{n_hostile:,} hostile ({len(HOSTILE_EVENT_SHAPES)} event + "
            f"{len(HOSTILE_ITEM_SHAPES)} item shapes): {n_hostile - len(missing):,} "
            f"dead-lettered, {twice} twice, "
            f"{len(valid_dead)} valid ones dead-lettered"
        )
        return out | {"checks": lab.checks}


# --- 4. SIGKILL ---------------------------------------------------------------------------------


def sigkill(shared: Shared, down_s: float = 3.0) -> dict[str, Any]:
    with Lab("sigkill") as lab:
        w = lab.worker(shared.bootstrap, shared.admin_redis, shared.worker_redis)
        start_worker(w)
        stream = new_stream(lab, w, "s", seed=4)
        progress = new_progress(lab, w)
        time.sleep(PRE_S)

        def checkpointed() -> dict | None:
            ckpt = health(w).get("last_checkpoint")
            return ckpt if ckpt and ckpt["events_processed"] > 0 else None

        time_until(checkpointed, 60)
        ckpt = checkpointed() or {}
        # Killed 5 s after a checkpoint: Faust has committed offsets past it meanwhile.
        time.sleep(max(0.0, ckpt.get("at", 0) + 5.0 - time.time()))
        before = health(w)
        t_kill = time.monotonic()
        rc = w.kill(signal.SIGKILL)
        saved = _newest_checkpoint(w)
        say(
            f"sigkill: killed (rc {rc}) at {before.get('events_processed')} events; newest "
            f"checkpoint has {saved.get('events_processed')}"
        )
        time.sleep(down_s)
        t_restart = time.monotonic()
        w.start()
        n_pre = stream.before(t_restart)
        restarted = w.wait_ready(timeout=180)
        t_ready = time.monotonic()
        t_caught = time_until(lambda: health(w).get("events_processed", -1) >= n_pre, 180)
        time.sleep(max(0.0, (t_caught or t_ready) + POST_S - time.monotonic()))
        stream.stop()
        progress.stop()
        final, _ = settle(w, stream.sent, 120)
        out = accounting(lab, w, stream.sent, final)
        out.update(
            recovery_s=since(t_caught, t_restart),
            recovery_means="from the restart (new process) to the worker having learned every "
            "event produced before it; includes start-up and the group rebalance",
            killed_at_events=before.get("events_processed"),
            checkpoint_events=saved.get("events_processed"),
            events_when_ready_again=restarted.get("events_processed"),
            ready_after_restart_s=round(t_ready - t_restart, 1),
            caught_up_after_kill_s=since(t_caught, t_kill),
            progress_since_kill=progress.series(t_kill),
            log_duplicates=repeated_ids(w),
            stream=stream_report(lab, stream),
        )
        replay = (before.get("events_processed") or 0) - (saved.get("events_processed") or 0)
        out["note"] = (
            f"killed {replay} events after the newest checkpoint, restarted after "
            f"{down_s:.0f} s; ready {out['ready_after_restart_s']:.0f} s later"
        )
        return out | {"checks": lab.checks}


def _newest_checkpoint(w: Worker) -> dict[str, Any]:
    root = w.models_dir / "checkpoints" / w.prefix
    with contextlib.suppress(IndexError, OSError, ValueError):
        return json.loads((sorted(root.glob("ckpt-*"))[-1] / "offsets.json").read_text())
    return {}


# --- 5. topic re-created ------------------------------------------------------------------------


def topic_recreated(shared: Shared, new_s: float = 15.0, burst: int = 3_000) -> dict[str, Any]:
    """The old stream (~500 events a partition) stops; the topic is deleted and re-created; a
    burst of ``burst`` new events (more per partition than the old offsets: a worker that kept
    its old positions would skip the first ones) then ``new_s`` seconds of the usual stream."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    with Lab("topic-recreated") as lab:
        w = lab.worker(shared.bootstrap, shared.admin_redis, shared.worker_redis)
        start_worker(w)
        old = new_stream(lab, w, "old", seed=5)
        time.sleep(PRE_S)
        old.stop()
        settled, _ = settle(w, old.sent, 60)
        n_old = settled.get("events_processed", 0)
        admin = KafkaAdminClient(bootstrap_servers=shared.bootstrap, client_id="recstream-chaos")
        lab.on_exit("kafka admin", admin.close)
        topic = w.topic("events")
        t_delete = time.monotonic()
        admin.delete_topics([topic])
        time_until(lambda: topic not in admin.list_topics(), 60)
        auto_created = False
        try:
            admin.create_topics([NewTopic(topic, 2, 1)])
        except TopicAlreadyExistsError:  # the worker's consumer had the broker auto-create it
            auto_created = True
        t_created = time.monotonic()
        partitions = len(admin.describe_topics([topic])[0]["partitions"])
        say(
            f"topic-recreated: {topic} deleted and re-created ({partitions} partitions, "
            f"auto-created first: {auto_created}) in {t_created - t_delete:.1f} s"
        )
        flood = new_stream(lab, w, "burst", seed=7, rate=3_000, limit=burst)
        new = new_stream(lab, w, "new", seed=6)
        progress = new_progress(lab, w)

        def first_learned() -> bool:
            return health(w).get("events_processed", -1) > n_old

        t_first = time_until(first_learned, new_s)
        time.sleep(max(0.0, t_created + new_s - time.monotonic()))
        new.stop()
        flood.stop()
        if t_first is None:
            t_first = time_until(first_learned, 120 - new_s)
        n_new = new.sent + flood.sent
        # The old topic's end offsets, and the new events at offsets below them: the ones a
        # worker resuming at its old positions on the new topic would skip.
        old_end: dict[int, int] = {}
        for partition, offset in old.delivered.values():
            old_end[partition] = max(old_end.get(partition, 0), offset + 1)
        below = sum(
            1
            for s in (flood, new)
            for partition, offset in s.delivered.values()
            if offset < old_end.get(partition, 0)
        )
        final, t_all = settle(w, n_old + n_new, 120)
        progress.stop()
        out = accounting(lab, w, old.sent + n_new, final)
        resets = metric(w, "recstream_offset_resets_total")
        learned_new = (final.get("events_processed") or 0) - n_old
        lab.check(
            "every new event learned",
            learned_new >= n_new,
            f"{learned_new} of {n_new}; {below} new events were at offsets below the old "
            f"topic's end offsets {old_end}",
        )
        out.update(
            recovery_s=since(t_first, t_created),
            recovery_means="from the topic re-created (and the new stream started) to the first "
            "new event learned",
            old_events=old.sent,
            new_events=n_new,
            new_burst=flood.sent,
            new_learned=learned_new,
            new_lost=max(0, n_new - learned_new),
            old_end_offsets=old_end,
            new_events_below_old_offsets=below,
            recreated_partitions=partitions,
            auto_created_first=auto_created,
            offset_resets=resets,
            all_new_learned_after_stream_s=since(t_all, t_created + new_s),
            progress_since_recreated=progress.series(t_created),
            stream_burst=stream_report(lab, flood),
            stream_new=stream_report(lab, new),
        )
        how = ", ".join(f"{re.sub(r'[^a-z_]', '', k[7:])} {v:.0f}" for k, v in resets.items())
        out["note"] = (
            f"{old.sent:,} events before, {n_new:,} after the re-creation ({flood.sent:,} at "
            f"once); {learned_new:,} new learned; offset resets: {how or 'none'}"
        )
        return out | {"checks": lab.checks}


EXPERIMENTS = {
    "hostile": ("Hostile messages", hostile),
    "redis-outage": ("Redis outage", redis_outage),
    "broker-outage": ("Broker outage", broker_outage),
    "sigkill": ("SIGKILL + restart", sigkill),
    "topic-recreated": ("Events topic re-created", topic_recreated),
}
