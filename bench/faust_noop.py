"""A do-nothing Faust agent that drains a topic and reports its rate: the Faust-overhead probe.

Run as ``python -m bench.faust_noop '{"topic": ..., "n": ..., "partitions": ..., "out": ...}'``.
It is an ordinary Faust worker (memory store, web server off, raw serializers so no JSON work)
whose agent only counts; after the N-th event it writes its timings to ``out`` and stops itself
with SIGTERM, Faust's normal shutdown path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(topic: str, n: int, partitions: int, out: str, timeout_s: float = 300.0) -> None:
    import faust

    from bench.common import settings

    cfg = settings()
    app_id = f"{topic}-faust-{time.time_ns()}"
    # Faust's data dir defaults to "<app id>-data" in the working directory (the checkout).
    datadir = tempfile.mkdtemp(prefix="recstream-bench-faust-")
    app = faust.App(
        app_id,
        broker=cfg.broker,
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw", partitions=partitions)
    state: dict[str, Any] = {"seen": 0, "first": 0.0, "last": 0.0}

    def finish(result: dict[str, Any]) -> None:
        Path(out).write_text(json.dumps(result))
        os.kill(os.getpid(), signal.SIGTERM)

    @app.agent(source)
    async def noop(stream: Any) -> None:
        async for _ in stream:
            now = time.perf_counter()
            if not state["seen"]:
                state["first"] = now
            state["seen"] += 1
            state["last"] = now
            if state["seen"] == n:
                seconds = state["last"] - state["first"]
                finish({"events": n, "seconds": seconds, "events_per_s": (n - 1) / seconds})

    @app.timer(interval=timeout_s)
    async def watchdog() -> None:
        finish({"error": f"Faust no-op agent saw {state['seen']} of {n} events in {timeout_s} s"})

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


if __name__ == "__main__":
    main(**json.loads(sys.argv[1]))
