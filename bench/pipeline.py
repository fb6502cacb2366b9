"""Full-pipeline throughput, as ratios to what the worker is built from, measured like for like.

One synthetic workload (catalogue + N events, ``bench.workload``); ``repeats`` independent runs,
each on a fresh topic prefix, each giving its own ratios (the figures are their medians, the
runs and the machine's load at each are reported):

1. **The worker.** A real worker (``python -m streams.worker``) starts; the catalogue is
   produced and the benchmark waits until every item has its BERT vector (cached: see
   ``bench.workload``), so the timed part is event processing. The N events are produced as fast
   as kafka-python can (far above the worker's rate: it drains a backlog). The rate is the
   events its lists reflect per second of ``generated_at`` (``kafka_util.reflected_rate``: one
   list per user per batch, so a list reflects its partition up to its trigger event), from 5 %
   of the events to the last list. Redis is checked to hold every user's list. The worker
   process's CPU seconds over the drain are taken from ``/proc``.
2. **The core doing the same work** → ``update_cost_ratio``. The Recommender alone replays the
   same events from memory with the same catalogue and vectors, learning every event and
   computing exactly the lists the worker published: after learning an event that was the
   trigger of one of the worker's lists, ``recommend(user, k)``. numpy's BLAS runs on one
   thread, as in the worker (streams/__init__.py). Timed from 5 % of the events on, like the
   worker's window. Goal ≥ 0.67: the pipeline around the model costs at most half the model.
   ``update_cost_ratio_cpu`` is the same ratio in CPU time per event (core ÷ worker process),
   which the machine's load moves far less than wall time.
3. **A Faust agent that does nothing** → ``worker_vs_faust_noop``: a Faust app (own process,
   raw serializers) whose agent only counts, draining the same topic right after the worker,
   with Faust set up as the worker sets it up (no startup spinner, which turns the root logger
   to DEBUG; the lean monitor): like for like. Goal ≥ 0.5. The same no-op with Faust's
   defaults gives ``worker_vs_faust_noop_default`` (a detail).
4. Details: the old per-event definition (the core computing a list for *every* event, which
   the worker does not; ``update_cost_ratio_per_event_core``), a bare aiokafka consumer on the
   same topic (the retired ``pipeline_efficiency`` baseline; Faust tops out at a few % of it),
   and ``StreamProcessor`` (the worker's pure per-message logic: parse, dedup, learn, lists,
   JSON) from the same bytes in batches of ``batch_max``.
5. With ``profile=True``, one more worker pass (not timed) under py-spy
   (``bench.worker_profile``): where the event loop's time goes, grouped by job (decode, dedup,
   learn, recommend, Kafka publish, Redis, metrics, Faust's input path, idle);
   bench/profiles/pipeline_worker_pyspy.txt and ``profile`` in the result.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PROFILES_DIR,
    ROOT,
    delete_redis_prefix,
    load_average,
    redis_client,
    unique_name,
)
from bench.consumers import faust_noop_drain
from bench.kafka_util import (
    delete_topics_with_prefix,
    event_positions,
    produce,
    raw_drain,
    read_topic,
    reflected_rate,
)
from bench.worker_util import Worker
from bench.workload import _loaded_recommender, catalogue_vectors, processor_replay, workload
from recstream.config import Settings

START_FRACTION = 0.05  # the worker's rate is taken from 5 % of the events on; so is the core's
RAW_PROFILE = ROOT / ".cache" / "pipeline_worker.pyspy.raw"

# Runs bench.faust_noop with Faust set up as the worker sets it up (streams/worker.py,
# streams/app.py): no startup spinner (at --loglevel warning it turns the root logger to DEBUG,
# so every aiokafka debug call builds a LogRecord) and the lean monitor. Without this the
# baseline pays costs the worker does not, and the ratio flatters the worker.
_LIKE_THE_WORKER = """
import runpy
import faust
import faust.worker

faust.worker.Worker._setup_spinner_handler = lambda self, logger, level: None
_App = faust.App


class App(_App):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("Monitor", "streams.lean_monitor:LeanMonitor")
        super().__init__(*args, **kwargs)


faust.App = App
runpy.run_module("bench.faust_noop", run_name="__main__")
"""


def faust_noop_like_worker(topic: str, n: int, partitions: int, timeout_s: float = 300.0) -> dict:
    """``bench.consumers.faust_noop_drain``, with Faust configured as the worker configures it."""
    return faust_noop_drain(
        topic,
        n,
        partitions,
        timeout_s,
        launcher=("-c", _LIKE_THE_WORKER),
        label="Faust no-op (worker's settings)",
    )


def _worker_pass(
    items: list,
    events: list,
    partitions: int,
    prefix: str,
    *,
    timeout_s: float = 1200.0,
    spy_to: Path | None = None,
    keep_topics: bool = False,
) -> dict[str, Any]:
    """Run a worker over the workload; its throughput, CPU, lists and the Redis check."""
    from bench.worker_profile import spy

    n = len(events)
    try:
        with Worker(prefix, partitions) as worker:
            cfg = worker.settings
            worker.load_catalogue(items)
            cpu0, t_produce = worker.cpu_seconds(), time.time()
            produced = produce(
                cfg.topic("events"), ((e.user_id.encode(), e.to_json()) for e in events)
            )
            if spy_to is None:
                health = worker.wait_until(
                    lambda h: h.get("events_processed", 0) >= n,
                    timeout_s=timeout_s,
                    what=f"done with {n} events",
                )
            else:
                assert worker.proc is not None
                with spy(worker.proc.pid, spy_to):
                    health = worker.wait_until(
                        lambda h: h.get("events_processed", 0) >= n,
                        timeout_s=timeout_s,
                        what=f"done with {n} events",
                    )
            cpu_s = worker.cpu_seconds() - cpu0
            batches = worker.metric("recstream_event_batch_size_count")
        # The worker publishes at most one list per event; wait for the last one, which
        # reflects the end of the stream (each partition's last event is its user's last).
        records = read_topic(cfg.topic("recommendations"), n, idle_s=3)
        recs = [json.loads(r.value) for r in records]
        rate = reflected_rate(recs, event_positions(cfg.topic("events"), n), START_FRACTION)
        generated = sorted(r["generated_at"] for r in recs)
        # Redis: one key per user, holding that user's latest list.
        client = redis_client()
        try:
            keys = list(client.scan_iter(match=f"{prefix}:recs:*", count=5000))
        finally:
            client.close()
    finally:
        if not keep_topics:
            _clean(prefix)
    users = {e.user_id for e in events}
    if len(keys) != len(users):
        raise RuntimeError(f"Redis holds {len(keys)} lists for {len(users)} users")
    return {
        **rate,
        "triggers": {r["trigger_event_id"] for r in recs},
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_event": round(1000 * cpu_s / n, 4),
        "mean_batch": round(n / batches, 1) if batches else None,
        "produce": produced,
        # How long after the first event all N were in Kafka: must be small vs "seconds".
        "produce_lead_s": round(t_produce + produced["produce_s"] - generated[0], 2),
        "redis_keys": len(keys),
        "dlq_total": health.get("dlq_total"),
    }


def _clean(prefix: str) -> None:
    delete_topics_with_prefix(prefix)
    client = redis_client()
    try:
        delete_redis_prefix(client, prefix)
    finally:
        client.close()


def core_same_lists(
    items: list, events: list, vectors: Any, triggers: set[str] | None, k: int = 10
) -> dict[str, Any]:
    """The Recommender alone: learn every event; after an event in ``triggers`` (the worker's
    lists), ``recommend`` its user (``triggers=None``: after every event, the old per-event
    baseline). BLAS on one thread, as in the worker; timed from ``START_FRACTION`` on."""
    from threadpoolctl import threadpool_limits

    rec = _loaded_recommender(items, vectors)
    start = int(START_FRACTION * len(events))
    lists = 0

    def replay(chunk: list) -> int:
        made = 0
        for event in chunk:
            rec.learn(event)
            if triggers is None or event.event_id in triggers:
                rec.recommend(event.user_id, k)
                made += 1
        return made

    with threadpool_limits(limits=1, user_api="blas"):
        lists += replay(events[:start])
        t0, c0 = time.perf_counter(), time.process_time()
        timed_lists = replay(events[start:])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    timed = len(events) - start
    return {
        "events_timed": timed,
        "lists": lists + timed_lists,
        "lists_per_event": round((lists + timed_lists) / len(events), 3),
        "seconds": round(seconds, 3),
        "events_per_s": timed / seconds,
        "cpu_ms_per_event": round(1000 * cpu / timed, 4),
    }


def _one_run(
    items: list, events: list, vectors: Any, partitions: int, details: bool
) -> dict[str, Any]:
    n = len(events)
    load_before = load_average()
    prefix = unique_name("pipeline")
    try:
        worker = _worker_pass(items, events, partitions, prefix, keep_topics=True)
        # Right after the worker, on the same topic: a Faust agent that does nothing, with
        # Faust set up as the worker sets it up (the goal's baseline), and with Faust's
        # defaults (the figure before issue 12, a detail).
        noop = faust_noop_like_worker(f"{prefix}.events", n, partitions)
        noop_default = faust_noop_drain(f"{prefix}.events", n, partitions)
        raw = raw_drain(f"{prefix}.events", n) if details else None
    finally:
        _clean(prefix)
    triggers = worker.pop("triggers")
    core = core_same_lists(items, events, vectors, triggers)
    per_event = core_same_lists(items, events, vectors, None) if details else None
    rate = worker["events_per_s"]
    out: dict[str, Any] = {
        "load_before": load_before,
        "load_after": load_average(),
        "worker_events_per_s": round(rate, 1),
        "core_same_lists_events_per_s": round(core["events_per_s"], 1),
        "faust_noop_events_per_s": round(noop["events_per_s"]),
        "faust_noop_default_events_per_s": round(noop_default["events_per_s"]),
        "update_cost_ratio": round(rate / core["events_per_s"], 3),
        "update_cost_ratio_cpu": round(core["cpu_ms_per_event"] / worker["cpu_ms_per_event"], 3),
        "worker_vs_faust_noop": round(rate / noop["events_per_s"], 3),
        "worker_vs_faust_noop_default": round(rate / noop_default["events_per_s"], 3),
        "lists_per_event": worker["lists_per_event"],
        "worker": worker,
        "core": core,
    }
    if per_event is not None:
        out["core_per_event_list_events_per_s"] = round(per_event["events_per_s"], 1)
        out["update_cost_ratio_per_event_core"] = round(rate / per_event["events_per_s"], 3)
    if raw is not None:
        out["raw_aiokafka_events_per_s"] = round(raw["events_per_s"])
        out["pipeline_efficiency_retired"] = round(rate / raw["events_per_s"], 6)
    return out


def _profile(items: list, events: list, partitions: int) -> dict[str, Any]:
    """One more worker pass under py-spy (not timed): the event loop's time by job."""
    from bench.worker_profile import available, breakdown, summary_text

    if not available():
        return {"skipped": "py-spy not installed (pip install -e '.[bench]')"}
    RAW_PROFILE.parent.mkdir(parents=True, exist_ok=True)
    prefix = unique_name("pipeline-prof")
    passed = _worker_pass(items, events, partitions, prefix, spy_to=RAW_PROFILE)
    result = breakdown(RAW_PROFILE)
    PROFILES_DIR.mkdir(exist_ok=True)
    text = summary_text(result)
    head = (
        f"py-spy (250 Hz, --idle) on a worker draining {len(events)} events, "
        f"{passed['events_per_s']:.0f} events/s under the sampler, load {load_average()}\n"
    )
    (PROFILES_DIR / "pipeline_worker_pyspy.txt").write_text(head + text + "\n")
    return {**result, "events_per_s_under_py_spy": round(passed["events_per_s"], 1)}


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def run(
    n_events: int = 20_000,
    n_users: int = 2_000,
    n_items: int = 2_000,
    partitions: int = 4,
    seed: int = 7,
    repeats: int = 3,
    profile: bool = True,
    quick: bool = False,
) -> dict[str, Any]:
    items, events = workload(n_users, n_items, n_events, seed)
    vectors = catalogue_vectors(items)  # fills the encoder cache the worker reads
    runs = [_one_run(items, events, vectors, partitions, details=(r == 0)) for r in range(repeats)]
    batch_max = Settings.from_env().batch_max
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # as in the worker
        processor = processor_replay(items, events, vectors, partitions=partitions, batch=batch_max)
    first = runs[0]
    out: dict[str, Any] = {
        # Like for like: the worker ÷ the core computing the same lists (goal >= 0.67).
        "update_cost_ratio": _median(runs, "update_cost_ratio"),
        # The worker ÷ a Faust agent that does nothing on the same topic (goal >= 0.5).
        "worker_vs_faust_noop": _median(runs, "worker_vs_faust_noop"),
        "update_cost_ratio_runs": [r["update_cost_ratio"] for r in runs],
        "worker_vs_faust_noop_runs": [r["worker_vs_faust_noop"] for r in runs],
        "update_cost_ratio_cpu": _median(runs, "update_cost_ratio_cpu"),
        "update_cost_ratio_cpu_runs": [r["update_cost_ratio_cpu"] for r in runs],
        "pipeline_events_per_s": _median(runs, "worker_events_per_s"),
        "pipeline_events_per_s_runs": [r["worker_events_per_s"] for r in runs],
        "core_same_lists_events_per_s_runs": [r["core_same_lists_events_per_s"] for r in runs],
        "faust_noop_events_per_s_runs": [r["faust_noop_events_per_s"] for r in runs],
        # The no-op with Faust's defaults (startup spinner: root logger at DEBUG; the full
        # monitor): what worker_vs_faust_noop would be against it.
        "faust_noop_default_events_per_s_runs": [
            r["faust_noop_default_events_per_s"] for r in runs
        ],
        "worker_vs_faust_noop_default": _median(runs, "worker_vs_faust_noop_default"),
        "load_runs": [r["load_before"] for r in runs],
        "lists_per_event": _median(runs, "lists_per_event"),
        # The old, flattering definition (first run only): the core computing a list for
        # every event, which the worker does not do when it batches.
        "update_cost_ratio_per_event_core": first.get("update_cost_ratio_per_event_core"),
        # The retired baseline (first run): a bare aiokafka consumer that decodes nothing.
        "raw_aiokafka_events_per_s": first.get("raw_aiokafka_events_per_s"),
        "pipeline_efficiency_retired": first.get("pipeline_efficiency_retired"),
        "processor_replay": {
            "batch": batch_max,
            "events_per_s": round(processor["events_per_s"], 1),
        },
        "runs": runs,
        "workload": {
            "n_events": n_events,
            "n_users": n_users,
            "n_items": n_items,
            "partitions": partitions,
            "seed": seed,
            "repeats": repeats,
        },
    }
    if profile:
        out["profile"] = _profile(items, events, partitions)
    return out


if __name__ == "__main__":
    print(json.dumps(run(n_events=2_000, repeats=1, profile=False), indent=2, default=str))
