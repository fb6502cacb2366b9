"""A Recommender populated with N synthetic items (with content vectors) and a few active users.

Shared by the top-K benchmark (full ``recommend`` latency at 10k / 100k / 1M items). Vectors are
random 384-d unit vectors (the bundled MiniLM's width): recommend's cost depends on their shape,
not their values, and encoding 1M texts with BERT would take hours on this CPU.
"""

from __future__ import annotations

import numpy as np

from recstream.events import Event, Item
from recstream.recommender import Recommender

DIM = 384


def populated_recommender(
    n_items: int,
    seed: int = 0,
    n_users: int = 20,
    events_per_user: int = 30,
    background_events: int = 5_000,
) -> tuple[Recommender, list[str]]:
    """``(recommender, user_ids)``: every user has history, so every signal is computed."""
    rng = np.random.default_rng(seed)
    rec = Recommender(seed=seed)
    for start in range(0, n_items, 10_000):
        ids = [f"i{r}" for r in range(start, min(n_items, start + 10_000))]
        for item_id in ids:
            rec.upsert_item(Item(item_id, title=f"Item {item_id}"))
        rec.set_item_vectors(ids, rng.normal(size=(len(ids), DIM)).astype(np.float32))
    types = ("view", "view", "click", "purchase")
    n = 0
    # Background traffic: popularity, co-visitation pairs and MF item factors get trained.
    for _ in range(background_events):
        user = f"bg{rng.integers(0, 500)}"
        item = f"i{rng.integers(0, n_items)}"
        rec.learn(Event(f"e{n}", user, item, types[rng.integers(0, 4)], float(n)))
        n += 1
    users = [f"u{u}" for u in range(n_users)]
    for user in users:
        for _ in range(events_per_user):
            item = f"i{rng.integers(0, n_items)}"
            rec.learn(Event(f"e{n}", user, item, types[rng.integers(0, 4)], float(n)))
            n += 1
    return rec, users
