"""Real-shaped item vectors for the retrieval benchmarks: MiniLM-like, 384-d, unit norm.

Source: the encoder cache (``models/cache/encoder/<model>/seg-*.npy``), which holds the real
all-MiniLM-L6-v2 vectors of the items encoded so far (ml-latest-small's ~9.7k movies on a
machine that ran the evaluation). A catalogue of ``n`` items is drawn as a mixture around those
vectors: item = normalise(real[j] + noise), the noise sized so an item's cosine with its centre is
~0.8 (close to the cosine of two near-duplicate titles). Without a cache, the centres are a random
Gaussian mixture instead. Queries are content profiles: the normalised mean of a few items, as
:meth:`recstream.state.UserState.profile` builds them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.common import ROOT

DIM = 384
CACHE = ROOT / "models" / "cache" / "encoder"


def _read_segment(path: Path) -> np.ndarray:
    """The vector block of one cache segment (keys array first, then the vectors array)."""
    with path.open("rb") as fh:
        np.load(fh, allow_pickle=False)
        return np.load(fh, allow_pickle=False)


def real_vectors(dim: int = DIM) -> np.ndarray:
    """Unique cached encoder vectors of width ``dim`` (empty when there is no cache)."""
    blocks = []
    for path in sorted(CACHE.glob("*/seg-*.npy")):
        try:
            block = _read_segment(path)
        except (OSError, ValueError):
            continue
        if block.ndim == 2 and block.shape[1] == dim:
            blocks.append(block.astype(np.float32))
    if not blocks:
        return np.zeros((0, dim), dtype=np.float32)
    return np.unique(np.concatenate(blocks), axis=0)


def centres(n_centres: int = 10_000, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, str]:
    """Mixture centres: the real vectors when cached, else a Gaussian mixture; and which."""
    real = real_vectors(dim)
    if len(real) >= 1000:
        return real, f"{len(real)} cached all-MiniLM-L6-v2 vectors"
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_centres, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True), "random Gaussian centres (no cache)"


def catalogue(
    n: int, base: np.ndarray, seed: int = 0, noise: float = 0.75, chunk: int = 200_000
) -> np.ndarray:
    """``n`` unit vectors drawn around ``base`` rows (float32, C-contiguous)."""
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start, x in catalogue_chunks(n, base, seed, noise, chunk):
        out[start : start + len(x)] = x
    return out


def catalogue_chunks(
    n: int, base: np.ndarray, seed: int = 0, noise: float = 0.75, chunk: int = 200_000
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`catalogue`'s vectors a chunk at a time, ``(first row, vectors)``: the same
    values, without holding all of them (10M x 384 float32 is 15.4 GB)."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = base[rng.integers(0, len(base), size=m)]
        # noise of norm ~`noise`: cos(item, centre) ~ 1 / sqrt(1 + noise^2) = 0.8
        x = x + rng.normal(scale=noise / np.sqrt(dim), size=(m, dim)).astype(np.float32)
        yield start, x / np.linalg.norm(x, axis=1, keepdims=True)


def profiles(items: np.ndarray, n: int, history: int = 5, seed: int = 1) -> np.ndarray:
    """``n`` content profiles: each the normalised mean of ``history`` random items."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(items), size=(n, history))
    q = items[rows].mean(axis=1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int, chunk: int = 250_000) -> np.ndarray:
    """(n_queries, k) rows of the exact top-``k`` inner products, best first."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(items), chunk):
        s = queries @ items[start : start + chunk].T  # (q, chunk)
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_r = np.concatenate([best_r, part + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_r, keep, 1)
    return best_r


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each query's exact top-``k`` present in its first ``k`` found rows."""
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits) / k)
