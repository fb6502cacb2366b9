"""``recstream evaluate --finetune-encoder``: the tuned encoder, measured on the held-out part.

With ``--holdout F`` the stream is split at ``split_at``; this option fine-tunes the encoder on
co-interaction pairs mined from ``events[:split_at]`` **only** (:mod:`recstream.finetune_pairs`),
in a background process exactly as a worker would (:class:`recstream.finetune_job.FinetuneJob`),
re-encodes the catalogue with it and, for the evaluated model, swaps the new vectors in at the
held-out boundary, in one ``set_item_vectors`` call (:class:`SwapAt`): the tune part is scored
with the base vectors, the held-out part with the tuned ones, and nothing of the held-out part
was trained on. ``--finetune-swap-at start`` installs them before the first event instead
(still trained on the first part only): the held-out figure of a model whose user profiles
were built from the tuned vectors all along, the upper bound of a swap mid-stream.

The budget (steps, seconds, batch, learning rate, layers, pairs) is set with the options below;
``diversity`` is still computed with the base vectors.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> args = parser.parse_args(["--finetune-encoder", "--finetune-steps", "5"])
>>> finetune_config(args).max_steps, finetune_config(args).device
(5, 'auto')
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.cli import positive_float, positive_int
from recstream.events import Event, Item
from recstream.finetune import FinetuneConfig

__all__ = ["SwapAt", "add_arguments", "finetune_config", "tuned_vectors"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--finetune-encoder`` and its budget options to ``recstream evaluate``."""
    d = FinetuneConfig()
    parser.add_argument(
        "--finetune-encoder",
        action="store_true",
        help="with --holdout: fine-tune the encoder on co-interaction pairs of the first part "
        "only (in a background process), re-encode the catalogue and swap the vectors in at "
        "the held-out boundary (the evaluated model only)",
    )
    add = parser.add_argument
    add("--finetune-steps", type=positive_int, default=d.max_steps, metavar="N", help="steps")
    add("--finetune-seconds", type=positive_float, default=d.max_seconds, metavar="S")
    add("--finetune-batch", type=positive_int, default=d.batch_size, metavar="B")
    add("--finetune-lr", type=positive_float, default=d.lr, metavar="LR")
    add("--finetune-layers", type=int, default=d.train_layers, metavar="L", help="0: all")
    add("--finetune-threads", type=positive_int, default=d.num_threads, metavar="T")
    add("--finetune-pairs", type=positive_int, default=20_000, metavar="P", help="most pairs")
    add("--finetune-per-item", type=positive_int, default=20, metavar="M")
    add("--finetune-window", type=positive_int, default=1, metavar="W")
    add("--finetune-align", action="store_true", help="rotate the new vectors onto the old")
    add("--finetune-swap-at", choices=("holdout", "start"), default="holdout")


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of the command line (device: ``RECSTREAM_ENCODER_DEVICE``)."""
    from recstream.config import Settings

    return FinetuneConfig(
        max_steps=args.finetune_steps,
        max_seconds=args.finetune_seconds,
        batch_size=args.finetune_batch,
        lr=args.finetune_lr,
        train_layers=args.finetune_layers,
        num_threads=args.finetune_threads,
        seed=getattr(args, "seed", 0) or 0,
        device=Settings.from_env().encoder_device,
    )


def tuned_vectors(
    items: Sequence[Item],
    events: Sequence[Event],
    split_at: int,
    base: np.ndarray,
    args: argparse.Namespace,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fine-tune on the pairs of ``events[:split_at]`` and re-encode ``items``; the new matrix
    (rows as ``items``) and what to report about it."""
    from recstream.config import Settings
    from recstream.encoder import default_cache_root
    from recstream.finetune_job import FinetuneJob, align
    from recstream.finetune_pairs import co_interaction_pairs, text_pairs, user_sequences

    settings = Settings.from_env()
    start = time.perf_counter()
    pairs = co_interaction_pairs(
        user_sequences(events[:split_at]),  # the first part only: nothing held out is seen
        window=args.finetune_window,
        max_pairs=args.finetune_pairs,
        max_per_item=args.finetune_per_item,
    )
    texts = text_pairs(pairs, {item.item_id: item.text for item in items})
    config = finetune_config(args)
    no_cache = getattr(args, "no_encoder_cache", False)
    job = FinetuneJob(
        texts,
        [(item.item_id, item.text) for item in items],
        Path(settings.models_dir) / "cache" / "finetuned",
        config,
        model=settings.encoder_model or None,
        cache_dir=None if no_cache else default_cache_root(),
        encode_batch_size=settings.encoder_batch_size,
        nice=0,  # nothing to yield to here: the evaluation waits for it
    ).start()
    result = job.result()
    matrix = result.vectors
    if args.finetune_align:
        matrix = align(matrix, base)
    tuned = result.finetune
    info = {
        "pairs": len(texts),
        "steps": tuned.steps,
        "finetune_seconds": tuned.seconds,
        "reencode_seconds": result.encode_seconds,
        "total_seconds": time.perf_counter() - start,
        "loss_first": tuned.losses[0] if tuned.losses else None,
        "loss_last": tuned.losses[-1] if tuned.losses else None,
        "loss_last10": float(np.mean(tuned.losses[-10:])) if tuned.losses else None,
        "device": tuned.device,
        "model_version": result.model_version,
        "path": str(tuned.path),
        # how far the vectors moved: mean cosine of each item's old and new vector
        "mean_cos_old_new": float(np.mean(np.sum(base * matrix, axis=1))),
        "aligned": bool(args.finetune_align),
        "swap_at": args.finetune_swap_at,
        "config": tuned.config,
    }
    return matrix, info


class SwapAt:
    """A model whose item vectors are replaced once ``at`` events were learned (0: at once).

    Everything else is the wrapped model's (attribute access is forwarded), so
    :func:`recstream.evaluate.evaluate` and the CLI's reporting see the model itself.

    >>> class M:
    ...     def __init__(self): self.calls = []
    ...     def set_item_vectors(self, ids, v): self.calls.append(float(v[0, 0]))
    ...     def learn(self, event): pass
    >>> m = SwapAt(M(), 2, ["a"], np.ones((1, 1)))
    >>> m.set_item_vectors(["a"], np.zeros((1, 1))); m.learn(None); m.learn(None); m.learn(None)
    >>> m.calls, m.swapped_at
    ([0.0, 1.0], 2)
    """

    def __init__(self, model: Any, at: int, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        self._model = model
        self._at = at
        self._swap = vectors
        self._rows = {item_id: r for r, item_id in enumerate(item_ids)}
        self._published: list[str] = []  # items the model has vectors for, in order given
        self._learned = 0
        self.swapped_at: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _tuned(self, item_ids: Sequence[str]) -> np.ndarray:
        return self._swap[[self._rows[i] for i in item_ids]]

    def _install(self) -> None:
        # One call: every vector the model has so far (an item released later gets its tuned
        # vector when it is published, set_item_vectors).
        ids = [i for i in dict.fromkeys(self._published) if i in self._rows]
        if ids:
            self._model.set_item_vectors(ids, self._tuned(ids))
        self.swapped_at = self._learned

    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        item_ids = list(item_ids)
        if self.swapped_at is not None and all(i in self._rows for i in item_ids):
            vectors = self._tuned(item_ids)  # published after the swap: the new encoder's
        self._model.set_item_vectors(item_ids, vectors)
        self._published.extend(item_ids)
        if self._at == 0 and self.swapped_at is None:
            self._install()

    def learn(self, event: Event) -> None:
        self._model.learn(event)
        self._learned += 1
        if self._learned == self._at:
            self._install()
