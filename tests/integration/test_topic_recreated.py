"""Topics deleted and re-created while the worker runs: the new events are learned, none skipped,
and the worker says loudly what it did (a WARNING and recstream_offset_resets_total)."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import pytest
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from worker_harness import Worker, wait_for


def events(start: int, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for k in range(start, start + n):
        user = f"u{k % 17}"
        body = {"event_id": f"e{k}", "user_id": user, "item_id": f"i{k % 9}", "type": "view"}
        out.append((user.encode(), json.dumps(body).encode()))
    return out


def resets(w: Worker) -> dict[str, float]:
    _, body, _ = w.get("/metrics")
    found = re.findall(rb'recstream_offset_resets_total\{reason="(\w+)"\} (\S+)', body)
    return {reason.decode(): float(value) for reason, value in found}


@pytest.mark.parametrize("new_events", [120, 500], ids=["fewer-than-before", "more-than-before"])
def test_a_recreated_events_topic_is_read_from_its_start(
    make_worker: Any, kafka_admin, new_events: int
) -> None:
    w: Worker = make_worker(RECSTREAM_METADATA_MAX_AGE_S="3").start()
    w.wait_ready()
    w.send(
        "items", [(f"i{n}".encode(), json.dumps({"item_id": f"i{n}"}).encode()) for n in range(9)]
    )
    w.send("events", events(0, 300))
    w.wait_events(300)
    assert resets(w) == {}

    topic = w.topic("events")
    kafka_admin.delete_topics([topic])
    wait_for(lambda: topic not in kafka_admin.list_topics(), 60, "the topic deletion")
    # The broker may have auto-created it already: the same case for the worker.
    with contextlib.suppress(TopicAlreadyExistsError):
        kafka_admin.create_topics([NewTopic(topic, 2, 1)])
    # Fewer events than the old position: a consumer at the old offsets would skip them all;
    # more: it would read on from there, skipping the new log's first messages, with no error.
    w.send("events", events(300, new_events))
    health = w.wait_events(300 + new_events, timeout=120)
    # Every event learned once. What the consumer read from the old offset before the new
    # topic id was noticed is read again from 0 and caught by its id (counted as duplicates).
    assert health["events_processed"] == health["model_events"] == 300 + new_events, health
    assert health["duplicates"] <= max(0, new_events - 300), health
    assert health["replayed_skipped"] == 0, health
    assert sum(resets(w).values()) >= 1, resets(w)
    assert set(resets(w)) <= {"topic_recreated", "beyond_log_end"}
    log = w.log_path.read_text(errors="replace")
    assert "WARNING" in log and "offsets: " in log and topic in log
