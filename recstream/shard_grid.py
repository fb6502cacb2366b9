"""Quality of a group of workers: the sharded evaluation over a grid of ``N`` and ``T``.

``python -m recstream.shard_grid DATA --shards 1 2 4 16 64 --sync-interval 100 1000 10000
--json docs/evaluation/sharding.json --plot docs/evaluation/sharding.png`` runs
``recstream evaluate DATA --shards N --sync-interval T`` for every pair (one process, the
catalogue encoded once), writes every result to the JSON as soon as it is known (``--resume``
skips the runs already there), then plots hr@10 and cold_hr@10 against N, one line per T, and
prints the markdown table of docs/evaluation/sharding.md. ``--set w_mf=0`` (repeatable) changes
a :class:`~recstream.recommender.RecommenderConfig` field, for ablations.

With one shard nothing is exchanged, so ``T`` cannot matter: N = 1 runs once, and every row
compares to it.

>>> rows = [{"shards": 1, "sync_interval": 100, "hr@10": 0.2, "cold_hr@10": 0.1,
...          "ndcg@10": 0.1, "seconds": 10.0, "sync_seconds": 0.0},
...         {"shards": 4, "sync_interval": 100, "hr@10": 0.19, "cold_hr@10": 0.1,
...          "ndcg@10": 0.1, "seconds": 20.0, "sync_seconds": 5.0}]
>>> print(table(rows).splitlines()[3])
| 4 | 100 | 0.1900 | -5.0 % | 0.1000 | +0.0 % | 0.1000 | 20 | 5 |
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recstream.cli import positive_int

__all__ = ["main", "plot", "table"]


def _key(run: dict[str, Any]) -> tuple[int, int, str]:
    return run["shards"], run["sync_interval"], json.dumps(run.get("overrides", {}), sort_keys=True)


def _reference(runs: Sequence[dict[str, Any]], overrides: dict[str, Any]) -> dict | None:
    same = [r for r in runs if r["shards"] == 1 and r.get("overrides", {}) == overrides]
    return same[0] if same else None


def table(runs: Sequence[dict[str, Any]], k: int = 10) -> str:
    """Markdown table: one row per run, relative changes against the N = 1 run."""
    hr, cold = f"hr@{k}", f"cold_hr@{k}"
    lines = [
        f"| N | T | {hr} | vs N=1 | {cold} | vs N=1 | ndcg@{k} | run s | of which sync s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: (r["shards"] > 1, r["sync_interval"], r["shards"])):
        ref = _reference(runs, run.get("overrides", {})) or run

        def rel(name: str, run=run, ref=ref) -> str:
            return f"{100 * (run[name] / ref[name] - 1):+.1f} %" if ref[name] else "n/a"

        # with one shard nothing is exchanged: any T gives the same numbers
        n_t = f"| {run['shards']} | {run['sync_interval'] if run['shards'] > 1 else 'any'} |"
        lines.append(
            f"{n_t} {run[hr]:.4f} | {rel(hr)} | {run[cold]:.4f} | {rel(cold)} | "
            f"{run[f'ndcg@{k}']:.4f} | {run['seconds']:.0f} | {run['sync_seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(runs: Sequence[dict[str, Any]], out: str | Path, *, k: int = 10, title: str = "") -> None:
    """hr@k and cold_hr@k against N (log scale), one line per T, with the 3 % goal band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if not r.get("overrides")]
    ref = _reference(runs, {})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    intervals = sorted({r["sync_interval"] for r in runs if r["shards"] > 1})
    for ax, name in zip(axes, (f"hr@{k}", f"cold_hr@{k}"), strict=True):
        for t in intervals:
            line = sorted((r for r in runs if r["sync_interval"] == t or r is ref), key=_key)
            line = [r for r in line if r["shards"] > 1 or r is ref]
            ax.plot([r["shards"] for r in line], [r[name] for r in line], "o-", label=f"T = {t:,}")
        if ref is not None:
            ax.axhline(ref[name], color="grey", linewidth=0.8)
            if name.startswith("hr"):
                ax.axhspan(
                    0.97 * ref[name],
                    ref[name],
                    color="green",
                    alpha=0.08,
                    label="within 3 % of N = 1",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["shards"] for r in runs], [str(r["shards"]) for r in runs])
        ax.set_xlabel("shards N (workers; users hashed as Kafka partitions them)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="items exchanged every", title_fontsize=8)
    fig.suptitle(title or f"Sharded prequential evaluation, hr@{k} and cold_hr@{k}", fontsize=10)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    from recstream.recommender import RecommenderConfig

    fields = {f.name for f in dataclasses.fields(RecommenderConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            raise ValueError(f"--set {pair!r}: no RecommenderConfig field {name!r}")
        out[name] = json.loads(value)
    return out


def _save(path: Path, doc: dict[str, Any]) -> None:
    from recstream.evaluate_cli import _clean

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=2) + "\n")
    os.replace(tmp, path)  # a run interrupted mid-write never leaves half a file


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recstream.shard_grid", description=__doc__)
    parser.add_argument("data_dir", metavar="DATA_DIR")
    parser.add_argument("--shards", type=positive_int, nargs="+", default=[1, 2, 4, 16, 64])
    parser.add_argument("--sync-interval", type=positive_int, nargs="+", default=[100, 1000])
    parser.add_argument("--json", required=True, metavar="OUT", help="results (read by --resume)")
    parser.add_argument("--plot", metavar="OUT.png")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--resume", action="store_true", help="skip runs already in --json")
    parser.add_argument("--report", action="store_true", help="no runs: table and plot only")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N events")
    args = parser.parse_args(argv)

    path = Path(args.json)
    doc: dict[str, Any] = {"runs": []}
    if (args.resume or args.report) and path.exists():
        doc = json.loads(path.read_text())
    if not args.report:
        _run_grid(args, path, doc)
    if args.plot:
        title = (
            f"{doc.get('data', '')}, prequential, K = 10: users over N shards, item deltas every"
            " T events (relative: weights tuned on this data for N = 1)"
        )
        plot(doc["runs"], args.plot, title=title)
    print(table(doc["runs"]))
    return 0


def _run_grid(args: argparse.Namespace, path: Path, doc: dict[str, Any]) -> None:
    from recstream.datasets import load_dataset
    from recstream.evaluate import evaluate
    from recstream.evaluate_cli import _encode
    from recstream.recommender import RecommenderConfig
    from recstream.sharded import ShardedRecommender

    overrides = _overrides(args.set)
    config = dataclasses.replace(RecommenderConfig(), **overrides)
    grid = [(n, t) for t in args.sync_interval for n in args.shards if n > 1]
    if 1 in args.shards:  # nothing is exchanged with one shard: T cannot matter
        grid.insert(0, (1, args.sync_interval[0]))
    done = {_key(r) for r in doc["runs"]}
    todo = [(n, t) for n, t in grid if _key(_entry(n, t, overrides)) not in done]
    if not todo:
        return
    items, events = load_dataset(args.data_dir)
    events = events[: args.limit] if args.limit else events
    matrix, encode_info = _encode(items, use_cache=True)
    vectors = ([item.item_id for item in items], matrix)
    doc.update(data=Path(args.data_dir).resolve().name, seed=args.seed, limit=args.limit)
    doc["encoder"] = encode_info.get("encoder")
    for n, t in todo:
        model = ShardedRecommender(n, t, config=config, seed=args.seed)
        start = time.perf_counter()
        result = evaluate(model, items, events, 10, vectors=vectors, progress=f"N={n} T={t}")
        result.update(_entry(n, t, overrides), seconds=time.perf_counter() - start)
        result.update(model.stats())
        result["config"] = dataclasses.asdict(model.config)
        doc["runs"].append(result)
        _save(path, doc)
        del model  # N replicas of the item side: never hold two groups at once (64: ~17 GB)
        gc.collect()
        print(
            f"N={n} T={t}: hr@10 {result['hr@10']:.4f} cold {result['cold_hr@10']:.4f} "
            f"({result['seconds']:.0f} s, sync {result['sync_seconds']:.0f} s)",
            file=sys.stderr,
        )


def _entry(n: int, t: int, overrides: dict[str, Any]) -> dict[str, Any]:
    return {"shards": n, "sync_interval": t, "overrides": overrides}


if __name__ == "__main__":
    sys.exit(main())
