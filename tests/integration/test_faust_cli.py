"""``faust -A streams.app worker -l info`` (Faust's own command, the virtualenv's ``faust``
script) starts a working worker: the app names the agents to import (``autodiscover``) and the
worker class (``Worker``), whose first start does what ``recstream worker`` does before its event
loop (streams/faust_worker.py). Checked end to end on the session's broker and Redis: the event is
learned, and its list is published to Kafka and Redis; and a second worker on the same checkpoint
folder is refused."""

from __future__ import annotations

import json
from typing import Any

from worker_harness import FAUST_WORKER, Worker, free_port, wait_for


def test_faust_worker_command_learns_and_recommends(make_worker: Any) -> None:
    w: Worker = make_worker(command=FAUST_WORKER).start()
    w.wait_ready()
    # A second worker of the same app and models dir is refused at once (before Kafka or the
    # encoder): two writers of one checkpoint folder would corrupt it (recstream/worker_slots.py).
    second = w.run_cli("worker", "--web-port", str(free_port()), timeout=60)
    assert second.returncode == 1, second.stderr
    assert w.proc is not None
    assert f"is in use by another worker (pid {w.proc.pid})" in second.stderr, second.stderr
    w.send(
        "items",
        [
            (f"i{n}".encode(), json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}).encode())
            for n in range(3)
        ],
    )
    # The catalogue first (only the items topic makes an item recommendable), then the events.
    wait_for(lambda: (w.health() or {}).get("items", 0) >= 3, 60, "the catalogue")
    event = {"event_id": "e-1", "user_id": "u1", "item_id": "i0", "type": "view"}
    w.send("events", [(b"u1", json.dumps(event).encode())])
    health = w.wait_events(1, timeout=60)
    assert health["events_processed"] == 1 and health["dlq_total"] == 0

    recs = wait_for(lambda: w.read_json("recommendations"), 60, "a published recommendation")
    assert [r["trigger_event_id"] for r in recs] == ["e-1"]
    assert recs[0]["user_id"] == "u1" and recs[0]["items"]
    stored = wait_for(lambda: w.redis.get(w.key("recs", "u1")), 30, "the list in Redis")
    assert json.loads(stored)["trigger_event_id"] == "e-1"

    log = w.log_path.read_text(errors="replace")
    assert "ƒaµS†" in log  # Faust's own banner: really its command, not `recstream worker`
    assert "slot 0," in log  # recstream's start-up ran (streams/worker.py start_up)
    w.stop()
    assert w.proc is not None and w.proc.returncode == 0, w.log_tail()
