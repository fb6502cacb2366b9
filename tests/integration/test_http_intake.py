"""POST /events against a live worker: accepted events reach Kafka and are learned; a bad body
gets a 400 with the DLQ's reason codes and nothing is produced; the token guards it too."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from worker_harness import Worker, wait_for

TOKEN = "intake-token-for-tests"


def post(w: Worker, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}/events", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_post_events_validates_like_kafka_and_produces_keyed_by_user(
    make_worker: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    w: Worker = make_worker(RECSTREAM_WEB_TOKEN_FILE=str(token_file)).start()

    def health() -> dict:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{w.port}/healthz")
            req.add_header("Authorization", f"Bearer {TOKEN}")
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    wait_for(lambda: health().get("ready"), 120, "the worker to be ready")
    items = [json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}).encode() for n in range(5)]
    w.send("items", [(f"i{n}".encode(), body) for n, body in enumerate(items)])

    events = [{"user_id": f"u{n % 3}", "item_id": f"i{n % 5}", "type": "click"} for n in range(9)]
    assert post(w, json.dumps(events).encode(), token=None)[0] == 401
    status, body = post(w, json.dumps(events).encode())
    assert (status, body) == (202, {"accepted": 9})
    status, body = post(w, json.dumps(events[0]).encode())  # one object
    assert status == 202 and body["accepted"] == 1

    bad = [events[1], {"user_id": "u1", "item_id": "i1", "type": "like"}]
    status, body = post(w, json.dumps(bad).encode())
    assert status == 400 and body["code"] == "unknown_type" and body["errors"][0]["index"] == 1
    assert post(w, b"{not json")[1]["code"] == "bad_json"
    assert post(w, b"x" * (1024 * 1024 + 1))[0] == 413

    # The 10 accepted events are on the topic, keyed by user, and learned; nothing of the
    # refused requests was produced (all-or-nothing).
    records = wait_for(lambda: len(r := w.read("events")) >= 10 and r, 30, "the events on Kafka")
    assert len(records) == 10
    assert all(json.loads(r.value)["user_id"].encode() == r.key for r in records)
    final = wait_for(lambda: (h := health()).get("events_processed", 0) >= 10 and h, 60, "learning")
    assert final["events_processed"] == 10 and final["dlq_total"] == 0
    _, metrics, _ = w.get("/healthz")  # 401 without the token: the guard covers every route
    assert b"unauthorized" in metrics
