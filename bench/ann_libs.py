"""Compare ANN libraries for the item-vector index (issue 12): faiss-cpu, hnswlib, usearch.

    .venv/bin/python bench/ann_libs.py --n 100000 --lib usearch --lib hnswlib --lib faiss_hnsw

Not part of ``make bench``: only the chosen library is a dependency; install the others next to
it (``pip install --target DIR faiss-cpu hnswlib usearch`` and ``PYTHONPATH=DIR``) to rerun.
Each library runs in its own subprocess, so its resident-memory growth is its index alone.
Per library: build time (2 threads), one-query top-200 latency (1 thread) at a few search
widths, recall@10 / recall@200 against the exact inner product, and single-item add, update
(same key, new vector) and remove latencies on the built index. docs/retrieval.md has the
results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vectors as V

K = 200
M = 16  # graph degree for the three HNSW builds, the same everywhere
EF_CONSTRUCTION = 100


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


class Usearch:
    dtype = "f32"

    def __init__(self, dim: int) -> None:
        from usearch.index import Index

        self.index = Index(ndim=dim, metric="ip", dtype=self.dtype, connectivity=M)
        self.index.expansion_add = EF_CONSTRUCTION

    def build(self, x: np.ndarray) -> None:
        self.index.add(np.arange(len(x), dtype=np.uint64), x, threads=2)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self.index.search(q, k, threads=1).keys, dtype=np.int64)

    def add(self, key: int, v: np.ndarray) -> None:
        self.index.add(key, v, threads=1)

    def update(self, key: int, v: np.ndarray) -> None:
        self.index.remove(key)  # a key holds one vector: replace = remove + add
        self.index.add(key, v, threads=1)

    def remove(self, key: int) -> None:
        self.index.remove(key)

    def save(self, path: str) -> None:
        self.index.save(path)


class UsearchI8(Usearch):
    dtype = "i8"  # vectors stored as int8: 4x smaller, scored with int8 SIMD


class UsearchF16(Usearch):
    dtype = "f16"  # half-precision vectors: 2x smaller


class Hnswlib:
    def __init__(self, dim: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=dim)
        self.dim = dim

    def build(self, x: np.ndarray) -> None:
        self.index.init_index(
            max_elements=len(x) + 2000, ef_construction=EF_CONSTRUCTION, M=M,
            allow_replace_deleted=True,
        )  # fmt: skip
        self.index.add_items(x, np.arange(len(x)), num_threads=2)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(q, k=k, num_threads=1)[0][0].astype(np.int64)

    def add(self, key: int, v: np.ndarray) -> None:
        self.index.add_items(v[None], [key], num_threads=1)

    update = add  # add_items on an existing label replaces its vector and relinks it

    def remove(self, key: int) -> None:
        self.index.mark_deleted(key)

    def save(self, path: str) -> None:
        self.index.save_index(path)


class FaissHNSW:
    def __init__(self, dim: int) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION

    def build(self, x: np.ndarray) -> None:
        self.faiss.omp_set_num_threads(2)
        self.index.add(x)
        self.faiss.omp_set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q[None], k)[1][0].astype(np.int64)

    def add(self, key: int, v: np.ndarray) -> None:
        self.index.add(v[None])  # keys are insertion order: no add-by-key

    update = None  # HNSWFlat supports neither remove_ids nor replacing a vector
    remove = None

    def save(self, path: str) -> None:
        self.faiss.write_index(self.index, path)


class FaissIVF:
    """IVF-Flat: the faiss index that does support remove_ids / add_with_ids."""

    def __init__(self, dim: int) -> None:
        import faiss

        self.faiss = faiss
        self.dim = dim

    def build(self, x: np.ndarray) -> None:
        faiss = self.faiss
        faiss.omp_set_num_threads(2)
        nlist = int(4 * np.sqrt(len(x)))
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIVFFlat(self.quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 40 * nlist), replace=False)]
        self.index.train(sample)
        self.index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
        faiss.omp_set_num_threads(1)
        self.nlist = nlist

    def set_ef(self, ef: int) -> None:
        # the comparable knob: lists probed; ef 256 / 512 -> 8% / 16% of the lists
        self.index.nprobe = max(1, int(self.nlist * ef / 3200))

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q[None], k)[1][0].astype(np.int64)

    def add(self, key: int, v: np.ndarray) -> None:
        self.index.add_with_ids(v[None], np.array([key], dtype=np.int64))

    def update(self, key: int, v: np.ndarray) -> None:
        self.remove(key)
        self.add(key, v)

    def remove(self, key: int) -> None:
        # without a direct map this scans every list: O(n) per removal
        self.index.remove_ids(np.array([key], dtype=np.int64))

    def save(self, path: str) -> None:
        self.faiss.write_index(self.index, path)


LIBS = {
    "usearch": Usearch,
    "usearch_i8": UsearchI8,
    "usearch_f16": UsearchF16,
    "hnswlib": Hnswlib,
    "faiss_hnsw": FaissHNSW,
    "faiss_ivf": FaissIVF,
}


def _timed_ops(fn: Any, keys: np.ndarray, vecs: np.ndarray) -> dict[str, float]:
    times = []
    for key, v in zip(keys.tolist(), vecs, strict=True):
        t0 = time.perf_counter()
        fn(key, v)
        times.append(time.perf_counter() - t0)
    us = np.array(times) * 1e6
    return {
        "p50_us": round(float(np.median(us)), 1),
        "p99_us": round(float(np.quantile(us, 0.99)), 1),
    }


def child(lib: str, n: int, n_queries: int, efs: list[int], seed: int) -> dict[str, Any]:
    base, _ = V.centres(seed=seed)
    x = V.catalogue(n, base, seed=seed)
    queries = V.profiles(x, n_queries, seed=seed + 1)
    truth = np.load(_truth_path(n, n_queries, seed))
    impl = LIBS[lib](x.shape[1])
    t0 = time.perf_counter()
    impl.build(x)
    out: dict[str, Any] = {"lib": lib, "n": n, "build_s": round(time.perf_counter() - t0, 1)}
    # the serialised index (vectors + graph or lists) is what it holds in memory, give or take
    # allocator slack; resident-set deltas are blurred by freed numpy temporaries
    with tempfile.TemporaryDirectory() as tmp:
        impl.save(f"{tmp}/index")
        out["index_mb"] = round(os.path.getsize(f"{tmp}/index") / 2**20, 1)
    out["vectors_mb"] = round(x.nbytes / 2**20, 1)
    out["rss_mb"] = round(_rss() / 2**20, 1)
    for ef in efs:
        impl.set_ef(ef)
        impl.search(queries[0], K)  # warm-up
        found, times = [], []
        for q in queries:
            t = time.perf_counter()
            found.append(impl.search(q, K))
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        found = np.array([np.pad(f, (0, K - len(f)), constant_values=-1) for f in found])
        out[f"ef{ef}"] = {
            "p50_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.quantile(ms, 0.99)), 3),
            "recall_at_10": round(V.recall(found, truth, 10), 4),
            "recall_at_200": round(V.recall(found, truth, K), 4),
        }
    rng = np.random.default_rng(seed + 2)
    fresh = V.catalogue(600, base, seed=seed + 3)
    out["add_one"] = _timed_ops(impl.add, np.arange(n, n + 300), fresh[:300])
    fresh = fresh[300:]  # the updates' vectors: not also stored under the new keys
    if impl.update is not None:
        keys = rng.choice(n, 300, replace=False)
        out["update_one"] = _timed_ops(impl.update, keys, fresh)
        impl.set_ef(64)
        # an updated key is found by its new vector (the old one is gone)
        out["update_found_at_1"] = float(
            np.mean([impl.search(v, 1)[0] == k for k, v in zip(keys[:50], fresh[:50], strict=True)])
        )
        out["remove_one"] = _timed_ops(lambda k, _v: impl.remove(k), keys[:100], fresh[:100])
    return out


def _truth_path(n: int, n_queries: int, seed: int) -> Path:
    return Path("/tmp") / f"recstream-ann-truth-{n}-{n_queries}-{seed}.npy"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--lib", action="append", choices=sorted(LIBS))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, action="append")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    efs = args.ef or [256, 512]
    libs = args.lib or sorted(LIBS)
    if args.child:
        print(json.dumps(child(libs[0], args.n, args.queries, efs, args.seed)))
        return 0
    path = _truth_path(args.n, args.queries, args.seed)
    if not path.exists():
        base, source = V.centres(seed=args.seed)
        x = V.catalogue(args.n, base, seed=args.seed)
        np.save(path, V.exact_topk(x, V.profiles(x, args.queries, seed=args.seed + 1), K))
        print(f"# vectors: {source}", file=sys.stderr)
        del x
    for lib in libs:
        cmd = [sys.executable, __file__, "--child", "--lib", lib, "--n", str(args.n)]
        cmd += ["--queries", str(args.queries), "--seed", str(args.seed)]
        for ef in efs:
            cmd += ["--ef", str(ef)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(proc.stdout.strip() or json.dumps({"lib": lib, "error": proc.stderr[-2000:]}))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
