"""End-to-end latency (event produced → its recommendation visible in Redis) at half the
maximum sustainable rate, and how long a new catalogue item takes to reach someone's list.

Against a real worker on a fresh prefix, with the catalogue produced and encoded first:

1. **Burst rate.** A burst of ``burst_events`` is produced at once; the worker's rate over the
   second half of the burst (events reflected by its lists per second of ``generated_at``, see
   ``kafka_util.reflected_rate``; the first half meets a smaller model) is the starting
   estimate R.
2. **Maximum sustainable rate.** Events are paced (one by one) at R for ``probe_s``. A probe is
   sustained when no more than a quarter second of events is still waiting when sending stops.
   While probes are sustained the rate goes up by 25 %; from a first probe that is not, it goes
   down by 20 % until one is; up to ``max_probes`` probes. The highest sustained rate is S
   (every probe is reported). If this process cannot send as fast as asked, S is where it
   stopped and ``max_sustained_is_pacer_bound`` says the worker's maximum is higher.
3. **Latency at S/2.** Events are produced at S/2 (aiokafka, ``linger_ms=0``) for
   ``duration_s``; the send time of each is taken just before ``send``. A poller fetches the
   tail of the pending users' ``<prefix>:recs:{user}`` values (where ``trigger_event_id`` and
   ``generated_at`` are; one pipelined round trip) every ``poll_ms``, and stops the clock when
   the value's ``trigger_event_id`` is that event: latency = seen - sent, so it includes up to
   one poll period; ``generated_at - sent`` is reported too, to bound what the poller adds.
   When a user's next event overtakes the poller (its list overwrites the previous one before
   a poll saw it), the earlier event is counted with the later one's visible time: an upper
   bound, so the tail is never flattered. The benchmark process's own CPU share is reported
   (it shares the two cores with the worker, Kafka and Redis).
4. **New item.** Still pacing, a new item is published to ``<prefix>.items`` — the text of the
   most-viewed item plus a sentence unique to the run, so BERT must really encode it and users
   who like the original are plausible targets. The figure is publish → first time the item
   appears in any list the poller reads, with no event on the item: content only. Its bound is
   the worker's encoder interval + the encoder batch time from the worker's own histogram over
   the same window. If it has not appeared after ``new_item_timeout_s`` the figure is null (goal
   missed); then one user views the item and the time from that view to its first appearance
   is reported as ``after_first_view_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import resource
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.common import (
    delete_redis_prefix,
    load_average,
    percentile,
    redis_client,
    unique_name,
)
from bench.kafka_util import (
    bootstrap,
    delete_topics_with_prefix,
    event_positions,
    produce,
    read_topic,
    reflected_rate,
)
from bench.latency_stalls import SLOW_MS, metrics_ticks, slow_callbacks, slow_events, timeline
from bench.worker_util import Worker
from bench.workload import catalogue_vectors, workload

NEW_ITEM_SLACK_S = 1.0  # the new-item goal: the encoder interval + this
TAIL_BYTES = 200  # "trigger_event_id", "model_version", "generated_at", "latency_ms" fit in it
_TRIGGER = re.compile(rb'"trigger_event_id":"([^"]*)"')
_GENERATED = re.compile(rb'"generated_at":([0-9.eE+-]+)')


def _repeated(events: list, times: int) -> list:
    """``events`` then ``times - 1`` copies with new event ids (so dedup lets them through)."""
    out = list(events)
    for n in range(1, times):
        out.extend(dataclasses.replace(e, event_id=f"{e.event_id}-r{n}") for e in events)
    return out


def _max_rate(worker: Worker, events: list, topic: str) -> dict[str, Any]:
    before = worker.health() or {}
    done = before.get("events_processed", 0)
    produce(topic, ((e.user_id.encode(), e.to_json()) for e in events))
    worker.wait_until(
        lambda h: h.get("events_processed", 0) >= done + len(events),
        timeout_s=900,
        what="done with the burst",
    )
    cfg = worker.settings
    recs = [
        json.loads(r.value)
        for r in read_topic(cfg.topic("recommendations"), done + len(events), idle_s=3)
    ]
    ids = {e.event_id for e in events}
    positions = {
        eid: where
        for eid, where in event_positions(cfg.topic("events"), done + len(events)).items()
        if eid in ids
    }
    # From the middle of the burst: early events meet a small model (cheap lists) and would
    # overstate the rate the worker can sustain once its state has grown.
    half = reflected_rate(recs, positions, start_fraction=0.5)
    whole = reflected_rate(recs, positions, start_fraction=0.0)
    return {**half, "whole_burst_events_per_s": whole["events_per_s"]}


@dataclasses.dataclass
class _Probe:
    """What the pacer sent and the poller saw (one event loop: no locks needed)."""

    # user -> [(event_id, sent_at), ...] oldest first: one user's events are processed in order
    pending: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)
    sent_at: list[float] = dataclasses.field(default_factory=list)
    visible_ms: list[float] = dataclasses.field(default_factory=list)  # parallel to sent_at
    generated_ms: list[float] = dataclasses.field(default_factory=list)
    overwritten: int = 0
    polls: int = 0
    watch_item: str | None = None
    watch_seen_at: float | None = None

    def n_pending(self) -> int:
        return sum(len(v) for v in self.pending.values())


class _Session:
    """A pacer (aiokafka producer) and a Redis poller sharing one event loop."""

    def __init__(self, worker: Worker, poll_ms: float) -> None:
        self.cfg = worker.settings
        self.poll_s = poll_ms / 1e3
        self.probe = _Probe()

    async def __aenter__(self) -> _Session:
        import redis.asyncio as aioredis
        from aiokafka import AIOKafkaProducer

        self.redis = aioredis.Redis.from_url(self.cfg.redis_url)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=0, acks=1)
        await self.producer.start()
        self._stop = asyncio.Event()
        self._poller = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self._poller.cancel()
        await self.producer.stop()
        await self.redis.aclose()

    def reset(self) -> _Probe:
        old, self.probe = self.probe, _Probe()
        return old

    async def _poll(self) -> None:
        key = self.cfg.redis_key
        while not self._stop.is_set():
            probe = self.probe
            if probe.pending:
                users = list(probe.pending)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for user in users:
                        pipe.getrange(key("recs", user), -TAIL_BYTES, -1)
                    tails = await pipe.execute()
                probe.polls += 1
                now = time.time()
                for user, tail in zip(users, tails, strict=True):
                    if tail:
                        await self._resolve(probe, user, tail, now)
            await asyncio.sleep(self.poll_s)

    async def _resolve(self, probe: _Probe, user: str, tail: bytes, now: float) -> None:
        waiting = probe.pending.get(user)
        trigger, generated = _TRIGGER.search(tail), _GENERATED.search(tail)
        if not waiting or trigger is None or generated is None:
            return
        event_id = trigger.group(1).decode()
        hit = next((n for n, (eid, _) in enumerate(waiting) if eid == event_id), None)
        if hit is None:  # still the list of an earlier event
            return
        # This user's earlier pending events were processed (and their lists written) before
        # this one, so "now" bounds their latency from above: counted, never dropped, or the
        # slowest events would vanish from the tail.
        for _, sent in waiting[:hit]:
            probe.sent_at.append(sent)
            probe.visible_ms.append((now - sent) * 1e3)
            probe.overwritten += 1
        sent = waiting[hit][1]
        probe.sent_at.append(sent)
        probe.visible_ms.append((now - sent) * 1e3)
        probe.generated_ms.append((float(generated.group(1)) - sent) * 1e3)
        del waiting[: hit + 1]
        if not waiting:
            del probe.pending[user]
        if probe.watch_item and probe.watch_seen_at is None:
            # Only while watching for the new item: read the whole list once.
            raw = await self.redis.get(self.cfg.redis_key("recs", user))
            if raw and any(i["item_id"] == probe.watch_item for i in json.loads(raw)["items"]):
                probe.watch_seen_at = now

    async def pace(
        self, events: list, rate: float, seconds: float, until: Callable[[], bool] | None = None
    ) -> int:
        """Send events at ``rate`` for ``seconds`` (or until ``until()``); returns how many."""
        topic = self.cfg.topic("events")
        n = 0
        t0 = time.perf_counter()
        for event in events:
            if time.perf_counter() - t0 >= seconds or (until is not None and until()):
                break
            delay = t0 + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.probe.pending.setdefault(event.user_id, []).append((event.event_id, time.time()))
            await self.producer.send(topic, key=event.user_id.encode(), value=event.to_json())
            n += 1
        await self.producer.flush()
        return n

    async def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.probe.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    worker: Worker,
    stream: list,
    rate: float,
    duration_s: float,
    probe_s: float,
    max_probes: int,
    new_item: Any,
    new_item_timeout_s: float,
    poll_ms: float,
    fixed_rate: float | None = None,
) -> dict[str, Any]:
    from recstream.events import Event

    used = 0
    probes: list[dict[str, Any]] = []
    async with _Session(worker, poll_ms) as session:
        # -- 2. the maximum rate the worker sustains with events arriving one by one ------
        # From the burst's rate, up by 25 % while sustained, or down by 20 % until sustained:
        # the highest sustained rate below the first one that left a backlog. With
        # ``fixed_rate`` (a diagnosis at a given load), no probe: measured at that rate.
        best: float | None = None if fixed_rate is None else 2 * fixed_rate
        lowering = False
        pacer_bound = False
        for _ in range(max_probes if fixed_rate is None else 0):
            n = await session.pace(stream[used:], rate, probe_s)
            used += n
            backlog = session.probe.n_pending()
            sustainable = backlog <= max(10, 0.25 * rate)
            achieved = n / probe_s
            probes.append(
                {
                    "rate": round(rate, 1),
                    "sent": n,
                    "achieved_rate": round(achieved, 1),
                    "backlog_at_end": backlog,
                    "sustainable": sustainable,
                }
            )
            await session.drain(60)
            session.reset()
            if sustainable:
                best = rate
                if lowering:
                    break
                if achieved < 0.95 * rate:
                    # This process cannot send faster: the worker's maximum is above it.
                    pacer_bound = True
                    break
                rate *= 1.25
            elif best is not None:
                break  # the previous, lower rate was sustained
            else:
                lowering = True
                rate *= 0.8
        if best is None:
            raise RuntimeError(f"no probed rate was sustained: {probes}")
        sustained = rate = best
        rate /= 2  # measured at half the maximum sustainable rate
        # -- 3. latency at half that rate -------------------------------------------------
        wall0, cpu0 = time.perf_counter(), _cpu_seconds()
        n = await session.pace(stream[used:], rate, duration_s)
        used += n
        cpu_share = (_cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        await session.drain(30)
        probe = session.reset()
        latency = {
            "sent": n,
            "timed": len(probe.visible_ms),
            "lost": probe.n_pending(),
            "overwritten_upper_bound": probe.overwritten,
            "polls": probe.polls,
            "bench_process_cpu_share": round(cpu_share, 3),
        }
        # -- 4. new item --------------------------------------------------------------------
        batch_s0 = await asyncio.to_thread(worker.metric, "recstream_encode_batch_seconds_sum")
        batches0 = await asyncio.to_thread(worker.metric, "recstream_encode_batch_seconds_count")
        session.probe.watch_item = new_item.item_id
        published = time.time()
        await asyncio.to_thread(
            produce,
            worker.settings.topic("items"),
            [(new_item.item_id.encode(), new_item.to_json())],
        )
        seen = lambda: session.probe.watch_seen_at is not None  # noqa: E731
        used += await session.pace(stream[used:], rate, new_item_timeout_s, until=seen)
        content_only = session.probe.watch_seen_at
        batch_s = (
            await asyncio.to_thread(worker.metric, "recstream_encode_batch_seconds_sum") - batch_s0
        )
        batches = (
            await asyncio.to_thread(worker.metric, "recstream_encode_batch_seconds_count")
            - batches0
        )
        after_view = None
        if content_only is None:
            # Not reached on content alone: one user views it and the clock restarts (the
            # co-visitation, freshness and popularity signals need an event to start).
            viewer = stream[used].user_id
            view = Event(f"view-{new_item.item_id}", viewer, new_item.item_id, "view", time.time())
            viewed = time.time()
            await asyncio.to_thread(
                produce, worker.settings.topic("events"), [(viewer.encode(), view.to_json())]
            )
            used += await session.pace(stream[used + 1 :], rate, new_item_timeout_s, until=seen)
            if session.probe.watch_seen_at is not None:
                after_view = session.probe.watch_seen_at - viewed
    return {
        "rate": rate,
        "sustained": sustained,
        "sustained_is_pacer_bound": pacer_bound,
        "probes": probes,
        "probe": probe,
        "latency": latency,
        "new_item": {
            "item_id": new_item.item_id,
            "first_rec_s": None if content_only is None else content_only - published,
            "timeout_s": new_item_timeout_s,
            "after_first_view_s": after_view,
            "encode_batches": batches,
            "encode_batch_s": batch_s / batches if batches else None,
        },
    }


def _one_run(
    items: list,
    events: list,
    new_item: Any,
    *,
    partitions: int,
    duration_s: float,
    burst_events: int,
    probe_s: float,
    max_probes: int,
    poll_ms: float,
    new_item_timeout_s: float,
    rate: float | None,
    extra_env: dict[str, str] | None,
) -> dict[str, Any]:
    """One worker, from start to stop: burst, probes, the paced window, the new item."""
    load_before = load_average()
    prefix = unique_name("latency")
    try:
        # loglevel info: the worker logs each checkpoint with its duration; the GC probe records
        # its collector pauses: the two suspects when a list is late (stall diagnosis).
        with Worker(
            prefix,
            partitions,
            extra_env=extra_env,
            loglevel="info",
            gc_probe=True,
            loop_probe=True,
        ) as worker:
            cfg = worker.settings
            worker.load_catalogue(items)
            max_rate = _max_rate(worker, events[:burst_events], cfg.topic("events"))
            measured = asyncio.run(
                _measure(
                    worker,
                    events[burst_events:],
                    max_rate["events_per_s"],
                    duration_s,
                    probe_s,
                    max_probes,
                    new_item,
                    new_item_timeout_s,
                    poll_ms,
                    fixed_rate=rate,
                )
            )
            checkpoints, gc_pauses = worker.checkpoints(), worker.gc_pauses()
            stalls = worker.slow_callbacks()
            probe: _Probe = measured["probe"]
            t0 = min(probe.sent_at) if probe.sent_at else time.time()
            t1 = max(probe.sent_at) if probe.sent_at else t0
            ticks = metrics_ticks(worker, t0, t1)
    finally:
        delete_topics_with_prefix(prefix)
        client = redis_client()
        delete_redis_prefix(client, prefix)
        client.close()

    visible, generated = probe.visible_ms, probe.generated_ms
    if not visible:
        raise RuntimeError(f"no recommendation observed in Redis: {measured['latency']}")
    new = measured["new_item"]
    half = max(1, len(visible) // 2)
    return {
        "load_before": load_before,
        "load_after": load_average(),
        "p50_ms": round(percentile(visible, 50), 2),
        "p99_ms": round(percentile(visible, 99), 2),
        "rate_events_per_s": round(measured["rate"], 1),
        "max_sustained_events_per_s": None if rate is not None else round(measured["sustained"], 1),
        "rate_is_fixed": rate is not None,
        # True: this benchmark could not send faster, so the worker's maximum is higher.
        "max_sustained_is_pacer_bound": measured["sustained_is_pacer_bound"],
        "burst_rate_events_per_s": round(max_rate["events_per_s"], 1),
        "mean_ms": round(statistics.fmean(visible), 2),
        "max_ms": round(max(visible), 2),
        # A rising median means the rate was not sustained (a backlog grew during the run).
        "p50_first_half_ms": round(percentile(visible[:half], 50), 2),
        "p50_second_half_ms": round(percentile(visible[half:] or visible, 50), 2),
        "generated_p50_ms": round(percentile(generated, 50), 2) if generated else None,
        "generated_p99_ms": round(percentile(generated, 99), 2) if generated else None,
        "slow_events": slow_events(probe.sent_at, visible, checkpoints, gc_pauses, SLOW_MS),
        "metrics_ticks_s": ticks,
        "slow_callbacks": slow_callbacks(stalls, probe.sent_at, visible, t0, t1),
        "timeline": timeline(probe.sent_at, visible, t0),
        "rate_probes": measured["probes"],
        "latency": measured["latency"],
        "max_rate": max_rate,
        "new_item": {**new, "first_rec_s": _round(new["first_rec_s"], 2)},
        "encoder_interval_s": cfg.encoder_interval_s,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p99 (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["p99_ms"])
    return ordered[(len(ordered) - 1) // 2]


def run(
    n_users: int = 2_000,
    n_items: int = 2_000,
    duration_s: float = 40.0,
    partitions: int = 4,
    burst_events: int = 3_000,
    probe_s: float = 8.0,
    max_probes: int = 8,
    poll_ms: float = 2.0,
    new_item_timeout_s: float = 60.0,
    seed: int = 7,
    repeats: int = 3,
    rate: float | None = None,
    extra_env: dict[str, str] | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """``repeats`` independent runs (a fresh worker each); the figures are the median run's
    (by p99), every run is in ``runs``. ``rate``: measure at that rate instead of half the
    probed maximum (diagnosis); ``extra_env``: the worker's settings (RECSTREAM_*)."""
    items, events = workload(n_users, n_items, burst_events + 100_000, seed)
    # The paced phases send rate × seconds events, and the rate is the worker's: the stream
    # repeats (fresh event ids) so that no rate the worker reaches can run out of events.
    events = _repeated(events, 6)
    catalogue_vectors(items)  # the worker's encoder cache: the catalogue is not timed
    views = Counter(e.item_id for e in events[:burst_events])
    source = next(i for i in items if i.item_id == views.most_common(1)[0][0])
    runs = []
    for _ in range(repeats):
        new_item = dataclasses.replace(
            source,
            item_id=f"new-{unique_name('item')}",
            # A sentence unique to the run: BERT must encode it (no cache hit), as a real item.
            description=f"{source.description} A brand-new edition ({unique_name('ed')}).",
            # released now, in the stream's clock (the source's own release time is past)
            ts=max(e.ts for e in events),
        )
        runs.append(
            _one_run(
                items,
                events,
                new_item,
                partitions=partitions,
                duration_s=duration_s,
                burst_events=burst_events,
                probe_s=probe_s,
                max_probes=max_probes,
                poll_ms=poll_ms,
                new_item_timeout_s=new_item_timeout_s,
                rate=rate,
                extra_env=extra_env,
            )
        )
    mid = _median_run(runs)
    interval = mid["encoder_interval_s"]
    first_recs = [r["new_item"]["first_rec_s"] for r in runs]
    # A run whose new item never showed counts as the slowest (the goal is missed there).
    new_item_median = (
        None
        if sum(f is None for f in first_recs) * 2 >= len(first_recs) + 1
        else statistics.median(f if f is not None else math.inf for f in first_recs)
    )
    return {
        "latency_p50_ms": mid["p50_ms"],
        "latency_p99_ms": mid["p99_ms"],
        # The load each figure was taken at: half the maximum rate that run sustained.
        "latency_rate_events_per_s": mid["rate_events_per_s"],
        "latency_max_sustained_events_per_s": mid["max_sustained_events_per_s"],
        "latency_p99_ms_runs": [r["p99_ms"] for r in runs],
        "latency_p50_ms_runs": [r["p50_ms"] for r in runs],
        "latency_rate_events_per_s_runs": [r["rate_events_per_s"] for r in runs],
        "latency_load_runs": [r["load_before"] for r in runs],
        "new_item_first_rec_s": _round(new_item_median, 2),
        "new_item_first_rec_s_runs": first_recs,
        # A fixed bound: the encoder's interval (a batch starts at most that long after the
        # previous one) + 1 s for the batch and the next list of a user the item suits.
        "new_item_goal_s": round(interval + NEW_ITEM_SLACK_S, 2),
        "poll_ms": poll_ms,
        "repeats": repeats,
        "runs": runs,
        "workload": {
            "n_users": n_users,
            "n_items": n_items,
            "duration_s": duration_s,
            "partitions": partitions,
            "burst_events": burst_events,
            "fixed_rate": rate,
            "extra_env": extra_env or {},
        },
    }


if __name__ == "__main__":
    print(
        json.dumps(run(duration_s=8, burst_events=500, probe_s=5, new_item_timeout_s=10), indent=2)
    )
