"""The worker on the real broker against clients nobody here wrote, and against a hostile stream.

* kcat (librdkafka, Debian's ``kcat``) produces with every compression codec, headers, key-less
  messages and a tombstone: the worker learns them all and stays up.
* Thousands of hostile messages of many shapes, on both input topics, between valid ones: the
  worker stays up, every hostile message is on the DLQ exactly once, every valid event is learned
  exactly once.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kafka import KafkaProducer
from worker_harness import Worker, wait_for

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def kcat(w: Worker, topic: str, lines: list[str], *args: str) -> None:
    """Produce ``lines`` (one message each) with kcat; ``args``: its options (-z, -K, -H...)."""
    assert shutil.which("kcat"), "kcat not installed: `make stack` installs Debian's kcat"
    cmd = ["kcat", "-b", w.bootstrap, "-P", "-t", w.topic(topic), *args]
    result = subprocess.run(
        cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr}"


def test_kcat_with_every_codec_headers_keyless_and_a_tombstone(make_worker: Any) -> None:
    w: Worker = make_worker().start()
    w.wait_ready()
    items = [json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}) for n in range(6)]
    kcat(w, "items", [f"i{n}\t{body}" for n, body in enumerate(items)], "-K", "\t", "-z", "lz4")
    sent = 0
    for codec in CODECS:
        lines = []
        for n in range(4):
            user = f"u-{codec}-{n}"
            body = {"user_id": user, "item_id": f"i{n % 5}", "type": "click", "ts": 100.0 + n}
            lines.append(f"{user}\t{json.dumps(body)}")
        kcat(w, "events", lines, "-K", "\t", "-z", codec, "-H", "source=kcat", "-H", "trace=1")
        sent += len(lines)
    keyless = {"user_id": "u-keyless", "item_id": "i1", "type": "view"}
    kcat(w, "events", [json.dumps(keyless)], "-z", "snappy")  # no key: any partition
    sent += 1
    health = w.wait_events(sent)
    assert health["events_processed"] == sent and health["dlq_total"] == 0, health
    assert health["events_by_type"] == {"click": sent - 1, "view": 1}

    # A tombstone (a null value, -Z) for i0 on the compacted items topic deletes it.
    assert "i0" in ids(w, "u-new")
    kcat(w, "items", ["i0\t"], "-K", "\t", "-Z")
    wait_for(lambda: "i0" not in ids(w, "u-new"), 30, "the tombstone to delete i0")
    # A tombstone on the events topic is dead-lettered with its own code.
    kcat(w, "events", ["u-gone\t"], "-K", "\t", "-Z")
    dlq = wait_for(lambda: w.read_json("events.dlq"), 30, "the events tombstone's dead letter")
    assert [r["code"] for r in dlq] == ["tombstone"] and dlq[0]["topic"] == w.topic("events")
    assert w.proc is not None and w.proc.poll() is None, "the worker stopped"
    users = {r["user_id"] for r in w.read_json("recommendations")}
    assert {f"u-{c}-{n}" for c in CODECS for n in range(4)} | {"u-keyless"} <= users


def ids(w: Worker, user: str) -> list[str]:
    status, body, _ = w.get(f"/recommendations/{user}?k=50")
    assert status == 200, body
    return [it["item_id"] for it in json.loads(body)["items"]]


# --- thousands of hostile messages ------------------------------------------------------------

HOSTILE_EVENT_SHAPES = {
    "deep": lambda r: b'{"user_id": "u", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "ts_overflow": lambda r: (
        b'{"user_id": "u", "item_id": "i1", "type": "view", "ts": 1' + b"0" * 400 + b"}"
    ),
    "ts_digits": lambda r: (
        b'{"user_id": "u", "item_id": "i1", "type": "view", "ts": 1' + b"0" * 5000 + b"}"
    ),
    "surrogate_user": lambda r: b'{"user_id": "u\\ud83d", "item_id": "i1", "type": "view"}',
    "surrogate_item": lambda r: b'{"user_id": "u1", "item_id": "\\udc00x", "type": "click"}',
    "nul_id": lambda r: b'{"user_id": "a\\u0000b", "item_id": "i1", "type": "view"}',
    "newline_item": lambda r: b'{"user_id": "u1", "item_id": "i\\n1", "type": "view"}',
    "tombstone": lambda r: None,
    "empty": lambda r: b"",
    "not_utf8": lambda r: bytes(r.randrange(128, 256) for _ in range(r.randrange(1, 50))),
    "random_bytes": lambda r: b"{" + bytes(r.randrange(256) for _ in range(r.randrange(1, 80))),
    "array": lambda r: b"[1, 2, 3]",
    "number": lambda r: b"42",
    "string": lambda r: b'"user_id"',
    "null": lambda r: b"null",
    "nan_ts": lambda r: b'{"user_id": "u", "item_id": "i", "type": "view", "ts": NaN}',
    "negative_ts": lambda r: b'{"user_id": "u", "item_id": "i", "type": "view", "ts": -5}',
    "bool_id": lambda r: b'{"user_id": true, "item_id": "i", "type": "view"}',
    "long_id": lambda r: json.dumps({"user_id": "u" * 300, "item_id": "i", "type": "view"}),
    "unknown_type": lambda r: b'{"user_id": "u", "item_id": "i", "type": "DROP TABLE"}',
    "missing_item": lambda r: b'{"user_id": "u", "type": "view"}',
    "oversized": lambda r: json.dumps(
        {"user_id": "u", "item_id": "i", "type": "view", "context": {"p": "x" * 70_000}}
    ),
    "deep_context": lambda r: (
        b'{"user_id": "u", "item_id": "i", "type": "view", "context": '
        + b'{"a": '
        + b"[" * 50
        + b"]" * 50
        + b"}}"
    ),
    "object_session": lambda r: (
        b'{"user_id": "u", "item_id": "i", "type": "view", "context": {"session_id": {"$gt": ""}}}'
    ),
    "context_list": lambda r: b'{"user_id": "u", "item_id": "i", "type": "view", "context": []}',
    "bad_utf8_in_string": lambda r: b'{"user_id": "\xc3\x28", "item_id": "i", "type": "view"}',
}
HOSTILE_ITEM_SHAPES = {
    "deep": lambda r: b'{"item_id": "x", "t": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "ts_digits": lambda r: b'{"item_id": "x", "ts": 1' + b"0" * 5000 + b"}",
    "surrogate_id": lambda r: b'{"item_id": "x\\ud800", "title": "t"}',
    "surrogate_title": lambda r: b'{"item_id": "x", "title": "t\\udfff"}',
    "tab_id": lambda r: b'{"item_id": "a\\tb"}',
    "empty_key_tombstone": lambda r: None,
    "tags_not_strings": lambda r: b'{"item_id": "x", "tags": [1, {"a": 2}]}',
    "deleted_not_bool": lambda r: b'{"item_id": "x", "deleted": "yes"}',
    "not_json": lambda r: b"<item id='x'/>",
}


def _value(raw: bytes | str | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def hostile_stream(
    rng: random.Random, n_events: int, n_items: int, *, users: int, items: int, id_prefix: str
) -> Iterator[tuple[str, bytes | None, bytes | None, str | None]]:
    """``(topic, key, value, shape)``: every other message hostile (``shape`` names it; None for
    a valid one), first ``n_events`` on "events", then ``n_items`` on "items". Valid events go
    to ``users`` users and ``items`` catalogue items; the first hostile event has a 1 MB key.
    Shared with ``make chaos`` (bench/chaos_experiments.py)."""
    event_shapes, item_shapes = sorted(HOSTILE_EVENT_SHAPES), sorted(HOSTILE_ITEM_SHAPES)
    for n in range(n_events):
        if n % 2:
            shape = event_shapes[n // 2 % len(event_shapes)]
            key = b"k" * 1_000_000 if n == 1 else rng.choice([b"u1", b"evil", None])
            value = _value(HOSTILE_EVENT_SHAPES[shape](rng))
            key = key or (b"u1" if value is None else None)  # a client needs a key or a value
            yield "events", key, value, shape
        else:
            user = f"g{rng.randrange(users)}"
            body = {"event_id": f"{id_prefix}{n}", "user_id": user}
            body["item_id"] = f"i{rng.randrange(items)}"
            body["type"] = rng.choice(["view", "view", "click", "purchase"])
            yield "events", user.encode(), json.dumps(body).encode(), None
    for n in range(n_items):
        if n % 2:
            shape = item_shapes[n // 2 % len(item_shapes)]
            value = _value(HOSTILE_ITEM_SHAPES[shape](rng))
            yield "items", b"" if shape == "empty_key_tombstone" else b"x", value, shape
        else:
            value = json.dumps({"item_id": f"j{n}", "title": f"New item {n}"}).encode()
            yield "items", f"j{n}".encode(), value, None


def test_thousands_of_hostile_messages_each_dead_lettered_once_and_every_valid_event_learned(
    make_worker: Any,
) -> None:
    w: Worker = make_worker().start()
    w.wait_ready()
    rng = random.Random(9)
    producer: KafkaProducer = w.producer()
    n_items = 50
    for n in range(n_items):
        body = json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}).encode()
        producer.send(w.topic("items"), key=f"i{n}".encode(), value=body)

    hostile: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> shape
    futures: list[tuple[Any, str | None, str]] = []  # (future, shape or None if valid, topic)
    n_valid = 0
    stream = hostile_stream(rng, 4_000, 400, users=200, items=n_items, id_prefix="e")
    for topic, key, value, shape in stream:
        n_valid += topic == "events" and shape is None
        futures.append((producer.send(w.topic(topic), key=key, value=value), shape, topic))
    producer.flush(timeout=60)
    producer.close()
    for future, shape, _ in futures:
        meta = future.get(timeout=30)
        if shape is not None:
            hostile[(meta.topic, meta.partition, meta.offset)] = shape

    n_hostile = len(hostile)
    assert n_hostile == 2_200
    health = w.wait_events(n_valid, timeout=180)
    wait_for(lambda: w.health()["dlq_total"] >= n_hostile, 60, f"{n_hostile} dead letters")
    dlq = w.read_json("events.dlq")
    assert w.proc is not None and w.proc.poll() is None, "the worker stopped"
    where = [(r["topic"], r["partition"], r["offset"]) for r in dlq]
    assert len(where) == len(set(where)) == n_hostile, "a hostile message dead-lettered twice"
    assert set(where) == set(hostile), "a dead letter for a valid message, or one missing"
    # Every shape has its own precise code, and every record a reason.
    codes = Counter((hostile[(r["topic"], r["partition"], r["offset"])], r["code"]) for r in dlq)
    assert all(r["reason"] for r in dlq)
    assert "processing_error" not in {code for _, code in codes}, codes
    # Every valid event learned exactly once: counted once, no duplicate, nothing replayed.
    assert health["events_processed"] == n_valid and health["model_events"] == n_valid
    assert health["duplicates"] == 0 and health["dlq_total"] == n_hostile
    assert health["status"] == "ok" and not health["halted"]
    # The hostile ids never reached the catalogue: a new user sees only real items.
    shown = set(ids(w, "a-new-user"))
    assert shown and all(i.startswith(("i", "j")) and i[1:].isdigit() for i in shown), shown
