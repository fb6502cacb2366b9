"""`recstream forget` against the real worker, Kafka and Redis: afterwards no trace of the id in
the worker's state, its next checkpoint, or Redis; older checkpoints are gone."""

from __future__ import annotations

import json
from typing import Any

from worker_harness import Worker, wait_for

SECRET = "forget-me-5e1c0d"


def test_forget_erases_the_user_from_model_redis_and_checkpoints(make_worker: Any) -> None:
    w: Worker = make_worker().start()
    w.wait_ready()
    w.send("items", [(f"i{n}".encode(), json.dumps({"item_id": f"i{n}", "title": f"Item {n}"})
                     .encode()) for n in range(8)])  # fmt: skip
    events = []
    for n in range(40):
        user = SECRET if n % 2 else f"other{n % 5}"
        body = {"event_id": f"e{n}", "user_id": user, "item_id": f"i{n % 8}", "type": "click"}
        events.append((user.encode(), json.dumps(body).encode()))
    w.send("events", events)
    w.wait_events(40)
    wait_for(lambda: w.redis.exists(w.key("recs", SECRET)), 30, "the user's list in Redis")
    checkpoints = w.models_dir / "checkpoints" / w.prefix
    wait_for(lambda: len(list(checkpoints.glob("ckpt-*"))) >= 1, 30, "a checkpoint")
    assert any(
        SECRET.encode() in f.read_bytes() for c in checkpoints.glob("ckpt-*") for f in c.iterdir()
    )

    result = w.run_cli("forget", SECRET)
    assert result.returncode == 0, result.stderr

    def forgotten() -> bool:
        status, body, _ = w.get(f"/recommendations/{SECRET}")
        return status == 200 and json.loads(body)["known_user"] is False

    wait_for(forgotten, 30, "the worker to forget the user")
    wait_for(
        lambda: not w.redis.exists(w.key("recs", SECRET), w.key("user", SECRET)),
        30,
        "the user's Redis keys to be deleted",
    )

    def only_clean_checkpoints() -> bool:
        found = list(checkpoints.glob("ckpt-*"))
        return len(found) == 1 and not any(
            SECRET.encode() in f.read_bytes() for f in found[0].iterdir()
        )

    wait_for(only_clean_checkpoints, 30, "one checkpoint, without the user")
    assert (checkpoints.stat().st_mode & 0o777) == 0o700
    _, metrics, _ = w.get("/metrics")
    assert b"recstream_users_forgotten_total 1.0" in metrics
    assert SECRET not in w.log_path.read_text(errors="replace")  # nor in the worker's log

    # The same id later is a new user.
    late = {"event_id": "late", "user_id": SECRET, "item_id": "i1", "type": "view"}
    w.send("events", [(SECRET.encode(), json.dumps(late).encode())])
    w.wait_events(41)
