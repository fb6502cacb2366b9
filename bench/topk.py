"""One user's top-K latency at 10k / 100k / 1M items, and the speed-up over River's predict_one.

Measured path: ``recstream.mf.ImplicitMF.recommend`` — the MF scorer the recommender uses — over
a catalogue of N synthetic items whose factors are overwritten with random ones: one
(n_items, f) @ (f,) product plus item biases, then ``recstream.index.top_k`` with exclusions.
Baseline: what River offers out of the box, ``river.reco.BiasedMF.predict_one(user, item)`` for
every item, with exactly the same factors and biases copied into the River model, then
``heapq.nlargest``. Both must return the same top K (checked), so the ratio compares equal work.

When ``recstream.recommender`` is importable, the full hybrid ``Recommender.recommend`` (every
signal, exclusions, reasons) is timed too at each size, with synthetic items and vectors.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from bench.common import median_time

N_FACTORS = 32  # ImplicitMF's default width
K = 10
USER = "u-bench"


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"


def _mf_with_random_factors(n_items: int, rng: np.random.Generator) -> Any:
    from recstream.events import Event
    from recstream.mf import ImplicitMF

    mf = ImplicitMF(n_factors=N_FACTORS, n_negatives=0, seed=0)
    mf.add_items(f"i{r}" for r in range(n_items))
    # One "view" creates the user (views are not excluded under the default "purchased" rule).
    mf.learn(Event("e-bench", USER, "i0", "view", 0.0))
    # item_factors / user_vector are views into the model's matrices: overwrite in place so the
    # scores are those of a trained-looking model rather than of one event.
    mf.item_factors[:] = rng.normal(0, 0.1, size=(n_items, N_FACTORS))
    mf.user_vector(USER)[:] = rng.normal(0, 0.1, size=N_FACTORS)
    # ImplicitMF ranks with a float32 mirror of the item factors, refreshed row by row as it
    # learns; there is no public bulk setter, so the mirror is refreshed here.
    mirror = getattr(mf, "_Q32", None)
    if mirror is not None:
        mirror[:n_items] = mf.item_factors
    return mf


def _river_copy(mf: Any) -> Any:
    """A River BiasedMF holding exactly the factors and biases of ``mf``."""
    from river import reco

    model = reco.BiasedMF(n_factors=N_FACTORS, seed=0)
    item_bias = mf._bi  # read only: River needs the same biases for equal scores
    for r, factors in enumerate(mf.item_factors):
        model.i_latents[r] = factors.copy()
        model.i_biases[r] = float(item_bias[r])
    model.u_latents[USER] = mf.user_vector(USER).copy()
    return model


def _river_topk(model: Any, n_items: int, k: int) -> list[int]:
    return heapq.nlargest(k, range(n_items), key=lambda r: model.predict_one(USER, r))


def _one_blas_thread(fn: Any, repeat: int) -> float | None:
    """Median time of ``fn`` with numpy's BLAS limited to one thread (None without
    threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    with threadpool_limits(limits=1, user_api="blas"):
        return median_time(fn, repeat=repeat, warmup=2)


def _batched_similarity(
    n_items: int, rng: np.random.Generator, repeat: int, users: int = 64, dim: int = 384
) -> dict[str, Any]:
    """What batching would buy: content scores for 64 users as one (n, d) @ (d, 64) product
    vs 64 matrix-vector products (what per-event recommend does today)."""
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    profiles = rng.normal(size=(users, dim)).astype(np.float32)
    one_by_one = median_time(lambda: [vectors @ p for p in profiles], repeat=repeat)
    batched = median_time(lambda: vectors @ profiles.T, repeat=repeat)
    return {
        "users": users,
        "dim": dim,
        "gemv_ms": round(one_by_one * 1e3, 3),
        "gemm_ms": round(batched * 1e3, 3),
        "speedup": round(one_by_one / batched, 1),
    }


def _recommender_ms(n_items: int, repeat: int, seed: int) -> dict[str, Any]:
    """Full Recommender.recommend over n_items synthetic items (if the module exists)."""
    try:
        from bench.recommender_setup import populated_recommender
    except ImportError as exc:
        return {"skipped": f"recstream.recommender not importable: {exc}"}
    rec, users = populated_recommender(n_items=n_items, seed=seed)
    state = {"i": 0}

    def once() -> None:
        state["i"] += 1
        rec.recommend(users[state["i"] % len(users)], k=K)

    out = {"recommend_ms": round(median_time(once, repeat=repeat, warmup=3) * 1e3, 3)}
    blas1 = _one_blas_thread(once, repeat)
    if blas1 is not None:
        out["recommend_ms_blas1"] = round(blas1 * 1e3, 3)
    return out


def run(
    sizes: list[int] | None = None,
    repeat: int = 30,
    seed: int = 0,
    quick: bool = False,
    recommender: bool = True,
) -> dict[str, Any]:
    sizes = sizes or [10_000, 100_000, 1_000_000]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"k": K, "n_factors": N_FACTORS, "repeat": repeat, "per_size": {}}
    for n in sizes:
        mf = _mf_with_random_factors(n, rng)
        seconds = median_time(lambda m=mf: m.recommend(USER, k=K), repeat=repeat, warmup=2)
        entry: dict[str, Any] = {"mf_recommend_ms": round(seconds * 1e3, 3)}
        blas1 = _one_blas_thread(lambda m=mf: m.recommend(USER, k=K), repeat)
        if blas1 is not None:
            # numpy's OpenBLAS threads fight for 2 shared cores: see BENCHMARKS.md.
            entry["mf_recommend_ms_blas1"] = round(blas1 * 1e3, 3)
        out[f"topk_ms_{_label(n)}"] = entry["mf_recommend_ms"]
        if n == 10_000:
            model = _river_copy(mf)
            river_top = _river_topk(model, n, K)
            ours = [mf.index.row(s.item_id) for s in mf.recommend(USER, k=K)]
            # float32 ranking vs River's float64 may swap a near-tie at the boundary, no more.
            if len(set(river_top) & set(ours)) < K - 1:
                raise AssertionError(f"River and ImplicitMF disagree: {river_top} vs {ours}")
            river_s = median_time(
                lambda m=model, size=n: _river_topk(m, size, K),
                repeat=max(3, repeat // 5),
                warmup=1,
            )
            entry["river_predict_one_ms"] = round(river_s * 1e3, 3)
            out["topk_vs_predict_one_10k"] = round(river_s / seconds, 1)
        if n == 10_000:
            out["per_size"]["batched_content_10k"] = _batched_similarity(n, rng, repeat)
        del mf
        if recommender:
            entry["recommender"] = _recommender_ms(n, max(5, repeat // 3), seed)
        out["per_size"][_label(n)] = entry
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(sizes=[10_000, 100_000], repeat=5, recommender=False), indent=2))
