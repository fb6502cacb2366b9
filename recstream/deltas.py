"""Item-side deltas: what one replica of the model learned about items, as plain data.

Several workers each own a share of the users (events are keyed by ``user_id``) but every worker
scores against the whole item side: co-visitation, popularity, the fresh-item prior and the MF
item factors. Each worker therefore learns item-side changes from its own users only, exports
them as a *delta* keyed by item id (:meth:`recstream.recommender.Recommender.item_delta`), and
merges the others' deltas (:meth:`~recstream.recommender.Recommender.apply_item_delta`). The
catalogue and the item vectors need no delta: every worker reads every item upsert.

A delta is plain data — dicts, lists of item ids, numbers and numpy arrays — so it can travel on
a Kafka topic. Arrays are indexed by position in the component's ``"items"`` list, never by a
worker's own row numbers (two workers may number items they learned from events differently).
The bundle is ``{"format": 1, "n_events": ..., "covisit": ..., "popularity": ..., "fresh": ...,
"mf": ...}``:

* ``covisit`` — ``norm`` and ``events`` per item (the weighted and raw event counts) and
  ``pair_a``/``pair_b``/``pair_w``: increments of the symmetric co-visitation counts, each
  unordered pair once. Pure sums: combining is exact and order-independent (the weights
  0.25 / 0.5 / 1 and their products are dyadic, so no float rounding enters).
* ``popularity`` — decayed sums ``Σ w 2^-(at - t)/half_life`` per item, as of the clock ``at``:
  the clock travels with the values, so parts decayed to different clocks combine exactly
  (each is re-expressed at the latest ``at``); sums, order-independent up to float rounding.
* ``fresh`` — the same form holding one unit mark per item (its first appearance). Parts
  combine by the *minimum* at a common clock, i.e. the earliest mark wins, so an item first
  seen by two workers in one interval is marked once, at the earlier time.
* ``mf`` — per item the sum of the SGD steps the worker applied to the item factors and bias
  since its last export (current value minus the value at the last export), and the count and
  sum of the targets that feed the global mean. Sums; a receiver adds them to its own copy.
* ``ranker`` (optional; absent or None without a learned ranker) — ``{"features": [...],
  "dw": array}``: the sum of the steps the worker's ranker took since its last export. Sums, like
  the MF steps; parts for different feature lists cannot combine (a ValueError).
* ``transitions`` (optional; absent or None from models without one) — item -> next-item
  counts (:mod:`recstream.transitions`): ``pair_a`` -> ``pair_b`` (directed) decayed sums
  ``pair_w`` as of the clock ``at``, like ``popularity``; sums, order-independent up to float
  rounding (a difference that rounding leaves next to zero is dropped).
* ``context`` (optional, likewise) — per item and context cell (``"hour=3"``, ``"device=tv"``:
  :mod:`recstream.context`) the weighted event counts: ``item``, ``cell`` (positions in
  ``items``, ``cells``) and ``count``. Sums: combining is exact and order-independent.
* ``n_events`` — events learned since the last export. The popularity clocks count events:
  a worker's clock is the events it learned plus the events of every delta it merged, i.e. the
  group's event count as of the last exchange plus its own since (see docs/evaluation/sharding.md).

How a group exchanges (the worker protocol, simulated by :mod:`recstream.sharded`): every worker
exports its delta; the owner of each item :func:`combine` s all of them and broadcasts the total;
each worker merges the total less its own part (:func:`subtract`), which it already holds.

>>> a = {"format": 1, "n_events": 2,
...      "covisit": {"items": ["x", "y"], "norm": np.array([1.0, 1.0]),
...                  "events": np.array([1.0, 1.0]), "pair_a": np.array([0]),
...                  "pair_b": np.array([1]), "pair_w": np.array([1.0])},
...      "popularity": {"items": ["x"], "values": np.array([1.0]), "at": 2.0, "half_life": 2.0},
...      "fresh": {"items": ["x"], "values": np.array([0.5]), "at": 2.0, "half_life": 2.0},
...      "mf": {"items": [], "factors": np.zeros((0, 2)), "biases": np.zeros(0),
...             "mean_n": 0.0, "mean_sum": 0.0}}
>>> b = {**a, "n_events": 2, "popularity": {**a["popularity"], "at": 4.0},
...      "fresh": {"items": ["x"], "values": np.array([1.0]), "at": 4.0, "half_life": 2.0}}
>>> total = combine([a, b])
>>> total["n_events"], total["covisit"]["pair_w"].tolist(), total["popularity"]["values"].tolist()
(4, [2.0], [1.5])
>>> total["fresh"]["values"].tolist()  # a's mark (clock 1) is earlier than b's (clock 4)
[0.25]
>>> others = subtract(total, b)  # what the worker that sent b still has to merge: a
>>> others["n_events"], others["covisit"]["pair_w"].tolist(), others["popularity"]["values"]
(2, [1.0], array([0.5]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FORMAT", "combine", "empty_delta", "is_empty", "nbytes", "subtract"]

FORMAT = 1
Delta = dict[str, Any]


def _union(item_lists: Sequence[Sequence[str]]) -> tuple[list[str], list[np.ndarray]]:
    """The union of ``item_lists`` (first-seen order) and each list's positions in it."""
    pos: dict[str, int] = {}
    maps = [
        np.fromiter((pos.setdefault(i, len(pos)) for i in items), dtype=np.int64, count=len(items))
        for items in item_lists
    ]
    return list(pos), maps


def _select(items: list[str], keep: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Items whose ``keep`` is set, and the old -> new position map (-1: dropped)."""
    where = np.flatnonzero(keep)
    new = np.full(len(items), -1, dtype=np.int64)
    new[where] = np.arange(where.size)
    return [items[i] for i in where.tolist()], new


# --- per component ---------------------------------------------------------------------------


def empty_covisit() -> Delta:
    z = np.zeros(0)
    i = np.zeros(0, dtype=np.int64)
    return {
        "items": [],
        "norm": z,
        "events": z.copy(),
        "pair_a": i,
        "pair_b": i.copy(),
        "pair_w": z.copy(),
    }


def combine_covisit(parts: Sequence[Delta], signs: Sequence[float]) -> Delta:
    """Sum co-visitation deltas, each multiplied by its sign; zero entries are dropped."""
    items, maps = _union([p["items"] for p in parts])
    m = len(items)
    norm, events = np.zeros(m), np.zeros(m)
    keys, weights = [], []
    for p, rows, sign in zip(parts, maps, signs, strict=True):
        np.add.at(norm, rows, sign * np.asarray(p["norm"], dtype=np.float64))
        np.add.at(events, rows, sign * np.asarray(p["events"], dtype=np.float64))
        a = rows[np.asarray(p["pair_a"], dtype=np.int64)]
        b = rows[np.asarray(p["pair_b"], dtype=np.int64)]
        keys.append(np.minimum(a, b) * m + np.maximum(a, b))  # one key per unordered pair
        weights.append(sign * np.asarray(p["pair_w"], dtype=np.float64))
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(key, return_inverse=True)
    w = np.bincount(inverse, np.concatenate(weights), minlength=uniq.size) if keys else key * 0.0
    nonzero = w != 0
    uniq, w = uniq[nonzero], w[nonzero]
    pair_a, pair_b = uniq // max(m, 1), uniq % max(m, 1)
    keep = (norm != 0) | (events != 0)
    keep[pair_a] = True
    keep[pair_b] = True
    kept, new = _select(items, keep)
    return {
        "items": kept,
        "norm": norm[keep],
        "events": events[keep],
        "pair_a": new[pair_a],
        "pair_b": new[pair_b],
        "pair_w": w,
    }


def empty_decayed(at: float = 0.0, half_life: float | None = None) -> Delta:
    return {"items": [], "values": np.zeros(0), "at": float(at), "half_life": half_life}


def _rescale(part: Delta, at: float) -> np.ndarray:
    """``part``'s values re-expressed at clock ``at`` (>= its own)."""
    values = np.asarray(part["values"], dtype=np.float64)
    h = part["half_life"]
    return values if h is None else values * 2.0 ** (-(at - float(part["at"])) / h)


def combine_decayed(parts: Sequence[Delta], signs: Sequence[float], op: str = "sum") -> Delta:
    """Combine decayed-sum deltas at the latest clock: ``op="sum"`` (signed) or ``"min"``."""
    if not parts:
        return empty_decayed()
    half_lives = {p["half_life"] for p in parts}
    if len(half_lives) > 1:
        raise ValueError(f"deltas with different half-lives cannot combine: {half_lives}")
    at = max(float(p["at"]) for p in parts)
    items, maps = _union([p["items"] for p in parts])
    if op == "sum":
        values = np.zeros(len(items))
        for p, rows, sign in zip(parts, maps, signs, strict=True):
            np.add.at(values, rows, sign * _rescale(p, at))
        keep = values != 0
    elif op == "min":
        values = np.full(len(items), np.inf)
        for p, rows in zip(parts, maps, strict=True):
            np.minimum.at(values, rows, _rescale(p, at))
        keep = np.isfinite(values)
    else:
        raise ValueError(f"op must be 'sum' or 'min', got {op!r}")
    kept, _ = _select(items, keep)
    return {"items": kept, "values": values[keep], "at": at, "half_life": half_lives.pop()}


def empty_mf(n_factors: int = 0) -> Delta:
    return {
        "items": [],
        "factors": np.zeros((0, n_factors)),
        "biases": np.zeros(0),
        "mean_n": 0.0,
        "mean_sum": 0.0,
    }


def combine_mf(parts: Sequence[Delta], signs: Sequence[float]) -> Delta:
    """Sum MF deltas (factor and bias steps, global-mean count and sum), times their signs."""
    if not parts:
        return empty_mf()
    items, maps = _union([p["items"] for p in parts])
    # (an empty part that went through JSON has factors == []: no width to read)
    k = max((np.shape(p["factors"])[1] for p in parts if len(p["items"])), default=0)
    factors, biases = np.zeros((len(items), k)), np.zeros(len(items))
    for p, rows, sign in zip(parts, maps, signs, strict=True):
        if len(rows):
            np.add.at(factors, rows, sign * np.asarray(p["factors"], dtype=np.float64))
            np.add.at(biases, rows, sign * np.asarray(p["biases"], dtype=np.float64))
    keep = (factors != 0).any(axis=1) | (biases != 0)
    kept, _ = _select(items, keep)
    return {
        "items": kept,
        "factors": factors[keep],
        "biases": biases[keep],
        "mean_n": sum(s * float(p["mean_n"]) for p, s in zip(parts, signs, strict=True)),
        "mean_sum": sum(s * float(p["mean_sum"]) for p, s in zip(parts, signs, strict=True)),
    }


# --- bundles ---------------------------------------------------------------------------------


def empty_delta() -> Delta:
    """A bundle that changes nothing."""
    return {
        "format": FORMAT,
        "n_events": 0,
        "covisit": empty_covisit(),
        "popularity": empty_decayed(),
        "fresh": empty_decayed(),
        "mf": empty_mf(),
    }


def combine_transitions(parts: Sequence[Delta | None], signs: Sequence[float]) -> Delta | None:
    """The signed sum of transition deltas at their latest clock; None when no part has any."""
    present = [(p, s) for p, s in zip(parts, signs, strict=True) if p is not None]
    if not present:
        return None
    half_lives = {p["half_life"] for p, _ in present}
    if len(half_lives) > 1:
        raise ValueError(f"transition deltas with different half-lives: {half_lives}")
    at = max(float(p["at"]) for p, _ in present)
    items, maps = _union([p["items"] for p, _ in present])
    m = max(len(items), 1)
    keys, values = [], []
    for (p, sign), rows in zip(present, maps, strict=True):
        a = rows[np.asarray(p["pair_a"], dtype=np.int64)]
        b = rows[np.asarray(p["pair_b"], dtype=np.int64)]
        keys.append(a * m + b)  # directed: (a, b) and (b, a) are two transitions
        values.append(sign * _rescale({**p, "values": p["pair_w"]}, at))
    key, value = np.concatenate(keys), np.concatenate(values)
    uniq, inverse = np.unique(key, return_inverse=True)
    w = np.bincount(inverse, value, minlength=uniq.size)
    # what a subtraction leaves of a pair (float rounding of the rescaled parts) is not a count
    scale = np.bincount(inverse, np.abs(value), minlength=uniq.size)
    keep = np.abs(w) > 1e-9 * scale
    uniq, w = uniq[keep], w[keep]
    pair_a, pair_b = uniq // m, uniq % m
    used = np.zeros(len(items), dtype=bool)
    used[pair_a] = used[pair_b] = True
    kept, new = _select(items, used)
    return {
        "items": kept,
        "pair_a": new[pair_a],
        "pair_b": new[pair_b],
        "pair_w": w,
        "at": at,
        "half_life": half_lives.pop(),
    }


def combine_context(parts: Sequence[Delta | None], signs: Sequence[float]) -> Delta | None:
    """The signed sum of context-count deltas; None when no part has any."""
    present = [(p, s) for p, s in zip(parts, signs, strict=True) if p is not None]
    if not present:
        return None
    items, item_maps = _union([p["items"] for p, _ in present])
    cells, cell_maps = _union([p["cells"] for p, _ in present])
    width = max(len(cells), 1)
    keys, counts = [], []
    for (p, sign), item_map, cell_map in zip(present, item_maps, cell_maps, strict=True):
        item = item_map[np.asarray(p["item"], dtype=np.int64)]
        keys.append(item * width + cell_map[np.asarray(p["cell"], dtype=np.int64)])
        counts.append(sign * np.asarray(p["count"], dtype=np.float64))
    uniq, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    total = np.bincount(inverse, np.concatenate(counts), minlength=uniq.size)
    uniq, total = uniq[total != 0], total[total != 0]
    item_keep = np.zeros(len(items), dtype=bool)
    item_keep[uniq // width] = True
    cell_keep = np.zeros(len(cells), dtype=bool)
    cell_keep[uniq % width] = True
    kept_items, new_item = _select(items, item_keep)
    kept_cells, new_cell = _select(cells, cell_keep)
    return {
        "items": kept_items,
        "cells": kept_cells,
        "item": new_item[uniq // width],
        "cell": new_cell[uniq % width],
        "count": total,
    }


def combine_ranker(parts: Sequence[Delta | None], signs: Sequence[float]) -> Delta | None:
    """The signed sum of ranker weight steps; None when no part has any."""
    present = [(p, s) for p, s in zip(parts, signs, strict=True) if p is not None]
    if not present:
        return None
    features = list(present[0][0]["features"])
    dw = np.zeros(len(features))
    for part, sign in present:
        if list(part["features"]) != features:
            raise ValueError(f"ranker deltas for {part['features']} and {features}")
        dw = dw + sign * np.asarray(part["dw"], dtype=np.float64)
    return {"features": features, "dw": dw}


def _check(deltas: Sequence[Delta]) -> None:
    for d in deltas:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an item delta of format {FORMAT}: {d.get('format')!r}")


def combine(deltas: Sequence[Delta]) -> Delta:
    """One bundle with the effect of merging every one of ``deltas`` (the item owner's merge).

    Order-independent: exactly for the co-visitation counts and the fresh marks, up to float
    rounding for the decayed sums and MF steps.
    """
    _check(deltas)
    if not deltas:
        return empty_delta()
    ones = [1.0] * len(deltas)
    return {
        "format": FORMAT,
        "n_events": sum(int(d["n_events"]) for d in deltas),
        "covisit": combine_covisit([d["covisit"] for d in deltas], ones),
        "popularity": combine_decayed([d["popularity"] for d in deltas], ones),
        "fresh": combine_decayed([d["fresh"] for d in deltas], ones, op="min"),
        "mf": combine_mf([d["mf"] for d in deltas], ones),
        "ranker": combine_ranker([d.get("ranker") for d in deltas], ones),
        "transitions": combine_transitions([d.get("transitions") for d in deltas], ones),
        "context": combine_context([d.get("context") for d in deltas], ones),
    }


def subtract(total: Delta, part: Delta) -> Delta:
    """``total`` without ``part`` (one of the deltas combined into it): what the worker that
    sent ``part`` has to merge. Fresh marks are not summed: ``part``'s marks are dropped where
    they are the earliest (merging them again would change nothing)."""
    _check([total, part])
    signs = (1.0, -1.0)
    fresh, own = total["fresh"], part["fresh"]
    if own["items"] and fresh["items"]:
        at = max(float(fresh["at"]), float(own["at"]))
        mine = dict(zip(own["items"], _rescale(own, at).tolist(), strict=True))
        values = _rescale(fresh, at)
        # total holds min(own, others'): equal to own's (same expression, same clock) where own
        # is the earliest mark, strictly below it where another worker marked the item earlier
        pairs = zip(fresh["items"], values.tolist(), strict=True)
        keep = np.fromiter(
            (mine.get(i, np.inf) > v for i, v in pairs), dtype=bool, count=len(values)
        )
        items, _ = _select(fresh["items"], keep)
        fresh = {"items": items, "values": values[keep], "at": at, "half_life": fresh["half_life"]}
    return {
        "format": FORMAT,
        "n_events": int(total["n_events"]) - int(part["n_events"]),
        "covisit": combine_covisit([total["covisit"], part["covisit"]], signs),
        "popularity": combine_decayed([total["popularity"], part["popularity"]], signs),
        "fresh": fresh,
        "mf": combine_mf([total["mf"], part["mf"]], signs),
        "ranker": combine_ranker([total.get("ranker"), part.get("ranker")], signs),
        "transitions": combine_transitions(
            [total.get("transitions"), part.get("transitions")], signs
        ),
        "context": combine_context([total.get("context"), part.get("context")], signs),
    }


def nbytes(delta: Delta) -> int:
    """Bytes of ``delta``'s arrays and item ids as they are held (float64, int64): an upper
    bound for a binary encoding on the wire (float32 values and int32 indexes halve it)."""
    if isinstance(delta, dict):
        return sum(nbytes(v) for v in delta.values())
    if isinstance(delta, np.ndarray):
        return int(delta.nbytes)
    if isinstance(delta, list):
        return sum(len(i.encode()) if isinstance(i, str) else nbytes(i) for i in delta)
    return 8  # a number


def is_empty(delta: Delta) -> bool:
    """True when merging ``delta`` would change nothing."""
    return (
        not delta["n_events"]
        and not any(delta[c]["items"] for c in ("covisit", "popularity", "fresh", "mf"))
        and not delta["mf"]["mean_n"]
        and (delta.get("ranker") is None or not np.any(delta["ranker"]["dw"]))
        and all(delta.get(c) is None or not delta[c]["items"] for c in ("transitions", "context"))
    )
