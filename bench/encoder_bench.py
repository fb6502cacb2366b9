"""ItemEncoder vs sentence-transformers on the same texts, weights, batch size, device and run.

    .venv/bin/python bench/encoder_bench.py                        # all 9,742 MovieLens items
    .venv/bin/python bench/encoder_bench.py --batch-size 32 64 128 --threads 1
    .venv/bin/python bench/encoder_bench.py --n-items 2000 --profile

Figures (issue 5): ``encoder_items_per_s`` (ItemEncoder, cache disabled) and
``encoder_vs_sentence_transformers`` = that ÷ ``SentenceTransformer(<bundled folder>).encode``
items/s. Both share one process and one torch thread setting, run alternately (A B B A ...) so a
neighbour's burst on this shared machine hits both, and each keeps its best pass (the least
disturbed one). The same ratio in process CPU time (``..._cpu_time``) is reported too: on a busy
machine it moves far less than wall time.

Where the difference comes from: both run the same BertModel forward, which is >99% of the time
(pyinstrument). sentence-transformers sorts texts by *character* length before batching;
ItemEncoder tokenises first and sorts by *token* length, so batches are padded much less (on
MovieLens at batch 64: 1.4% padded tokens vs 24%).

Both truncate at the same ``max_length`` and return the same vectors (the max absolute
difference is reported). The texts are ``Item.text`` of the catalogue, as the worker encodes
them; their token-length distribution is reported because it decides padding waste.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# `python bench/encoder_bench.py` puts bench/ on sys.path, not the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, load_average, profiled

# The dataset is not part of the repository (licence): look next to the checkout.
DATA_CANDIDATES = (
    ROOT / "data" / "ml-latest-small" / "items.csv",
    ROOT.parent / "shared" / "data" / "ml-latest-small" / "items.csv",
)


def load_texts(n_items: int | None, items_csv: str | Path | None = None) -> tuple[list[str], str]:
    """Catalogue texts (``Item.text``) and where they came from; synthetic if no dataset."""
    from recstream.datasets import read_items, synthetic_stream

    candidates = [Path(items_csv)] if items_csv else list(DATA_CANDIDATES)
    for path in candidates:
        if path.is_file():
            items = read_items(path)
            source = str(path)
            break
    else:
        if items_csv:
            raise FileNotFoundError(f"no items file at {items_csv}")
        items, _ = synthetic_stream(n_items=n_items or 10_000, n_events=1, n_users=1)
        source = "synthetic (datasets.synthetic_stream)"
    texts = [item.text for item in items]
    return (texts[:n_items] if n_items else texts), source


def _distribution(lengths: np.ndarray) -> dict[str, float]:
    return {
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
    }


def run(
    n_items: int | None = None,
    batch_size: int = 64,
    *,
    device: str = "cpu",
    max_length: int = 128,
    repeats: int = 2,
    num_threads: int | None = None,
    items_csv: str | None = None,
    profile: bool = False,
    quick: bool = False,
) -> dict[str, Any]:
    """Measure both encoders; returns a JSON-able dict (see the module docstring).

    ``num_threads=None`` uses ``OMP_NUM_THREADS`` if set, else every available CPU (a batch job).
    ``quick`` (from ``bench/run.py --quick``) does a single pass each.
    """
    from sentence_transformers import SentenceTransformer

    from recstream.encoder import ItemEncoder, bundled_model_path, resolve_num_threads

    if quick:
        repeats = 1
    texts, source = load_texts(n_items, items_csv)
    threads = resolve_num_threads(num_threads, leave_free=0)
    ours = ItemEncoder(
        device=device,
        batch_size=batch_size,
        max_length=max_length,
        cache=False,
        num_threads=threads,
    )
    st = SentenceTransformer(str(bundled_model_path()), device=str(ours.device))
    st.max_seq_length = ours.max_length  # same truncation (the folder says 256)
    n_unique = len(set(texts))

    def encode_ours() -> np.ndarray:
        return ours.encode(texts)

    def encode_st() -> np.ndarray:
        return st.encode(
            texts,
            batch_size=batch_size,
            device=str(ours.device),
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    warm = texts[: 2 * batch_size]  # first calls allocate and pick kernels: not what we time
    ours.encode(warm)
    st.encode(warm, batch_size=batch_size, device=str(ours.device), show_progress_bar=False)

    times: dict[str, list[float]] = {"ours": [], "st": []}
    cpu_times: dict[str, list[float]] = {"ours": [], "st": []}
    vectors: dict[str, np.ndarray] = {}
    for rep in range(repeats):
        order = [("ours", encode_ours), ("st", encode_st)]
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            vectors[name] = fn()
            times[name].append(time.perf_counter() - t0)
            # CPU seconds of the whole process (all torch threads): unlike wall time, barely
            # moved by neighbours taking turns on the cores, so the ratio is a steadier check.
            cpu_times[name].append(time.process_time() - c0)

    if profile:  # a separate pass, so profiling overhead never reaches the figures
        with profiled(f"encoder_ours_bs{batch_size}"):
            encode_ours()
        with profiled(f"encoder_st_bs{batch_size}"):
            encode_st()

    ours_rate = len(texts) / min(times["ours"])
    st_rate = len(texts) / min(times["st"])
    lengths = ours.token_lengths(texts)
    return {
        "encoder_items_per_s": round(ours_rate, 1),
        "sentence_transformers_items_per_s": round(st_rate, 1),
        "encoder_vs_sentence_transformers": round(ours_rate / st_rate, 3),
        "encoder_items_per_s_median": round(len(texts) / statistics.median(times["ours"]), 1),
        "sentence_transformers_items_per_s_median": round(
            len(texts) / statistics.median(times["st"]), 1
        ),
        "encoder_vs_sentence_transformers_cpu_time": round(
            min(cpu_times["st"]) / min(cpu_times["ours"]), 3
        ),
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu_times.items()},
        "max_abs_diff_vs_sentence_transformers": float(
            np.abs(vectors["ours"] - vectors["st"]).max()
        ),
        "token_length": _distribution(lengths),
        "truncated": int((lengths >= ours.max_length).sum()),
        "padding_share": round(_padding_share(lengths, batch_size, lengths), 4),
        # what sentence-transformers pads: it sorts by characters, not tokens
        "padding_share_sentence_transformers": round(
            _padding_share(lengths, batch_size, np.array([len(t) for t in texts])), 4
        ),
        "n_items": len(texts),
        "n_unique_texts": n_unique,
        "batch_size": batch_size,
        "max_length": ours.max_length,
        "device": str(ours.device),
        "num_threads": threads,
        "repeats": repeats,
        "model": ours.model_name,
        "data": source,
        "load_average": load_average(),
    }


def _padding_share(lengths: np.ndarray, batch_size: int, sort_key: np.ndarray) -> float:
    """Share of computed tokens that are padding when batches follow ``sort_key`` descending."""
    order = np.argsort(-sort_key, kind="stable")
    computed = sum(
        int(lengths[order[i : i + batch_size]].max()) * len(order[i : i + batch_size])
        for i in range(0, len(order), batch_size)
    )
    return 1 - float(lengths.sum()) / computed if computed else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=None, help="first N items (default all)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--items", default=None, help="items.csv (default: ml-latest-small)")
    parser.add_argument("--profile", action="store_true", help="pyinstrument → bench/profiles/")
    args = parser.parse_args(argv)
    results = [
        run(
            args.n_items,
            batch_size,
            device=args.device,
            max_length=args.max_length,
            repeats=args.repeats,
            num_threads=args.threads,
            items_csv=args.items,
            profile=args.profile,
        )
        for batch_size in args.batch_size
    ]
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
