"""Soak: the core Recommender's memory over a long stream, with and without the bounds.

A worker runs for months, so its memory has to level off: this benchmark streams ``events``
synthetic events from ``users`` distinct users over an ``items`` catalogue (Zipf-like item
popularity, 384-d item vectors as the bundled MiniLM gives) through
:class:`recstream.recommender.Recommender` twice, each run in a fresh interpreter:

* **bounded** — the caps of :class:`~recstream.recommender.RecommenderConfig`
  (``covisit_max_stored``, ``user_max_seen``, ``user_max_purchased``) and a TTL loop: every
  ``evict_every`` events the users idle for ``ttl_events`` events
  (:meth:`~recstream.recommender.Recommender.idle_users`) are exported, pickled into a plain dict
  that stands in for the partition's state store (in production: a compacted Kafka topic, out of
  the worker's memory) and dropped; a user who comes back is imported from it first;
* **unbounded** — no caps, no eviction: every user ever seen stays.

RSS (``/proc/self/status``) is sampled every ``sample_every`` events. The stand-in store lives in
the same process, so its bytes (``sys.getsizeof`` of every key and pickled value, plus the dict)
are reported and subtracted: ``model_mb`` is what the worker itself would hold.

The stream: half of the events are a new user's first; the others return to a user who arrived
earlier, most within a few dozen arrivals (a session), 15% after a long gap (mean 30,000
arrivals, past the TTL: they are re-imported). Types are 70% views, 20% clicks, 10% purchases.
Every ``recommend_every``-th event also asks for that user's top 10.

    .venv/bin/python -m bench.soak                     # 1M events: table, PNG, JSON
    .venv/bin/python -m bench.soak --events 200000     # a shorter soak
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, rss_mb

DIM = 384  # the bundled all-MiniLM-L6-v2 encoder's output width
TYPES = ("view", "click", "purchase")
PNG = ROOT / "docs" / "soak.png"


def make_stream(
    n_events: int, n_users: int, n_items: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, type)`` index arrays of the stream described in the module docstring."""
    if not 0 < n_users <= n_events:
        raise ValueError(f"need 0 < users <= events, got {n_users} users, {n_events} events")
    rng = np.random.default_rng(seed)
    new = np.zeros(n_events, dtype=bool)
    new[0] = True
    new[1 + rng.choice(n_events - 1, n_users - 1, replace=False)] = True
    arrived = np.cumsum(new) - 1  # the newest user so far
    back = np.where(
        rng.random(n_events) < 0.85,
        rng.geometric(1 / 30, n_events),  # within the session
        rng.geometric(1 / 30_000, n_events),  # a return visit, long after
    )
    users = np.where(new, arrived, np.maximum(arrived - back, 0))
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.permutation(n_items)[rng.choice(n_items, n_events, p=weights / weights.sum())]
    types = rng.choice(3, n_events, p=[0.7, 0.2, 0.1])
    return users.astype(np.int64), items.astype(np.int64), types.astype(np.int8)


def _soak_child(
    mode: str,
    events: int,
    users: int,
    items: int,
    sample_every: int,
    ttl_events: int,
    evict_every: int,
    recommend_every: int,
    config: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    from recstream.events import Event, Item
    from recstream.recommender import Recommender, RecommenderConfig

    bounded = mode == "bounded"
    user_idx, item_idx, type_idx = make_stream(events, users, items, seed)
    item_ids = [f"i{r}" for r in range(items)]
    rec = Recommender(RecommenderConfig(**config), seed=seed)
    rng = np.random.default_rng(seed + 1)
    for start in range(0, items, 1_000):
        batch = item_ids[start : start + 1_000]
        for item_id in batch:
            rec.upsert_item(Item(item_id, title=f"Item {item_id}"))
        rec.set_item_vectors(batch, rng.normal(size=(len(batch), DIM)).astype(np.float32))

    store: dict[str, bytes] = {}  # the partition's state store, standing in
    store_bytes = 0  # keys and values held by it (the dict's own table is added when sampled)
    counts = {"exported": 0, "imported": 0, "recommended": 0}
    timings = {"learn_s": 0.0, "recommend_s": 0.0, "evict_s": 0.0, "import_s": 0.0}
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()

    def sample(n: int) -> None:
        rss = rss_mb()
        held = (store_bytes + sys.getsizeof(store)) / 2**20
        curve.append(
            {
                "events": n,
                "rss_mb": round(rss, 1),
                "store_mb": round(held, 1),
                "model_mb": round(rss - held, 1),
                "users_in_memory": len(rec.users),
                "users_in_store": len(store),
                "covisit_pairs": rec.covisit.n_pairs,
                "mf_user_rows": int(rec.mf._P.shape[0]),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )

    sample(0)
    for n in range(events):
        user_id = f"u{user_idx[n]}"
        if bounded and user_id in store:  # back after an eviction: its state first
            t = time.perf_counter()
            blob = store.pop(user_id)
            store_bytes -= sys.getsizeof(blob) + sys.getsizeof(user_id)
            rec.import_user(user_id, pickle.loads(blob))
            counts["imported"] += 1
            timings["import_s"] += time.perf_counter() - t
        t = time.perf_counter()
        item_id = item_ids[item_idx[n]]
        rec.learn(Event(f"e{n}", user_id, item_id, TYPES[type_idx[n]], n * 0.01))
        timings["learn_s"] += time.perf_counter() - t
        if recommend_every and n % recommend_every == 0:
            t = time.perf_counter()
            rec.recommend(user_id, 10)
            counts["recommended"] += 1
            timings["recommend_s"] += time.perf_counter() - t
        if bounded and (n + 1) % evict_every == 0:
            t = time.perf_counter()
            for idle in rec.idle_users(before_event=rec.n_events - ttl_events):
                blob = pickle.dumps(rec.export_user(idle), protocol=5)
                store[idle] = blob
                store_bytes += sys.getsizeof(blob) + sys.getsizeof(idle)
                rec.drop_user(idle)
                counts["exported"] += 1
            timings["evict_s"] += time.perf_counter() - t
        if (n + 1) % sample_every == 0:
            sample(n + 1)
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "curve": curve,
        "seconds": round(elapsed, 1),
        "events_per_s": round(events / elapsed, 1),
        **counts,
        **{k: round(v, 1) for k, v in timings.items()},
        "distinct_users": int(np.unique(user_idx).size),
        "covisit_pruned": rec.covisit.pairs.n_pruned,
        "config": config,
    }


def _start(**params: Any) -> subprocess.Popen:
    """One run in a fresh interpreter, so its RSS holds nothing but that run."""
    # One BLAS thread, as the evaluation's stream loop has: per-event products are tiny, and
    # waking BLAS threads for each costs 10-20x the product on a busy 2-core machine.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--child", json.dumps(params)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen, mode: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"soak/{mode} failed: {err.strip()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _at(curve: list[dict[str, Any]], events: int) -> dict[str, Any]:
    """The first sample at or after ``events``."""
    return next((row for row in curve if row["events"] >= events), curve[-1])


def table(bounded: dict[str, Any], unbounded: dict[str, Any]) -> str:
    """The two curves side by side, as a Markdown table."""
    lines = [
        "| events | bounded: RSS MB | store MB | model MB | users in memory | co-visit pairs "
        "| unbounded: RSS MB | users | co-visit pairs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, u in zip(bounded["curve"], unbounded["curve"], strict=True):
        lines.append(
            f"| {b['events']:,} | {b['rss_mb']:,.0f} | {b['store_mb']:,.0f} | "
            f"{b['model_mb']:,.0f} | {b['users_in_memory']:,} | {b['covisit_pairs']:,} | "
            f"{u['rss_mb']:,.0f} | {u['users_in_memory']:,} | {u['covisit_pairs']:,} |"
        )
    return "\n".join(lines)


def plot(bounded: dict[str, Any], unbounded: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # optional: the table carries the same figures
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, key, label, style in (
        (unbounded, "rss_mb", "no caps, no eviction: RSS", "-"),
        (bounded, "rss_mb", "caps + TTL eviction: RSS (store included)", "--"),
        (bounded, "model_mb", "caps + TTL eviction: RSS less the stand-in store", "-"),
    ):
        xs = [row["events"] / 1e3 for row in run["curve"]]
        ax.plot(xs, [row[key] for row in run["curve"]], style, label=label)
    ax.set_xlabel("events (thousands)")
    ax.set_ylabel("MiB")
    ax.set_title("Soak: Recommender memory over the stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(
    events: int = 1_000_000,
    users: int | None = None,
    items: int = 20_000,
    sample_every: int = 50_000,
    ttl_events: int = 50_000,
    evict_every: int = 10_000,
    recommend_every: int = 1_000,
    warmup: float = 0.25,
    covisit_max_stored: int = 200,
    user_max_seen: int = 1_000,
    user_max_purchased: int = 1_000,
    seed: int = 0,
    parallel: bool = True,
    png: str | None = str(PNG),
    quick: bool = False,
) -> dict[str, Any]:
    users = events // 2 if users is None else users
    common = {
        "events": events,
        "users": users,
        "items": items,
        "sample_every": sample_every,
        "ttl_events": ttl_events,
        "evict_every": evict_every,
        "recommend_every": recommend_every,
        "seed": seed,
    }
    caps = {
        "covisit_max_stored": covisit_max_stored,
        "user_max_seen": user_max_seen,
        "user_max_purchased": user_max_purchased,
    }
    no_caps = dict.fromkeys(caps, 0)
    # Each run is single-threaded: side by side on two cores they take half the wall time
    # (RSS is per process; the events/s figures then include the contention).
    first = _start(mode="bounded", config=caps, **common)
    if not parallel:
        bounded = _result(first, "bounded")
    second = _start(mode="unbounded", config=no_caps, **common)
    if parallel:
        bounded = _result(first, "bounded")
    unbounded = _result(second, "unbounded")
    after = int(events * warmup)
    b0, b1 = _at(bounded["curve"], after), bounded["curve"][-1]
    u0, u1 = _at(unbounded["curve"], after), unbounded["curve"][-1]
    plotted = bool(png) and not quick and plot(bounded, unbounded, Path(png))
    # What still grows after the warm-up: co-visitation rows filling towards their cap (the
    # users in memory are flat); its ceiling is items x 2 x covisit_max_stored pairs.
    new_pairs = b1["covisit_pairs"] - b0["covisit_pairs"]
    per_pair = (b1["model_mb"] - b0["model_mb"]) * 2**20 / new_pairs if new_pairs > 0 else None
    return {
        "soak_events": events,
        "soak_rss_mb_start": bounded["curve"][0]["rss_mb"],  # catalogue and vectors loaded
        "soak_rss_mb_warm": b0["model_mb"],
        "soak_rss_mb_end": b1["model_mb"],
        "soak_growth_mb_after_warmup": round(b1["model_mb"] - b0["model_mb"], 1),
        "soak_store_mb_end": b1["store_mb"],
        "soak_users_in_memory_end": b1["users_in_memory"],
        "soak_covisit_pairs_end": b1["covisit_pairs"],
        "soak_covisit_pairs_ceiling": items * 2 * covisit_max_stored,
        "soak_bytes_per_new_pair_after_warmup": None if per_pair is None else round(per_pair),
        "soak_unbounded_users_end": u1["users_in_memory"],
        "soak_unbounded_covisit_pairs_end": u1["covisit_pairs"],
        "soak_unbounded_rss_mb_end": u1["rss_mb"],
        "soak_unbounded_growth_mb_after_warmup": round(u1["rss_mb"] - u0["rss_mb"], 1),
        "soak_events_per_s": bounded["events_per_s"],
        "soak_seconds": bounded["seconds"],
        "warmup_events": after,
        "png": str(Path(png).relative_to(ROOT)) if plotted else None,
        "table": table(bounded, unbounded),
        "bounded": bounded,
        "unbounded": unbounded,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, help="distinct users (default: events / 2)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--sample-every", type=int, default=50_000)
    parser.add_argument("--ttl-events", type=int, default=50_000)
    parser.add_argument("--sequential", action="store_true", help="one run after the other")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--png", default=str(PNG), help='the curve ("": none)')
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_soak_child(**json.loads(args.child))))
        return 0
    result = run(
        events=args.events,
        users=args.users,
        items=args.items,
        sample_every=args.sample_every,
        ttl_events=args.ttl_events,
        parallel=not args.sequential,
        png=args.png or None,
    )
    print(result["table"])
    summary = {k: v for k, v in result.items() if k not in ("table", "bounded", "unbounded")}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
