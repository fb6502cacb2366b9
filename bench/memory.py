"""Memory per 100k users and per 100k items: RSS growth of a fresh process, per measurement.

Each measurement runs in its own interpreter so nothing else (torch, a previous measurement,
freed-but-not-returned heap) is in its RSS. Inputs (events, items) are built *before* the first
RSS reading, so only what the Recommender keeps counts; a warm-up of 1,000 users / items first
makes lazily created structures exist before the "before" reading.

* users: ``learn`` ``events_per_user`` events for each of N new users over a fixed catalogue
  whose items have 384-d vectors (as in the worker once the encoder has run), so every user
  carries a content profile; the child checks that the measured users have one;
* items: ``upsert_item`` N new items plus ``set_item_vectors`` with 384-d vectors (the bundled
  MiniLM's width), given in batches of 1,000 as the encoder timer would.

The figures are scaled to "per 100k" when N differs (``--quick``).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from typing import Any

from bench.common import ROOT, rss_mb

DIM = 384  # the bundled all-MiniLM-L6-v2 encoder's output width
WARMUP = 1_000


def _catalogue(n: int, offset: int = 0) -> list[Any]:
    from recstream.events import Item

    return [
        Item(
            item_id=f"i{offset + r}",
            title=f"Item {offset + r}",
            description="A synthetic item for the memory benchmark.",
            categories=("bench",),
            tags=("memory",),
        )
        for r in range(n)
    ]


def _users_child(n_users: int, events_per_user: int, n_items: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from recstream.events import Event
    from recstream.recommender import Recommender

    rng = np.random.default_rng(seed)
    rec = Recommender(seed=seed)
    catalogue = _catalogue(n_items)
    for item in catalogue:
        rec.upsert_item(item)
    # With vectors every learned event folds into the user's content profile: without them
    # the per-user figure would leave out the 384-float profile BENCHMARKS.md says it holds.
    vectors = rng.normal(size=(n_items, DIM)).astype(np.float32)
    rec.set_item_vectors([i.item_id for i in catalogue], vectors)
    del vectors  # the Recommender keeps its own copy; allocated before the first reading anyway
    types = ("view", "click", "purchase")

    def events_for(users: range) -> list[Event]:
        items = rng.integers(0, n_items, size=(len(users), events_per_user))
        kinds = rng.integers(0, 3, size=(len(users), events_per_user))
        return [
            Event(f"e{u}-{j}", f"u{u}", f"i{items[n, j]}", types[kinds[n, j]], float(u))
            for n, u in enumerate(users)
            for j in range(events_per_user)
        ]

    warmup = events_for(range(WARMUP))
    measured = events_for(range(WARMUP, WARMUP + n_users))
    for event in warmup:
        rec.learn(event)
    gc.collect()
    before = rss_mb()
    for event in measured:
        rec.learn(event)
    gc.collect()
    after = rss_mb()
    # Every measured user must hold a content profile, or the figure is not what it claims.
    sample = [f"u{u}" for u in range(WARMUP, WARMUP + n_users, max(1, n_users // 100))]
    with_profile = sum(rec.user_profile(user) is not None for user in sample)
    if with_profile != len(sample):
        raise RuntimeError(f"{len(sample) - with_profile} of {len(sample)} users lack a profile")
    return {
        "before_mb": before,
        "after_mb": after,
        "n": n_users,
        "users_with_profile_sampled": f"{with_profile}/{len(sample)}",
        "profile_bytes": int(rec.user_profile(sample[0]).nbytes),
    }


def _items_child(n_items: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from recstream.recommender import Recommender

    rng = np.random.default_rng(seed)
    rec = Recommender(seed=seed)
    warmup = _catalogue(WARMUP)
    measured = _catalogue(n_items, offset=WARMUP)

    def add(items: list[Any]) -> None:
        for start in range(0, len(items), 1_000):
            batch = items[start : start + 1_000]
            for item in batch:
                rec.upsert_item(item)
            # Vectors are made per batch and dropped: only the Recommender's copy stays resident.
            vectors = rng.normal(size=(len(batch), DIM)).astype(np.float32)
            rec.set_item_vectors([i.item_id for i in batch], vectors)

    add(warmup)
    gc.collect()
    before = rss_mb()
    add(measured)
    gc.collect()
    after = rss_mb()
    return {
        "before_mb": before,
        "after_mb": after,
        "n": n_items,
        "vector_floor_mb": n_items * DIM * 4 / 2**20,
    }


def _in_subprocess(kind: str, **params: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.memory", json.dumps({"kind": kind, **params})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory/{kind} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    n_users: int = 100_000,
    n_items: int = 100_000,
    events_per_user: int = 3,
    catalogue: int = 10_000,
    seed: int = 0,
    quick: bool = False,
) -> dict[str, Any]:
    users = _in_subprocess(
        "users", n_users=n_users, events_per_user=events_per_user, n_items=catalogue, seed=seed
    )
    items = _in_subprocess("items", n_items=n_items, seed=seed)
    per_user = (users["after_mb"] - users["before_mb"]) * 100_000 / n_users
    per_item = (items["after_mb"] - items["before_mb"]) * 100_000 / n_items
    return {
        "rss_mb_per_100k_users": round(per_user, 1),
        "rss_mb_per_100k_items": round(per_item, 1),
        # 100k x 384 float32 is 146.5 MiB: the floor any exact in-memory vector index pays.
        "item_vectors_floor_mb_per_100k": round(100_000 * DIM * 4 / 2**20, 1),
        "users": {
            **users,
            "events_per_user": events_per_user,
            "catalogue": catalogue,
            "item_vector_dim": DIM,
        },
        "items": {**items, "dim": DIM},
    }


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    kind = args.pop("kind")
    child = {"users": _users_child, "items": _items_child}[kind]
    print(json.dumps(child(**args)))
