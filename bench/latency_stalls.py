"""Where the latency benchmark's slow events come from: what overlapped them in the worker.

Helpers of :mod:`bench.latency`, fed with the paced window's send times and latencies and what
the worker recorded meanwhile: its checkpoints (pause of the loop for the fork, then the write
in the child), its garbage-collector pauses (``bench.gc_probe``), its event-loop callbacks of
10 ms or more (``bench.loop_probe``) and its metrics timer ticks.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from bench.common import percentile
from bench.kafka_util import read_topic
from bench.worker_util import Worker

SLOW_MS = 50.0  # the p99 goal: events slower than this are listed with what overlapped them


def slow_events(
    sent_at: list[float],
    visible: list[float],
    checkpoints: list[tuple[float, float, float]],
    gc_pauses: list[tuple[float, float, int]],
    slow_ms: float,
) -> dict[str, Any]:
    """Events over ``slow_ms``, and how many were in flight during a checkpoint or a GC pause
    of the worker (both hold its event loop: nothing else runs meanwhile)."""
    if not sent_at:
        return {"count": 0}
    t0, t1 = min(sent_at), max(sent_at)
    slow = [(s, v) for s, v in zip(sent_at, visible, strict=True) if v > slow_ms]

    def overlaps(sent: float, ms: float, stalls: list[tuple[float, float]]) -> bool:
        # A stall logged at `end` that took `took` s held the loop from end - took to end.
        return any(sent <= end and sent + ms / 1e3 >= end - took for end, took in stalls)

    gcs = [(end, took) for end, took, _ in gc_pauses if t0 <= end <= t1 + 5]
    return {
        "threshold_ms": slow_ms,
        "count": len(slow),
        # The loop's pause, and the write in the forked child that follows it (the child
        # takes a core from the worker, its page faults slow the parent).
        "during_checkpoint": sum(
            1 for s, v in slow if overlaps(s, v, [(end, took) for end, took, _ in checkpoints])
        ),
        "during_checkpoint_write": sum(
            1
            for s, v in slow
            if overlaps(
                s, v, [(end - pause + written, written) for end, pause, written in checkpoints]
            )
        ),
        "during_gc_pause": sum(1 for s, v in slow if overlaps(s, v, gcs)),
        "checkpoints": [
            {"at_s": round(end - t0, 2), "pause_s": took, "written_s": written}
            for end, took, written in checkpoints
            if t0 <= end <= t1 + 5
        ],
        "gc_pauses": {
            "count": len(gcs),
            "total_s": round(sum(took for _, took in gcs), 3),
            "longest": [
                {"at_s": round(end - t0, 2), "seconds": round(took, 3), "generation": g}
                for end, took, g in sorted(
                    (p for p in gc_pauses if t0 <= p[0] <= t1 + 5), key=lambda p: -p[1]
                )[:5]
            ],
        },
        "worst": [
            {"sent_s": round(s - t0, 3), "ms": round(v, 1)}
            for s, v in sorted(slow, key=lambda x: -x[1])[:10]
        ],
    }


def timeline(sent_at: list[float], visible: list[float], t0: float) -> list[dict[str, Any]]:
    """Per second of the paced window (by send time): events, p50, p99 and max latency; a
    periodic stall shows as a row every N seconds."""
    buckets: dict[int, list[float]] = {}
    for sent, ms in zip(sent_at, visible, strict=True):
        buckets.setdefault(int(sent - t0), []).append(ms)
    return [
        {
            "s": sec,
            "events": len(v),
            "p50": round(percentile(v, 50), 1),
            "p99": round(percentile(v, 99), 1),
            "max": round(max(v), 1),
        }
        for sec, v in sorted(buckets.items())
    ]


def metrics_ticks(worker: Worker, t0: float, t1: float) -> list[float]:
    """When the worker's metrics timer ran (its snapshots' ``ts`` on the metrics topic), in
    seconds from ``t0``: the timer also checks the topic ids with a Kafka admin client."""
    with contextlib.suppress(Exception):
        records = read_topic(worker.settings.topic("metrics"), 10_000, timeout_s=10, idle_s=1)
        stamps = [json.loads(r.value).get("ts") or 0.0 for r in records]
        return [round(ts - t0, 2) for ts in sorted(stamps) if t0 <= ts <= t1 + 5]
    return []


def slow_callbacks(
    stalls: list[tuple[float, float, float, str]],
    sent_at: list[float],
    visible: list[float],
    t0: float,
    t1: float,
) -> dict[str, Any]:
    """The worker's event-loop callbacks of 10 ms or more in the paced window, by what ran
    (count, total and longest wall seconds, the loop thread's CPU share of that time), and how
    many events over SLOW_MS were in flight during one of each kind."""
    window = [s for s in stalls if t0 <= s[0] <= t1 + 2]
    slow = [(s, v) for s, v in zip(sent_at, visible, strict=True) if v > SLOW_MS]
    kinds: dict[str, dict[str, Any]] = {}
    for _end, took, cpu, what in window:
        k = kinds.setdefault(what, {"count": 0, "wall_s": 0.0, "cpu_s": 0.0, "longest_s": 0.0})
        k["count"] += 1
        k["wall_s"] += took
        k["cpu_s"] += cpu
        k["longest_s"] = max(k["longest_s"], took)
    for what, k in kinds.items():
        spans = [(end - took, end) for end, took, _, w in window if w == what]
        k["slow_events_during"] = sum(
            1 for sent, ms in slow if any(sent <= b and sent + ms / 1e3 >= a for a, b in spans)
        )
        k["wall_s"], k["cpu_s"] = round(k["wall_s"], 3), round(k["cpu_s"], 3)
    ordered = sorted(kinds.items(), key=lambda kv: -kv[1]["wall_s"])
    return {
        "count": len(window),
        "seconds": round(t1 - t0, 1),
        "by_kind": dict(ordered[:12]),
        "longest": [
            {"at_s": round(end - t0, 2), "s": took, "cpu_s": cpu, "what": what}
            for end, took, cpu, what in sorted(window, key=lambda s: -s[1])[:8]
        ],
    }
