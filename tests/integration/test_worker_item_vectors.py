"""Two real workers in one group (RECSTREAM_STATE_STORE=kafka): every catalogue item is
BERT-encoded once in the group, by the owner of its partition of the items topic, and its vector
reaches both workers through <prefix>.item-vectors; a restarted worker reloads the vectors from
the topic and encodes nothing (streams/catalogue_sync.py). Only items and vectors are used here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from worker_harness import Worker, wait_for

from recstream.events import Item

N_ITEMS = 40
GROUP_ENV = {
    "RECSTREAM_STATE_STORE": "kafka",
    "RECSTREAM_PARTITIONS": "4",
    "RECSTREAM_SESSION_TIMEOUT_S": "6",
}


def catalogue(n: int) -> list[Item]:
    return [
        Item(f"item-{k}", f"Product {k}", f"A fine product number {k}.", (f"cat-{k % 5}",))
        for k in range(n)
    ]


def two_workers(make_worker: Any) -> tuple[Worker, Worker]:
    """Same topics, app id (= consumer group) and Redis prefix; own models dirs and web ports."""
    w1: Worker = make_worker(**GROUP_ENV)
    shared = {f"RECSTREAM_{k}": w1.prefix for k in ("TOPIC_PREFIX", "APP_ID", "REDIS_PREFIX")}
    w2: Worker = make_worker(**GROUP_ENV, **shared)
    w2.prefix = w1.prefix  # its topic() and key() name the shared ones
    return w1, w2


def vectors_everywhere(workers: tuple[Worker, ...], n: int) -> list[dict]:
    def all_there() -> list[dict] | None:
        healths = [w.health() for w in workers]
        if all(h and h.get("item_vectors") == n for h in healths):
            return healths  # type: ignore[return-value]
        return None

    return wait_for(all_there, 90, f"{n} item vectors on every worker")


def test_each_item_is_encoded_once_and_a_restarted_worker_reloads_the_vectors(
    make_worker: Any,
) -> None:
    t0 = time.monotonic()
    w1, w2 = two_workers(make_worker)
    w1.start()
    w2.start()
    w1.wait_ready()
    w2.wait_ready()
    time.sleep(2)  # the group settles (both members assigned) before the catalogue arrives
    items = catalogue(N_ITEMS)
    w1.send("items", [(i.item_id.encode(), i.to_json()) for i in items])

    h1, h2 = vectors_everywhere((w1, w2), N_ITEMS)
    time.sleep(2)  # nothing more gets encoded late
    h1, h2 = w1.health(), w2.health()
    assert h1 and h2
    encoded = (h1["items_encoded"], h2["items_encoded"])
    assert sum(encoded) == N_ITEMS, encoded  # each item once in the group
    assert all(e > 0 for e in encoded), encoded  # both own partitions of the items topic
    for h in (h1, h2):  # what one did not encode came from the topic
        assert h["item_vectors_from_topic"] == N_ITEMS - h["items_encoded"], h
        assert h["items"] == N_ITEMS and h["catalogue_sync"]["catalogue_items"] == N_ITEMS
    records = w1.read("item-vectors")
    assert sorted(r.key.decode() for r in records) == sorted(i.item_id for i in items)
    body = json.loads(records[0].value)
    assert body["dim"] == 384 and body["text_hash"] and body["model"]
    # Redis item vectors: written by the owners, one per item
    assert all(w1.redis.exists(w1.key("item", i.item_id)) for i in items)

    # A deletion: a tombstone in item-vectors, the item leaves both catalogues.
    w1.send("items", [(b"item-0", None)])  # type: ignore[list-item]
    wait_for(
        lambda: all((h := w.health()) and h["items"] == N_ITEMS - 1 for w in (w1, w2)),
        30,
        "the deletion on both workers",
    )
    wait_for(
        lambda: any(r.key == b"item-0" and r.value is None for r in w1.read("item-vectors")),
        30,
        "item-0's tombstone",
    )

    # One worker stops (SIGTERM); the other takes its partitions and encodes nothing for them.
    before = w1.health()["items_encoded"]  # type: ignore[index]
    w2.stop()
    time.sleep(5)  # a clean stop leaves the group at once: w1 holds every partition now
    assert w1.health()["items_encoded"] == before  # type: ignore[index]
    # Started again with the same models dir: it reads the catalogue and vectors back.
    w2.start()
    w2.wait_ready()
    h2 = wait_for(
        lambda: (
            (h := w2.health())
            and h["items"] == N_ITEMS - 1
            and h["item_vectors"] >= N_ITEMS - 1
            and h
        ),
        90,
        "the restarted worker's catalogue and vectors",
    )
    time.sleep(3)
    h1, h2 = w1.health(), w2.health()
    assert h1 and h2
    assert h2["items_encoded"] == 0, h2
    # item-0's vector too when it was read before item-0's deletion (the two topics are read apart)
    assert h2["item_vectors_from_topic"] in (N_ITEMS - 1, N_ITEMS), h2
    assert h1["items_encoded"] == before
    assert len(w1.read("item-vectors")) == N_ITEMS + 1  # the 40 vectors and one tombstone
    print(f"two workers, {N_ITEMS} items, restart: {time.monotonic() - t0:.1f} s")
