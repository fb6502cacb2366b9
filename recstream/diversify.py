"""The diversity knob: a maximal-marginal-relevance (MMR, Carbonell & Goldstein 1998) re-rank of
a list's best candidates on the item (content) vectors.

From the ``pool`` best-scored rows, items are picked one at a time, each maximising
``(1 - diversity) * relevance - diversity * (max cosine to the items already picked)``, with the
relevance min-max scaled over the pool so the knob means the same whatever the scores' scale.
``diversity = 0`` keeps the list exactly as scored; 1 ignores the scores after the first pick.
An item without a vector counts as similar to nothing.

>>> import numpy as np
>>> vectors = np.array([[1, 0], [0.99, 0.14], [0, 1]], dtype=np.float32)
>>> rows, scores = np.array([0, 1, 2]), np.array([1.0, 0.9, 0.5])
>>> mmr(rows, scores, vectors, np.ones(3, bool), k=2, diversity=0.0).tolist()
[0, 1]
>>> mmr(rows, scores, vectors, np.ones(3, bool), k=2, diversity=0.5).tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np

__all__ = ["mmr"]


def mmr(
    rows: np.ndarray,
    scores: np.ndarray,
    vectors: np.ndarray,
    has_vector: np.ndarray,
    k: int,
    diversity: float,
) -> np.ndarray:
    """``k`` of ``rows`` (best first by ``scores``, aligned with ``rows``) re-ranked by MMR.

    ``vectors`` and ``has_vector`` are indexed by row (the item index's matrix and mask).
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    rows = np.asarray(rows)
    if diversity == 0.0 or rows.size <= 1:
        return rows[:k]
    s = np.asarray(scores, dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    relevance = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    with_vec = has_vector[rows]
    v = np.zeros((rows.size, vectors.shape[1]), dtype=np.float32)
    v[with_vec] = vectors[rows[with_vec]]
    sims = v @ v.T  # cosines of the pool (unit vectors; rows without one: 0)
    picked = [int(np.argmax(relevance))]
    closest = sims[picked[0]].copy()  # each candidate's max cosine to the picked ones
    available = np.ones(rows.size, dtype=bool)
    available[picked[0]] = False
    while len(picked) < min(k, rows.size):
        gain = (1.0 - diversity) * relevance - diversity * closest
        gain[~available] = -np.inf
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        np.maximum(closest, sims[best], out=closest)
    return rows[picked]
