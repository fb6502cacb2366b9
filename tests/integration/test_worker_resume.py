"""A worker SIGKILLed before its state ever reached storage: whoever reads its partitions next
starts at the log's start, not at the offsets Faust committed for what the dead worker acked.

Faust commits acked offsets every few seconds, ahead of any checkpoint or state flush, and
aiokafka's ``seek_to_committed`` skips a committed offset of 0: a partition whose state starts
at 0 used to stay at the dead worker's committed offset, and every event before it was never
learned (found by hand: ``events[1] jumped from 0 to 12``, 12 of 6,000 events lost). Both state
stores are checked: several workers (``kafka``, no marker in the user-state topic yet) and one
worker (``local``, no checkpoint yet).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from worker_harness import Worker, wait_for

EVENTS = 200
USERS = 20


def _events(first: int, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for k in range(first, first + n):
        user = f"u{k % USERS}"
        body = {"event_id": f"e{k}", "user_id": user, "item_id": f"i{k % 30}", "type": "click"}
        out.append((user.encode(), json.dumps({**body, "ts": 1_000.0 + k}).encode()))
    return out


def _committed(kafka_admin: Any, w: Worker) -> int:
    """The group's committed offsets on the events topic, summed (Faust's acks)."""
    offsets = kafka_admin.list_group_offsets(w.prefix).get(w.prefix) or {}
    return sum(m.offset for tp, m in offsets.items() if tp.topic == w.topic("events"))


@pytest.mark.parametrize("store", ["kafka", "local"])
def test_killed_before_any_flush_nothing_skipped(
    store: str, redis_url: str, worker_redis: Any, bootstrap_servers: str, kafka_admin: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    w = Worker(
        bootstrap_servers,
        redis_url,
        f"resume-{store}",
        tmp_path / "models",
        worker_redis.env(),
        RECSTREAM_STATE_STORE=store,
        RECSTREAM_ENCODER_DEVICE="cpu",
        # Nothing reaches storage before the SIGKILL: no flush, no checkpoint.
        RECSTREAM_STATE_FLUSH_INTERVAL_S="3600",
        RECSTREAM_CHECKPOINT_INTERVAL_S="3600",
    )
    try:
        w.start().wait_ready()
        w.send("events", _events(0, EVENTS))
        wait_for(lambda: (w.health() or {}).get("events_processed") == EVENTS, 60, "all learned")
        # Faust commits what the agent acked (every ~3 s): the offsets the bug resumed at.
        wait_for(lambda: _committed(kafka_admin, w) == EVENTS, 30, "Faust's commit of the acks")
        assert w.kill(signal.SIGKILL) == -signal.SIGKILL

        w.start().wait_ready()
        w.send("events", _events(EVENTS, 10))  # new events after the restart, too
        h = wait_for(
            lambda: (h := w.health()) and h.get("events_processed", 0) >= EVENTS + 10 and h,
            90,
            "every event learned again after the restart",
        )
        assert h["events_processed"] == EVENTS + 10, h["events_processed"]
        assert h["duplicates"] == 0
        if store == "kafka":
            positions = {p: info["position"] for p, info in h["partitions"].items()}
            assert sum(positions.values()) == EVENTS + 10, positions
    finally:
        w.stop()
        print(w.log_tail(80))
        w.cleanup(kafka_admin)
