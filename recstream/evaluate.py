"""Prequential (test-then-learn) evaluation: the protocol of ARCHITECTURE.md §5.

Events are processed in file order. A ``purchase`` whose user has at least one earlier event is
*evaluated*: before the model learns from it, the model ranks every catalogue item the user has
not interacted with (any type), and it is a hit when the purchased item is in the top K (NDCG
with a log2 discount). It is *cold* when its item had fewer than ``cold_threshold`` (5) earlier
events (any user, any type). Then the model learns the event; every event is learned.

The bookkeeping that defines the protocol (who saw what, how many events an item had) is kept
here, independently of the model, so a model cannot change what it is measured on; a model that
recommends an item the user already interacted with is an error, not a miss.

Beyond accuracy (over all evaluated lists):

* ``coverage`` — share of the catalogue recommended at least once;
* ``novelty`` — mean self-information ``-log2 p(i)`` of recommended items, ``p(i)`` the
  Laplace-smoothed share of users who had interacted with ``i`` when it was recommended;
* ``diversity`` — mean pairwise cosine distance of the item (content) vectors within a list;
* ``gini`` — Gini coefficient of how often each catalogue item was recommended (0 = equal
  exposure, 1 = one item takes all);
* ``events_per_s`` — events through the test+learn loop per second (encoding apart, reported as
  ``encode_items_per_s``).

>>> from recstream.popularity import Popularity
>>> from recstream.events import Event, Item
>>> items = [Item("a"), Item("b"), Item("c")]
>>> stream = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c"), ("u3", "b")]
>>> events = [Event(str(n), u, i, "purchase", float(n)) for n, (u, i) in enumerate(stream)]
>>> r = evaluate(Popularity(weights={"purchase": 1.0}, half_life=None), items, events, k=1)
>>> r["evaluated"], r["hr@1"], r["cold_evaluated"]
(2, 0.5, 2)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.cli import positive_int
from recstream.events import Event, Item

__all__ = ["MODELS", "build_model", "evaluate", "results_table"]

MODELS = ("hybrid", "popularity", "isgd", "mf", "covisit")
BASELINES = ("popularity", "isgd", "covisit")


def build_model(name: str, seed: int = 42, exclude: str = "purchased"):
    """A fresh model by CLI name (baselines configured as in the dataset README)."""
    if name == "hybrid":
        from recstream.recommender import Recommender

        return Recommender(seed=seed, exclude=exclude)
    if name == "popularity":
        from recstream.popularity import Popularity

        # "purchase counts so far": no decay, purchases only
        return Popularity(weights={"purchase": 1.0}, half_life=None, exclude=exclude)
    if name == "isgd":
        from recstream.mf import ISGD

        return ISGD(n_factors=10, lr=0.05, l2=0.01, seed=seed, exclude=exclude)
    if name == "mf":
        from recstream.mf import ImplicitMF

        return ImplicitMF(seed=seed, exclude=exclude)
    if name == "covisit":
        from recstream.covisit import CoVisitation

        # item-kNN on purchase co-occurrence: last 20 purchases, cosine, no recency weighting
        return CoVisitation(
            window=20, types=("purchase",), weights={"purchase": 1.0}, recency=1.0, exclude=exclude
        )
    raise ValueError(f"unknown model {name!r} (expected one of {', '.join(MODELS)})")


def _prepare(model, items: Sequence[Item], vectors: tuple[Sequence[str], np.ndarray] | None):
    if hasattr(model, "upsert_item"):
        for item in items:
            model.upsert_item(item)
    elif hasattr(model, "add_items"):
        model.add_items(item.item_id for item in items)
    if vectors is not None and hasattr(model, "set_item_vectors"):
        model.set_item_vectors(list(vectors[0]), vectors[1])


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative ``counts`` (0 = all equal).

    >>> gini(np.array([1, 1, 1, 1])), gini(np.array([0, 0, 0, 4]))
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.shape[0]
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum.sum() / cum[-1])) / n)


def _diversity(lists: list[list[str]], vectors: tuple[Sequence[str], np.ndarray] | None) -> float:
    if vectors is None or not lists:
        return float("nan")
    rows = {item_id: r for r, item_id in enumerate(vectors[0])}
    matrix = np.asarray(vectors[1], dtype=np.float32)
    total, n = 0.0, 0
    for rec in lists:
        idx = [rows[i] for i in rec if i in rows]
        if len(idx) < 2:
            continue
        v = matrix[idx]
        sims = v @ v.T
        m = len(idx)
        # mean over the m(m-1) off-diagonal pairs of (1 - cosine)
        total += float((m * (m - 1) - (sims.sum() - np.trace(sims))) / (m * (m - 1)))
        n += 1
    return total / n if n else float("nan")


def _single_threaded_blas():
    """Limit BLAS to one thread for the stream loop, when threadpoolctl is installed.

    Per-event scoring is many small matrix-vector products; a multi-threaded BLAS wakes its
    threads for each one and on a busy machine that costs 10-20x the product itself.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the loop is just slower on multi-core BLAS
        return None
    return threadpool_limits(limits=1)


def evaluate(
    model,
    items: Sequence[Item],
    events: Sequence[Event],
    k: int = 10,
    *,
    vectors: tuple[Sequence[str], np.ndarray] | None = None,
    cold_threshold: int = 5,
    progress: bool | str = False,
    on_result: Callable[[int, bool, bool], None] | None = None,
) -> dict[str, Any]:
    """Run the prequential protocol (module docstring) and return the metrics.

    Parameters
    ----------
    model
        Anything with ``learn(event)`` and ``recommend(user_id, k, exclude="seen")``; when it has
        ``upsert_item`` (or ``add_items``) it first receives the catalogue, and
        ``set_item_vectors`` receives ``vectors``.
    items, events
        The catalogue and the stream, in order.
    vectors
        ``(item_ids, float32 matrix)`` content vectors, given to the model before the stream
        (allowed: the catalogue is known) and used for ``diversity``.
    progress
        Show a tqdm bar on stderr (a string is used as its description).
    on_result
        Called as ``on_result(event_index, hit, cold)`` for every evaluated event.
    """
    _prepare(model, items, vectors)
    catalogue = {item.item_id for item in items}
    seen: dict[str, set[str]] = {}
    item_events: dict[str, int] = {}
    item_users: dict[str, int] = {}
    hits = cold_hits = evaluated = cold_evaluated = 0
    ndcg = 0.0
    exposure: dict[str, int] = {}
    novelty_sum, novelty_n = 0.0, 0
    lists: list[list[str]] = []
    discounts = [1.0 / math.log2(r + 2) for r in range(k)]

    limits = _single_threaded_blas()
    bar = None
    if progress:
        from tqdm import tqdm

        desc = progress if isinstance(progress, str) else "evaluate"
        bar = tqdm(total=len(events), desc=desc, file=sys.stderr, unit="ev", mininterval=0.5)
    try:
        start = time.perf_counter()
        for n, event in enumerate(events):
            user_seen = seen.get(event.user_id)
            if event.type == "purchase" and user_seen:
                recs = model.recommend(event.user_id, k, exclude="seen")
                ids = [r.item_id for r in recs]
                bad = [i for i in ids if i in user_seen]
                if bad:
                    raise RuntimeError(
                        f"{type(model).__name__} recommended {bad[0]!r}, which user "
                        f"{event.user_id!r} already interacted with (event {n}): protocol violated"
                    )
                cold = item_events.get(event.item_id, 0) < cold_threshold
                evaluated += 1
                cold_evaluated += cold
                hit = event.item_id in ids
                if hit:
                    hits += 1
                    cold_hits += cold
                    ndcg += discounts[ids.index(event.item_id)]
                n_users = len(seen)
                for i in ids:
                    exposure[i] = exposure.get(i, 0) + 1
                    novelty_sum -= math.log2((item_users.get(i, 0) + 1) / (n_users + 1))
                novelty_n += len(ids)
                lists.append(ids)
                if on_result is not None:
                    on_result(n, hit, cold)
            model.learn(event)
            if user_seen is None:
                user_seen = seen[event.user_id] = set()
            if event.item_id not in user_seen:
                user_seen.add(event.item_id)
                item_users[event.item_id] = item_users.get(event.item_id, 0) + 1
            item_events[event.item_id] = item_events.get(event.item_id, 0) + 1
            catalogue.add(event.item_id)
            if bar is not None and n % 500 == 499:
                bar.update(500)
                bar.set_postfix(hr=f"{hits / max(evaluated, 1):.4f}", refresh=False)
        elapsed = time.perf_counter() - start
    finally:
        if limits is not None:
            limits.restore_original_limits()
    if bar is not None:
        bar.update(len(events) - bar.n)
        bar.close()

    counts = np.array([exposure.get(i, 0) for i in sorted(catalogue)], dtype=np.float64)
    return {
        f"hr@{k}": hits / evaluated if evaluated else 0.0,
        f"ndcg@{k}": ndcg / evaluated if evaluated else 0.0,
        "evaluated": evaluated,
        f"cold_hr@{k}": cold_hits / cold_evaluated if cold_evaluated else 0.0,
        "cold_evaluated": cold_evaluated,
        "coverage": len(exposure) / len(catalogue) if catalogue else 0.0,
        "novelty": novelty_sum / novelty_n if novelty_n else 0.0,
        "diversity": _diversity(lists, vectors),
        "gini": gini(counts),
        "events": len(events),
        "events_per_s": len(events) / elapsed if elapsed > 0 else float("inf"),
        "k": k,
    }


# --- results table and plot ------------------------------------------------------------------


def _cell(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if name.startswith(("hr", "ndcg", "cold")) else f"{value:.3f}"


def results_table(results: dict[str, dict[str, Any]], k: int = 10) -> str:
    """A markdown table, one row per model (``{model name: evaluate() result}``)."""
    cols = [f"hr@{k}", f"ndcg@{k}", f"cold_hr@{k}", "coverage", "novelty", "diversity", "gini"]
    lines = [
        "| model | " + " | ".join(cols) + " | events/s |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for name, r in results.items():
        cells = [_cell(c, r.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['events_per_s']:,.0f} |")
    return "\n".join(lines)


def rolling_hit_rate(
    positions: Sequence[int], hits: Sequence[bool], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hit rate over the last ``window`` evaluated events, at each evaluated event's position."""
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        return np.zeros(0), np.zeros(0)
    window = max(1, min(window, h.size))
    cum = np.concatenate([[0.0], np.cumsum(h)])
    idx = np.arange(1, h.size + 1)
    lo = np.maximum(0, idx - window)
    return np.asarray(positions), (cum[idx] - cum[lo]) / (idx - lo)


def plot_rolling(
    curves: dict[str, tuple[Sequence[int], Sequence[bool]]],
    out: str | Path,
    *,
    k: int = 10,
    window: int = 2000,
    title: str = "",
) -> None:
    """Rolling hr@k along the stream, one line per model, to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for name, (positions, hits) in curves.items():
        x, y = rolling_hit_rate(positions, hits, window)
        ax.plot(x, y, label=f"{name} ({np.mean(hits) if len(hits) else 0:.4f})", linewidth=1.2)
    ax.set_xlabel("event index in the stream")
    ax.set_ylabel(f"hr@{k}, rolling over {window} evaluated purchases")
    ax.set_title(title or f"Prequential hr@{k} along the stream")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


# --- command line ------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with items.csv and events.csv")
    parser.add_argument("--k", type=positive_int, default=10, help="list length K (default 10)")
    parser.add_argument("--model", choices=MODELS, default="hybrid", help="model (default hybrid)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also run every other model and plot rolling hr@K of all of them to OUT.png",
    )
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N events")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--window", type=int, default=2000, help="rolling window of the plot (evaluated events)"
    )
    parser.add_argument(
        "--no-encoder-cache",
        action="store_true",
        help="encode the catalogue from scratch (measures encode_items_per_s honestly)",
    )
    parser.add_argument(
        "--no-encode",
        action="store_true",
        help="skip BERT encoding (no content signal for the hybrid, no diversity)",
    )
    parser.add_argument(
        "--shards",
        type=positive_int,
        metavar="N",
        help="the hybrid as N workers: users hashed over N shards (Kafka's partitioner) that "
        "exchange item-side deltas (recstream/sharded.py); 1 gives the single model's numbers",
    )
    parser.add_argument(
        "--sync-interval",
        type=positive_int,
        default=1000,
        metavar="T",
        help="with --shards: exchange item deltas every T events of the stream (default 1000)",
    )


def _build(name: str, args: argparse.Namespace):
    """The model to evaluate: ``build_model``, or the hybrid as a group of shards."""
    if getattr(args, "shards", None) is None:
        return build_model(name, seed=args.seed)
    from recstream.sharded import ShardedRecommender

    return ShardedRecommender(args.shards, args.sync_interval, seed=args.seed)


def _encode(items: Sequence[Item], use_cache: bool) -> tuple[np.ndarray, dict[str, Any]]:
    from recstream.config import Settings
    from recstream.encoder import ItemEncoder

    settings = Settings.from_env()
    encoder = ItemEncoder(
        settings.encoder_model or None,
        device=settings.encoder_device,
        batch_size=settings.encoder_batch_size,
        cache=use_cache,
    )
    start = time.perf_counter()
    vectors = encoder.encode_items(items, progress=True)
    elapsed = time.perf_counter() - start
    stats = encoder.stats()
    info = {
        "encode_items_per_s": len(items) / elapsed if elapsed > 0 else float("inf"),
        "encode_seconds": elapsed,
        "encode_items_encoded": int(stats["items_encoded"]),
        "encode_cache_hits": int(stats["cache_hits"]),
        "encoder": encoder.model_name,
        "encoder_device": str(encoder.device),
    }
    return vectors, info


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    from recstream.datasets import load_dataset

    if getattr(args, "shards", None) is not None and (args.model != "hybrid" or args.plot):
        raise ValueError("--shards simulates workers of the hybrid: no --model or --plot with it")
    items, events = load_dataset(args.data_dir)
    if args.limit is not None:
        events = events[: args.limit]
    vectors = None
    encode_info: dict[str, Any] = {"encode_items_per_s": None}
    if not args.no_encode:
        matrix, encode_info = _encode(items, use_cache=not args.no_encoder_cache)
        vectors = ([item.item_id for item in items], matrix)

    names = [args.model]
    if args.plot:
        names += [m for m in MODELS if m != args.model]
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[list[int], list[bool]]] = {}
    for name in names:
        model = _build(name, args)
        positions: list[int] = []
        hits: list[bool] = []

        def record(n: int, hit: bool, cold: bool, positions=positions, hits=hits) -> None:
            positions.append(n)
            hits.append(hit)

        result = evaluate(
            model, items, events, args.k, vectors=vectors, progress=name, on_result=record
        )
        result.update(encode_info)
        result.update(
            model=name,
            model_version=getattr(model, "model_version", name),
            data=str(Path(args.data_dir).resolve().name),
            seed=args.seed,
            limit=args.limit,
            n_items=len(items),
        )
        if hasattr(model, "config"):
            result["config"] = dataclasses.asdict(model.config)
        if hasattr(model, "sync_interval"):  # a ShardedRecommender: the exchange's statistics
            result.update(model.stats())
        results[name] = result
        curves[name] = (positions, hits)

    main = results[args.model]
    if args.json:
        out = dict(main)
        if len(results) > 1:
            out["baselines"] = {n: r for n, r in results.items() if n != args.model}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(out), indent=2) + "\n")
    if args.plot:
        plot_rolling(
            curves,
            args.plot,
            k=args.k,
            window=args.window,
            title=f"{main['data']}: prequential hr@{args.k} (rolling {args.window} purchases)",
        )
    print(results_table(results, args.k))
    print(
        f"\nevaluated = {main['evaluated']}, cold_evaluated = {main['cold_evaluated']}, "
        f"events = {main['events']}, encode_items_per_s = "
        + (
            f"{main['encode_items_per_s']:,.0f}"
            if main.get("encode_items_per_s") is not None
            else "n/a"
        )
    )
    return 0
