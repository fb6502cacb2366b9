"""``recstream encode``: encode a catalogue with :class:`recstream.encoder.ItemEncoder`.

Split from :mod:`recstream.encoder`, which re-exports :func:`configure_parser`, :func:`run` and
:func:`load_items` (``recstream.cli`` still runs the command as ``recstream.encoder``). The
encoder is imported inside :func:`run` only: that module imports this one, and torch is not
needed to build the parser.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from recstream.cli import positive_int
from recstream.config import Settings
from recstream.encoder_model import resolve_num_threads
from recstream.events import Item

__all__ = ["configure_parser", "load_items", "run"]


def load_items(path: str | Path) -> list[Item]:
    """Items of a catalogue CSV, or of ``items.csv`` inside a data folder.

    Parsing (columns, ``|``-separated genres/tags, extra columns as text) is
    :func:`recstream.datasets.read_items`, shared with ``recstream evaluate``, so both encode
    exactly the same item texts.
    """
    from recstream.datasets import read_items

    path = Path(path)
    if path.is_dir():
        path = path / "items.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no items file at {path}")
    return read_items(path)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        with tmp.open("wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``recstream encode``'s arguments to ``parser``."""
    parser.add_argument(
        "items",
        metavar="ITEMS_CSV_OR_DATA_DIR",
        type=Path,
        help="items.csv (item_id,title,... ; genres/tags '|'-separated) or a folder holding it",
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        default=None,
        help="local HF model folder (default: RECSTREAM_ENCODER_MODEL, else bundled MiniLM)",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        default=None,
        help="texts per forward pass (default: RECSTREAM_ENCODER_BATCH_SIZE)",
    )
    parser.add_argument(
        "--device",
        metavar="D",
        default=None,
        help="auto, cpu, cuda or cuda:N (default: RECSTREAM_ENCODER_DEVICE)",
    )
    parser.add_argument(
        "--max-length",
        metavar="T",
        type=positive_int,
        default=128,
        help="tokens per text, longer texts are truncated (default: 128)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: OMP_NUM_THREADS, else all available CPUs)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        type=Path,
        default=None,
        help="write the (n, d) float32 matrix as .npy, rows in file order, and "
        "the item ids next to it as <FILE stem>.ids.txt",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="encoder cache root (default: <models_dir>/cache/encoder)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")


def run(args: argparse.Namespace) -> int:
    """Encode the catalogue of ``args.items``, print the rate, optionally write ``--out``."""
    from recstream.encoder import ItemEncoder

    settings = Settings.from_env()
    items = load_items(args.items)
    encoder = ItemEncoder(
        args.model if args.model is not None else (settings.encoder_model or None),
        device=args.device or settings.encoder_device,
        batch_size=args.batch_size or settings.encoder_batch_size,
        max_length=args.max_length,
        cache_dir=args.cache_dir,
        cache=not args.no_cache,
        num_threads=resolve_num_threads(args.threads, leave_free=0),
    )
    start = time.perf_counter()
    vectors = encoder.encode_items(items, progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    rate = len(items) / elapsed if elapsed > 0 else float("inf")
    print(
        f"encoded {len(items)} items in {elapsed:.2f} s: {rate:,.0f} items/s "
        f"(cache hits {encoder.cache_hits}, model runs {encoder.items_encoded}); "
        f"{encoder.model_name} [{encoder.model_id}] dim {encoder.dim}, device {encoder.device}, "
        f"batch {encoder.batch_size}, threads {encoder.num_threads}"
    )
    if args.out is not None:
        _save_npy_atomic(args.out, vectors)
        ids_path = args.out.with_suffix(".ids.txt")
        ids_path.write_text("".join(f"{item.item_id}\n" for item in items), encoding="utf-8")
        print(f"wrote {args.out} {vectors.shape} and {ids_path}")
    return 0
