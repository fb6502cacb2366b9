"""Checkpoint and restore on the real stack: a worker SIGKILLed mid-stream and restarted loses no
event, double-counts none, and goes on from its learned state (models/README.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from worker_harness import ROOT, Worker, wait_for

from recstream.datasets import synthetic_stream
from recstream.events import Event


def latest_checkpoint(w: Worker) -> dict:
    root = w.models_dir / "checkpoints" / w.prefix
    newest = sorted(root.glob("ckpt-*"))[-1]
    return json.loads((newest / "offsets.json").read_text())


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    make_worker: Any, kafka_admin: Any
) -> None:
    # Checkpoints every 6 s while Faust commits its own offsets every 2.8 s: killed 4 s after a
    # checkpoint, the group's committed offsets are ahead of the checkpoint's -- the case where
    # resuming from Faust's offsets would silently lose the events in between.
    w: Worker = make_worker(RECSTREAM_CHECKPOINT_INTERVAL_S="6").start()
    w.wait_ready()
    users, n_items, n_events = 50, 100, 3000
    _, events = synthetic_stream(users, n_items, n_events, 21)
    producer = subprocess.Popen(
        [sys.executable, "-m", "recstream.cli", "produce", "--synthetic", "--users", str(users),
         "--items", str(n_items), "--events", str(n_events), "--seed", "21", "--rate", "150"],
        cwd=ROOT, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        first = wait_for(
            lambda: (h := w.health()) and h["last_checkpoint"] and h["events_processed"] > 0 and h,
            60,
            "a first checkpoint with events in it",
        )["last_checkpoint"]
        time.sleep(max(0.0, first["at"] + 4.0 - time.time()))
        before_kill = w.health()
        assert w.kill(signal.SIGKILL) == -signal.SIGKILL
        ckpt = latest_checkpoint(w)
        assert ckpt["events_processed"] < before_kill["events_processed"] < n_events
        committed = kafka_admin.list_group_offsets(w.prefix)[w.prefix]
        ahead = {
            (tp.topic, tp.partition): (meta.offset, ckpt["offsets"][tp.topic][str(tp.partition)])
            for tp, meta in committed.items()
            if tp.topic == w.topic("events")
            and meta.offset > ckpt["offsets"][tp.topic][str(tp.partition)]
        }
        assert ahead, f"Faust's committed offsets are not ahead of the checkpoint: {committed}"

        restarted = w.start().wait_ready()
        # The state is the checkpoint's, not empty and not what was in memory at the kill.
        assert restarted["events_processed"] >= ckpt["events_processed"]
        assert restarted["model_events"] >= ckpt["events_processed"]
        _, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err
    finally:
        if producer.poll() is None:
            producer.kill()
    health = w.wait_events(n_events)
    # Every distinct event counted once, learned once: nothing lost in the kill, nothing doubled
    # by the replay from the checkpoint's offsets.
    assert health["events_processed"] == n_events
    assert health["model_events"] == n_events
    assert health["duplicates"] == 0 and health["dlq_total"] == 0
    by_type: dict[str, int] = {}
    for e in events:
        by_type[e.type] = by_type.get(e.type, 0) + 1
    assert health["events_by_type"] == by_type
    # Outputs are at least once: every user's list reflects their last event (a replayed
    # event's list may be published twice; earlier events of a batch fold into a later list).
    triggers = {r["trigger_event_id"] for r in w.read_json("recommendations")}
    assert triggers <= {e.event_id for e in events}
    assert set({e.user_id: e.event_id for e in events}.values()) <= triggers

    # Recommendations continue from the learned state: a user's purchases from before the kill
    # (restored from the checkpoint) are still excluded, and the model keeps counting.
    early = next(e for e in events[:500] if e.type == "purchase")
    bought = {e.item_id for e in events if e.user_id == early.user_id and e.type == "purchase"}
    w.send(
        "events",
        [(early.user_id.encode(), Event("after", early.user_id, "i1", "view", 1e10).to_json())],
    )
    rec = wait_for(
        lambda: next(
            (r for r in w.read_json("recommendations") if r["trigger_event_id"] == "after"), None
        ),
        60,
        "a recommendation after the restart",
    )
    assert rec["items"] and not {it["item_id"] for it in rec["items"]} & bought
    assert w.wait_events(n_events + 1)["model_events"] == n_events + 1

    # A clean stop checkpoints everything: the next start would replay nothing.
    assert w.kill(signal.SIGTERM) == 0
    assert latest_checkpoint(w)["events_processed"] == n_events + 1
