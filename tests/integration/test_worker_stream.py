"""The worker on the real stack: recommendations on Kafka and in Redis, the dead-letter topic, and
content-based cold start. Each test runs its own worker process with its own topics and keys."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from worker_harness import Worker, wait_for

from recstream.datasets import synthetic_stream
from recstream.events import Event, Item


def test_synthetic_stream_recommends_to_every_user_topic_and_redis(make_worker: Any) -> None:
    w: Worker = make_worker().start()
    w.wait_ready()
    users, n_items, n_events = 40, 120, 1500
    result = w.run_cli(
        "produce", "--synthetic", "--users", str(users), "--items", str(n_items),
        "--events", str(n_events), "--seed", "11",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{n_events} events" in result.stderr
    health = w.wait_events(n_events)
    assert health["events_processed"] == n_events and health["dlq_total"] == 0

    # Replay the stream to know, at every event, what each user had purchased so far.
    _, events = synthetic_stream(users, n_items, n_events, 11)
    position = {e.event_id: n for n, e in enumerate(events)}
    purchases: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for n, e in enumerate(events):
        if e.type == "purchase":
            purchases[e.user_id].append((n, e.item_id))

    recs = w.read_json("recommendations")
    # One list per user per batch (RECSTREAM_BATCH_MAX): never more lists than events, never
    # two for one event, and each user's lists follow their events in stream order...
    triggers = [rec["trigger_event_id"] for rec in recs]
    assert len(recs) <= n_events and len(set(triggers)) == len(triggers)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for rec in recs:
        by_user[rec["user_id"]].append(rec)
        assert rec["trigger_event_id"] in position
        assert rec["model_version"] and rec["latency_ms"] >= 0 and rec["generated_at"] > 0
        assert len(rec["items"]) == 10
        assert all(it["reason"] for it in rec["items"]), rec
        at = position[rec["trigger_event_id"]]
        bought = {item for n, item in purchases[rec["user_id"]] if n <= at}
        shown = {it["item_id"] for it in rec["items"]}
        assert not shown & bought, f"{rec['user_id']} was recommended purchased {shown & bought}"
    assert set(by_user) == {e.user_id for e in events}
    last_event = {e.user_id: e.event_id for e in events}
    for user, lists in by_user.items():
        at = [position[rec["trigger_event_id"]] for rec in lists]
        assert at == sorted(at), user
        # ...and the last list reflects the user's last event: no event is left unreflected.
        assert lists[-1]["trigger_event_id"] == last_event[user], user

    for user in by_user:
        raw = w.redis.get(w.key("recs", user))
        assert raw is not None, f"no Redis recommendations for {user}"
        stored = json.loads(raw)
        assert stored["user_id"] == user and all(it["reason"] for it in stored["items"])
        assert not {it["item_id"] for it in stored["items"]} & {i for _, i in purchases[user]}
        assert 0 < w.redis.ttl(w.key("recs", user)) <= 7 * 24 * 3600
    # Content vectors: every catalogue item in Redis, and the users' profiles once they exist.
    wait_for(
        lambda: len(list(w.redis.scan_iter(match=w.key("item", "*"), count=1000))) == n_items,
        60,
        "every item vector in Redis",
    )
    vec = w.redis.hgetall(w.key("item", "i0"))
    assert int(vec[b"dim"]) == 384 and len(vec[b"vec"]) == 384 * 4
    # A profile is the mean of the vectors of the user's items *at event time*: when the encoder
    # finished after the last event, no profile exists yet. The next event of a user writes one.
    user = events[0].user_id
    follow_up = Event("follow-up", user, "i0", "view", events[-1].ts + 1)
    w.send("events", [(user.encode(), follow_up.to_json())])
    w.wait_events(n_events + 1)
    wait_for(lambda: w.redis.hgetall(w.key("user", user)), 30, f"{user}'s profile in Redis")
    profile = w.redis.hgetall(w.key("user", user))
    assert int(profile[b"dim"]) == 384 and len(profile[b"vec"]) == 384 * 4

    # `recstream consume` shows them, one readable line each.
    shown = w.run_cli("consume", "--from-beginning", "--user", user, "--limit", "3")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 3 and all(f" {user} → " in ln and "10 items" in ln for ln in lines)

    snapshots = w.read_json("metrics")
    assert snapshots, "no metrics snapshot on the metrics topic"
    last = snapshots[-1]
    assert last["events_by_type"] and last["latency_ms"]["p50"] is not None
    assert {"hr@10", "ndcg@10", "evaluated"} <= set(last["online"])
    assert 0 < last["coverage"] <= 1


def test_malformed_events_go_to_the_dlq_and_good_ones_are_processed(make_worker: Any) -> None:
    w: Worker = make_worker(RECSTREAM_MAX_EVENT_BYTES="2048").start()
    w.wait_ready()

    def good(user: str, item: str) -> tuple[bytes, bytes]:
        return user.encode(), json.dumps(
            {"user_id": user, "item_id": item, "type": "view"}
        ).encode()

    bad = {
        "bad_json": b'{"user_id": "u1", "item_id": ',
        "missing_field": b'{"user_id": "u1", "type": "click"}',
        "unknown_type": b'{"user_id": "u1", "item_id": "i1", "type": "like"}',
        "not_utf8": b'{"user_id": "\xff\xfe", "item_id": "i1", "type": "view"}',
        "oversized": json.dumps({"user_id": "u1", "item_id": "i1", "type": "view",
                                 "context": {"pad": "x" * 5000}}).encode(),
    }  # fmt: skip
    messages = [good("g0", "i1")]
    for n, raw in enumerate(bad.values()):
        messages += [(b"u1", raw), good(f"g{n + 1}", f"i{n}")]
    w.send("events", messages)  # all keyed u1/gN: the bad ones sit between good ones

    dlq = wait_for(lambda: len(r := w.read_json("events.dlq")) >= len(bad) and r, 60, "DLQ")
    assert sorted(r["code"] for r in dlq) == sorted(bad)
    for record in dlq:
        raw = bad[record["code"]]
        assert record["reason"] and record["topic"] == w.topic("events")
        assert isinstance(record["partition"], int) and isinstance(record["offset"], int)
        if record["code"] == "not_utf8":
            assert record["raw_encoding"] == "base64"
        elif record["code"] == "oversized":
            assert record["raw_truncated"] and record["raw_bytes"] == len(raw)
        else:
            assert record["raw"] == raw.decode()
    health = w.wait_events(len(bad) + 1)
    assert health["events_processed"] == len(bad) + 1 and health["dlq_total"] == len(bad)
    assert {r["user_id"] for r in w.read_json("recommendations")} == {
        f"g{n}" for n in range(len(bad) + 1)
    }
    _, metrics, _ = w.get("/metrics")
    for code in bad:
        assert f'recstream_dlq_total{{reason="{code}"}} 1.0' in metrics.decode()
    assert w.proc is not None and w.proc.poll() is None  # the worker kept going


def test_text_only_item_is_recommended_before_any_click(make_worker: Any) -> None:
    w: Worker = make_worker().start()
    w.wait_ready()
    scifi = [
        Item("s1", "Star Fleet", "Space battle between starships near a distant galaxy.",
             ("sci-fi",), ("space", "starship")),
        Item("s2", "Android Dawn", "A robot android awakens on an orbital space station.",
             ("sci-fi",), ("robot", "space")),
        Item("s3", "Nebula Run", "Smugglers race a starship through a nebula in deep space.",
             ("sci-fi",), ("space", "starship")),
        Item("s4", "Orbit", "Astronauts stranded in orbit fight to return from space.",
             ("sci-fi",), ("space", "astronaut")),
    ]  # fmt: skip
    cities = ["Paris", "Rome", "Vienna", "Lisbon", "Prague", "Venice", "Seville", "Bruges",
              "Verona", "Nice", "Porto", "Florence"]  # fmt: skip
    romance = [
        Item(f"r{n}", f"Love in {city}", f"A romantic comedy: strangers fall in love in {city}.",
             ("romance",), ("love", "wedding"))
        for n, city in enumerate(cities)
    ]  # fmt: skip
    hits, quiet = romance[:3], romance[3:]  # three popular romances; nobody touched the others
    w.send("items", [(i.item_id.encode(), i.to_json()) for i in scifi + romance])
    events: list[Event] = []
    for u in range(8):  # everyone else buys the three hits
        for n, item in enumerate(hits):
            events.append(Event(f"o{u}-{n}", f"o{u}", item.item_id, "purchase", 10.0 + n))
    for n, item in enumerate(scifi[:3]):  # the fan buys sci-fi
        events.append(Event(f"fan-{n}", "fan", item.item_id, "purchase", 100.0 + n))
    w.send("events", [(e.user_id.encode(), e.to_json()) for e in events])
    w.wait_events(len(events))
    n_items = len(scifi) + len(romance)
    wait_for(lambda: w.health()["item_vectors"] == n_items, 60, "all vectors")

    new = Item("s-new", "Galaxy Starship", "A starship crew explores a far galaxy in deep space.",
               ("sci-fi",), ("space", "starship"))  # fmt: skip
    w.send("items", [(b"s-new", new.to_json())])
    wait_for(lambda: w.health()["item_vectors"] == n_items + 1, 60, "the new item's vector")
    assert w.redis.exists(w.key("item", "s-new"))

    # The fan's next event: its recommendation must surface the never-clicked new item.
    w.send("events", [(b"fan", Event("fan-next", "fan", "s1", "view", 200.0).to_json())])
    rec = wait_for(
        lambda: next(
            (r for r in w.read_json("recommendations") if r["trigger_event_id"] == "fan-next"),
            None,
        ),
        60,
        "the fan's recommendation",
    )
    ids = [it["item_id"] for it in rec["items"]]
    assert "s-new" in ids, rec
    reason = rec["items"][ids.index("s-new")]["reason"]
    assert reason.startswith("similar to s"), reason  # a content reason, naming a sci-fi title
    # Text is what lifts it: it ranks above every catalogue item that has no events either.
    assert all(ids.index("s-new") < ids.index(i.item_id) for i in quiet if i.item_id in ids)
    # The web endpoint agrees, from the in-memory model.
    status, body, _ = w.get("/recommendations/fan?k=10")
    assert status == 200 and "s-new" in [it["item_id"] for it in json.loads(body)["items"]]
    assert all(e.item_id != "s-new" for e in events)  # nobody ever touched it


def test_metrics_endpoint_exposes_documented_metrics_and_promtool_accepts_them(
    make_worker: Any,
) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool not found (the prometheus package provides it: make stack)"
    w: Worker = make_worker().start()
    w.wait_ready()
    result = w.run_cli(
        "produce", "--synthetic", "--users", "10", "--items", "30", "--events", "200"
    )
    assert result.returncode == 0, result.stderr
    w.wait_events(200)
    wait_for(lambda: w.health()["item_vectors"] == 30, 60, "item vectors")
    # The gauges are refreshed by the metrics timer (1 s here), which then publishes its snapshot:
    # a snapshot that has seen all 200 events means the gauges have too.
    wait_for(
        lambda: any(s["events_processed"] == 200 for s in w.read_json("metrics")),
        30,
        "a metrics snapshot after the stream",
    )
    status, body, content_type = w.get("/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    text = body.decode()
    for name in (
        "recstream_events_total{type=",
        "recstream_dlq_total",
        "recstream_event_to_recommendation_seconds_bucket{le=",
        "recstream_event_to_recommendation_seconds_count 200.0",
        "recstream_model_updates_total 200.0",
        "recstream_items_encoded_total 30.0",
        "recstream_encode_batch_size_bucket",
        "recstream_encode_batch_seconds_bucket",
        "recstream_online_hit_rate ",
        "recstream_redis_errors_total 0.0",
        "recstream_consumer_lag{partition=",
    ):
        assert name in text, f"{name!r} missing from /metrics"
    snapshot = [s for s in w.read_json("metrics") if s["events_processed"] == 200][-1]
    gauge = next(ln for ln in text.splitlines() if ln.startswith("recstream_online_hit_rate "))
    assert snapshot["online"]["evaluated"] > 0
    assert float(gauge.split()[1]) == pytest.approx(snapshot["online"]["hr@10"], abs=1e-3)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
