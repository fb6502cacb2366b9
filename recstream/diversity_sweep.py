"""``recstream diversity-sweep DATA``: the accuracy-diversity trade-off of the diversity knob.

Runs the prequential protocol (:mod:`recstream.evaluate`) on the first ``--tune`` share of the
stream only (settings are chosen there, never on the held-out rest) once per value of
``RecommenderConfig.diversity``, in one process (the catalogue encoded once), and writes every
result to a JSON file and hr@10 against intra-list diversity (and coverage) to a PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

DEFAULT_VALUES = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with items.csv and events.csv")
    parser.add_argument(
        "--values", type=float, nargs="+", default=list(DEFAULT_VALUES), help="diversity values"
    )
    parser.add_argument(
        "--tune", type=float, default=0.5, help="share of the stream to run on (default 0.5)"
    )
    parser.add_argument("--json", metavar="OUT", required=True, help="results, one per value")
    parser.add_argument("--plot", metavar="OUT.png", help="the trade-off plot")
    parser.add_argument("--seed", type=int, default=42)


def run(args: argparse.Namespace) -> int:
    from recstream.datasets import load_dataset
    from recstream.evaluate import evaluate
    from recstream.evaluate_cli import _clean, _encode
    from recstream.recommender import Recommender, RecommenderConfig

    items, events = load_dataset(args.data_dir)
    events = events[: int(len(events) * args.tune)]
    matrix, _ = _encode(items, use_cache=True)
    vectors = ([item.item_id for item in items], matrix)
    rows: list[dict[str, Any]] = []
    for value in args.values:
        config = dataclasses.replace(RecommenderConfig(), diversity=value)
        result = evaluate(
            Recommender(config, seed=args.seed), items, events, 10, vectors=vectors,
            progress=f"diversity {value}",
        )  # fmt: skip
        rows.append({"diversity_setting": value, **result})
        print(
            f"diversity {value:.2f}: hr@10 {result['hr@10']:.4f}, cold_hr@10 "
            f"{result['cold_hr@10']:.4f}, intra-list diversity {result['diversity']:.3f}, "
            f"coverage {result['coverage']:.3f}, miscalibration {result['miscalibration']:.3f}"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean({"events": len(events), "runs": rows}), indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot, title=f"{Path(args.data_dir).name}, first {len(events):,} events")
    return 0


def plot(rows: list[dict[str, Any]], out: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    x = [r["diversity"] for r in rows]
    y = [r["hr@10"] for r in rows]
    ax.plot(x, y, marker="o")
    for r, xi, yi in zip(rows, x, y, strict=True):
        ax.annotate(f"{r['diversity_setting']:g}", (xi, yi), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip
    ax.set_xlabel("intra-list diversity (mean pairwise cosine distance)")
    ax.set_ylabel("hr@10")
    ax.set_title(f"The diversity knob (MMR): {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
