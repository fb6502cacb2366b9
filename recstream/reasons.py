"""Why an item is in a list: one short reason per recommended row, from the signal that
contributed most to its score ("bought together with X", "similar to Y you purchased", ...).

Apart from :mod:`recstream.recommender`: explaining reads the model, never changes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recstream.recommender import Recommender

_SIGNAL_REASONS = {
    "covisit": "often bought together",
    "mf": "matches your taste",
    "content": "similar to what you like",
    "popularity": "popular now",
    "fresh": "new and trending",
}
_PAST = {"purchase": "purchased", "click": "clicked", "view": "viewed"}


def explain(
    rec: Recommender,
    rows: np.ndarray,
    user_id: str,
    state,
    signals: dict[str, np.ndarray],
    weights: dict[str, float],
    at: np.ndarray | None = None,
) -> list[str]:
    """One short reason per row: the signal that contributed most to its score.

    ``signals`` are read at ``at`` (positions in their arrays, aligned with ``rows``: a
    two-stage list's arrays cover its candidates only), or at ``rows`` when ``at`` is None."""
    names = list(signals)
    where = rows if at is None else at
    contributions = np.stack([weights[name] * signals[name][where] for name in names])
    best = [names[j] for j in contributions.argmax(axis=0)]
    content_anchor = _content_anchors(rec, rows, best, state)
    covisit_history = [r for r, _ in reversed(rec.covisit.history(user_id))]
    reasons = []
    for row, name in zip(rows, best, strict=True):
        reason = _SIGNAL_REASONS[name]
        if name == "covisit" and state is not None:
            anchor = rec.covisit.explain(int(row), covisit_history)
            if anchor is not None:
                bought = rec.index.rows[anchor] in state.purchased
                reason = f"{'bought' if bought else 'viewed'} together with {anchor}"
        elif name == "content" and int(row) in content_anchor:
            item_id, type_ = content_anchor[int(row)]
            reason = f"similar to {item_id} you {_PAST[type_]}"
        reasons.append(reason)
    return reasons


def _content_anchors(rec: Recommender, rows, best, state) -> dict[int, tuple[str, str]]:
    """For rows recommended for content: the most similar of the user's recent items."""
    targets = [int(r) for r, name in zip(rows, best, strict=True) if name == "content"]
    if not targets or state is None:
        return {}
    has = rec.index.has_vector
    # the profile decays fast, so the anchor is looked for among the latest items only
    # each item once, with its first event in the window: duplicate rows would tie, and which
    # copy a matrix product rounds higher depends on the CPU's BLAS kernel (an item viewed
    # then clicked was explained as "viewed" on one machine and "clicked" on another)
    first: dict[int, str] = {}
    for r, t, _ in list(state.recent)[-10:]:
        if has[r]:
            first.setdefault(r, t)
    recent = list(first.items())
    if not recent:
        return {}
    recent_rows = np.array([r for r, _ in recent])
    sims = rec.index.vectors_at(recent_rows) @ rec.index.vectors_at(targets).T  # (recent, targets)
    # an item the user viewed can come back (only purchases are excluded): explain it by
    # another item, never "similar to X" for X itself
    sims[recent_rows[:, None] == np.array(targets)[None, :]] = -np.inf
    best = sims.argmax(axis=0)
    found = np.isfinite(sims[best, np.arange(len(targets))])
    ids = rec.index.ids
    return {
        target: (ids[recent[i][0]], recent[i][1])
        for target, i, ok in zip(targets, best.tolist(), found.tolist(), strict=True)
        if ok
    }
