"""Faust's own overhead: a do-nothing Faust agent ÷ a raw aiokafka consumer on the same topic.

N events are pre-produced to a fresh topic; each consumer (a separate process, fresh consumer
group, reading from the beginning) drains all of them, timed first event → N-th event. The two
alternate ``repeat`` times and the median rate of each side is kept, so a neighbour's load burst
hits both sides alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, unique_name
from bench.kafka_util import create_topics, delete_topics_with_prefix, produce, raw_drain


def event_messages(
    n_events: int, n_users: int = 2_000, n_items: int = 2_000, seed: int = 7
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs shaped like real ``recstream.events`` messages (key = user_id)."""
    from recstream.datasets import synthetic_stream

    _, events = synthetic_stream(n_users=n_users, n_items=n_items, n_events=n_events, seed=seed)
    return [(e.user_id.encode(), e.to_json()) for e in events]


def faust_noop_drain(
    topic: str,
    n: int,
    partitions: int,
    timeout_s: float = 300.0,
    *,
    launcher: tuple[str, ...] = ("-m", "bench.faust_noop"),
    label: str = "Faust no-op worker",
) -> dict:
    """Run the do-nothing Faust agent (``bench.faust_noop``) in a child Python started with
    ``launcher`` (``bench.pipeline`` starts it with the worker's Faust settings) and return the
    result it writes."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    args = json.dumps(
        {"topic": topic, "n": n, "partitions": partitions, "out": str(out), "timeout_s": timeout_s}
    )
    try:
        proc = subprocess.run(
            [sys.executable, *launcher, args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s + 120,
            check=False,
        )
        text = out.read_text()
        if not text:
            raise RuntimeError(
                f"{label} exited {proc.returncode} without a result: {proc.stderr.strip()[-2000:]}"
            )
        result = json.loads(text)
    finally:
        out.unlink(missing_ok=True)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def run(
    n_events: int = 100_000, partitions: int = 4, repeat: int = 2, quick: bool = False
) -> dict[str, Any]:
    prefix = unique_name("consumers")
    topic = f"{prefix}.events"
    create_topics([topic], partitions)
    try:
        produced = produce(topic, event_messages(n_events))
        raw_rates: list[float] = []
        faust_rates: list[float] = []
        for _ in range(repeat):
            raw_rates.append(raw_drain(topic, n_events)["events_per_s"])
            faust_rates.append(faust_noop_drain(topic, n_events, partitions)["events_per_s"])
    finally:
        time.sleep(0.5)
        delete_topics_with_prefix(prefix)
    raw = statistics.median(raw_rates)
    faust = statistics.median(faust_rates)
    return {
        "faust_noop_efficiency": round(faust / raw, 3),
        "raw_aiokafka_events_per_s": round(raw),
        "faust_noop_events_per_s": round(faust),
        "raw_runs": [round(r) for r in raw_rates],
        "faust_runs": [round(r) for r in faust_rates],
        "n_events": n_events,
        "partitions": partitions,
        **produced,
    }


if __name__ == "__main__":
    print(json.dumps(run(n_events=10_000, repeat=1), indent=2))
