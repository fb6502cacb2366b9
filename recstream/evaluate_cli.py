"""``recstream evaluate``: the command line around :mod:`recstream.evaluate` (load the data,
encode the catalogue, run the model and its baselines, write JSON, plot, print)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.cli import positive_int
from recstream.evaluate import MODELS, build_model, evaluate, holdout_split
from recstream.evaluate_report import (
    GOAL_BASELINE,
    compare,
    compare_lines,
    plot_rolling,
    results_table,
)
from recstream.events import Item


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
        "--holdout",
        type=open_fraction,
        metavar="F",
        help="also report the first part (tune) and the last F of the stream (holdout) apart: "
        "the model learns through both, in order; the held-out part is the last ceil(F x n) "
        "events of the file (stream order = time order), e.g. 0.5: split at floor(n / 2)",
    )
    parser.add_argument(
        "--catalogue",
        choices=("release", "upfront"),
        default="release",
        help="release (default): publish each item when the stream reaches its release time "
        "(items.csv's ts), as a worker learns of it, and report how soon lists reached the "
        "items released during the stream; upfront: the whole catalogue before the first event "
        "(the protocol before 2026-12-02; the same for data without release times)",
    )
    parser.add_argument(
        "--compare",
        choices=MODELS,
        metavar="MODEL",
        help="also run baseline MODEL on the same data and report hr@K and cold_hr@K as "
        f"model / MODEL (per part with --holdout), with issue 11's goals against "
        f"{GOAL_BASELINE} (one of {', '.join(MODELS)})",
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
    from recstream import ranker_report  # --ranker, --ranker-weights-plot

    ranker_report.add_arguments(parser)
    from recstream import finetune_eval  # --finetune-encoder and its budget

    finetune_eval.add_arguments(parser)


def open_fraction(value: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a share of the stream)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value!r}") from None
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return number


def _build(name: str, args: argparse.Namespace):
    """The model to evaluate: ``build_model``, or the hybrid as a group of shards.

    Only ``--model`` is sharded: a ``--compare`` baseline is the single model it always is.
    """
    from recstream import ranker_report  # --ranker, --diversity

    if name == "hybrid" and ranker_report.hybrid_config(args) is not None:
        return ranker_report.build_hybrid(args)
    if getattr(args, "shards", None) is None or name != args.model:
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
    compare_with = getattr(args, "compare", None)
    if compare_with is not None and compare_with == args.model:
        raise ValueError(f"--compare {compare_with}: that is the --model itself")
    if getattr(args, "finetune_encoder", False) and (args.holdout is None or args.no_encode):
        raise ValueError("--finetune-encoder needs --holdout (its boundary) and the encoder")
    items, events = load_dataset(args.data_dir)
    if args.limit is not None:
        events = events[: args.limit]
    fraction = getattr(args, "holdout", None)
    split_at = None if fraction is None else holdout_split(len(events), fraction)
    vectors = None
    encode_info: dict[str, Any] = {"encode_items_per_s": None}
    if not args.no_encode:
        matrix, encode_info = _encode(items, use_cache=not args.no_encoder_cache)
        vectors = ([item.item_id for item in items], matrix)
    swap = None  # --finetune-encoder: (event count at which to swap, tuned vectors, report)
    if getattr(args, "finetune_encoder", False):
        from recstream import finetune_eval

        tuned, tuned_info = finetune_eval.tuned_vectors(items, events, split_at, matrix, args)
        swap = (0 if args.finetune_swap_at == "start" else split_at, tuned, tuned_info)

    names = [args.model]
    if args.plot:
        names += [m for m in MODELS if m != args.model]
    if compare_with is not None and compare_with not in names:  # --plot already runs it
        names.append(compare_with)
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[list[int], list[bool]]] = {}
    for name in names:
        model = _build(name, args)
        if swap is not None and name == args.model:
            model = finetune_eval.SwapAt(model, swap[0], vectors[0], swap[1])
        positions: list[int] = []
        hits: list[bool] = []

        def record(n: int, hit: bool, cold: bool, positions=positions, hits=hits) -> None:
            positions.append(n)
            hits.append(hit)

        result = evaluate(
            model,
            items,
            events,
            args.k,
            vectors=vectors,
            progress=name,
            on_result=record,
            split_at=split_at,
            release=args.catalogue == "release",
        )
        result.update(encode_info)
        result.update(
            model=name,
            model_version=getattr(model, "model_version", name),
            data=str(Path(args.data_dir).resolve().name),
            seed=args.seed,
            limit=args.limit,
            n_items=len(items),
            catalogue=args.catalogue,
        )
        if hasattr(model, "config"):
            result["config"] = dataclasses.asdict(model.config)
            from recstream import ranker_report  # the learned ranker's weights (and plot)

            ranker_report.report(model, result, args)
        if hasattr(model, "sync_interval"):  # a ShardedRecommender: the exchange's statistics
            result.update(model.stats())
        if swap is not None and name == args.model:
            result["finetune"] = {**swap[2], "swapped_after_events": model.swapped_at}
        if split_at is not None:
            result["holdout"] = fraction
            result["split_at"] = split_at
            result["parts"] = result.pop("parts")  # last: the whole stream's keys come first
        results[name] = result
        curves[name] = (positions, hits)

    main = results[args.model]
    comparison = None
    if compare_with is not None:
        comparison = compare(main, results[compare_with], compare_with, args.k)
    if args.json:
        out = dict(main)
        if len(results) > 1:
            out["baselines"] = {n: r for n, r in results.items() if n != args.model}
        if comparison is not None:
            out["compare"] = comparison
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
    for part, r in main.get("parts", {}).items():
        last = r["first_event"] + r["events"]
        print(
            f"{part}: events [{r['first_event']}, {last}), evaluated = {r['evaluated']}, "
            f"cold_evaluated = {r['cold_evaluated']}"
        )
    for part, r in [("whole stream", main), *main.get("parts", {}).items()]:
        if r.get("released"):
            first = r["released_first_list_events"]
            print(
                f"{part}: {r['released']} items released during the stream, "
                f"{r['released_listed']:.0%} reached a list ({r['released_listed_cold']:.0%} "
                "while cold), median "
                + ("n/a" if first is None else f"{first:.0f}")
                + " events from release to the first list"
            )
    if "finetune" in main:
        f = {k: (float("nan") if v is None else v) for k, v in main["finetune"].items()}
        print(
            f"encoder fine-tuned on {f['pairs']} pairs of the first part: {f['steps']} steps, "
            f"{f['finetune_seconds']:.0f} s on {f['device']} (+ {f['reencode_seconds']:.0f} s "
            f"re-encoding), loss {f['loss_first']:.3f} -> {f['loss_last10']:.3f}, "
            f"mean cos(old, new) {f['mean_cos_old_new']:.3f}; swapped in after "
            f"{f['swapped_after_events']} events as {f['model_version']}"
        )
    if comparison is not None:
        print()
        print("\n".join(compare_lines(comparison, args.model, args.k)))
    return 0
