"""Prequential (test-then-learn) evaluation: the protocol of ARCHITECTURE.md §5.

Events are processed in file order. A ``purchase`` whose user has at least one earlier event is
*evaluated*: before the model learns from it, the model ranks every catalogue item the user has
not interacted with (any type), and it is a hit when the purchased item is in the top K (NDCG
with a log2 discount). It is *cold* when its item had fewer than ``cold_threshold`` (5) earlier
events (any user, any type). Then the model learns the event; every event is learned.

The bookkeeping that defines the protocol (who saw what, how many events an item had) is kept
here, independently of the model, so a model cannot change what it is measured on; a model that
recommends an item the user already interacted with is an error, not a miss.

Beyond accuracy (over all evaluated lists):

* ``coverage`` — share of the catalogue recommended at least once;
* ``novelty`` — mean self-information ``-log2 p(i)`` of recommended items, ``p(i)`` the
  Laplace-smoothed share of users who had interacted with ``i`` when it was recommended;
* ``diversity`` — mean pairwise cosine distance of the item (content) vectors within a list;
* ``gini`` — Gini coefficient of how often each catalogue item was recommended (0 = equal
  exposure, 1 = one item takes all);
* ``long_tail_exposure`` — the share of list slots given to long-tail items (outside the short
  head holding 20 % of the interactions so far), next to ``long_tail_interactions``, the tail's
  share of the interactions (:class:`recstream.exposure.LongTail`);
* ``miscalibration`` — mean KL divergence of a list's category distribution from the user's
  history's (0 = calibrated; :class:`recstream.exposure.Calibration`);
* ``events_per_s`` — events through the test+learn loop per second (encoding apart, reported as
  ``encode_items_per_s``).

With ``split_at`` (``--holdout``) the same metrics are also reported for the events before and
from that index apart (``"parts"``: ``"tune"``, ``"holdout"``); the model still learns every
event in order, so only the reporting is split.

>>> from recstream.popularity import Popularity
>>> from recstream.events import Event, Item
>>> items = [Item("a"), Item("b"), Item("c")]
>>> stream = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u3", "c"), ("u3", "b")]
>>> events = [Event(str(n), u, i, "purchase", float(n)) for n, (u, i) in enumerate(stream)]
>>> r = evaluate(Popularity(weights={"purchase": 1.0}, half_life=None), items, events, k=1)
>>> r["evaluated"], r["hr@1"], r["cold_evaluated"]
(2, 0.5, 2)
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recstream.events import Event, Item
from recstream.exposure import Calibration, LongTail
from recstream.releases import ReleaseReach, ReleaseSchedule

__all__ = ["MODELS", "build_model", "evaluate", "holdout_split"]

MODELS = ("hybrid", "popularity", "isgd", "mf", "covisit")
BASELINES = ("popularity", "isgd", "covisit")
# The parts of the stream reported apart with a split (``evaluate(split_at=...)``, --holdout):
# settings may be chosen on "tune" only; "holdout" is the data nobody tuned on.
PARTS = ("tune", "holdout")


def build_model(name: str, seed: int = 42, exclude: str = "purchased"):
    """A fresh model by CLI name (baselines configured as in the dataset README)."""
    if name == "hybrid":
        from recstream.recommender import Recommender

        return Recommender(seed=seed, exclude=exclude)
    if name == "popularity":
        from recstream.popularity import Popularity

        # "purchase counts so far": no decay, purchases only
        return Popularity(weights={"purchase": 1.0}, half_life=None, exclude=exclude)
    if name == "isgd":
        from recstream.mf import ISGD

        return ISGD(n_factors=10, lr=0.05, l2=0.01, seed=seed, exclude=exclude)
    if name == "mf":
        from recstream.mf import ImplicitMF

        return ImplicitMF(seed=seed, exclude=exclude)
    if name == "covisit":
        from recstream.covisit import CoVisitation

        # item-kNN on purchase co-occurrence: last 20 purchases, cosine, no recency weighting
        return CoVisitation(
            window=20, types=("purchase",), weights={"purchase": 1.0}, recency=1.0, exclude=exclude
        )
    raise ValueError(f"unknown model {name!r} (expected one of {', '.join(MODELS)})")


def _publish(
    model, items: Sequence[Item], vectors: tuple[Sequence[str], np.ndarray] | None, rows: dict
) -> None:
    """Give ``model`` these catalogue items and, where it takes them, their vectors."""
    if not items:
        return
    if hasattr(model, "upsert_item"):
        for item in items:
            model.upsert_item(item)
    elif hasattr(model, "add_items"):
        model.add_items(item.item_id for item in items)
    if vectors is not None and hasattr(model, "set_item_vectors"):
        ids = [item.item_id for item in items if item.item_id in rows]
        if len(ids) == len(vectors[0]):  # the whole catalogue at once: no gather
            model.set_item_vectors(list(vectors[0]), vectors[1])
        elif ids:
            model.set_item_vectors(ids, np.asarray(vectors[1])[[rows[i] for i in ids]])


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative ``counts`` (0 = all equal).

    >>> gini(np.array([1, 1, 1, 1])), gini(np.array([0, 0, 0, 4]))
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.shape[0]
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum.sum() / cum[-1])) / n)


def _diversity(lists: list[list[str]], vectors: tuple[Sequence[str], np.ndarray] | None) -> float:
    if vectors is None or not lists:
        return float("nan")
    rows = {item_id: r for r, item_id in enumerate(vectors[0])}
    matrix = np.asarray(vectors[1], dtype=np.float32)
    total, n = 0.0, 0
    for rec in lists:
        idx = [rows[i] for i in rec if i in rows]
        if len(idx) < 2:
            continue
        v = matrix[idx]
        sims = v @ v.T
        m = len(idx)
        # mean over the m(m-1) off-diagonal pairs of (1 - cosine)
        total += float((m * (m - 1) - (sims.sum() - np.trace(sims))) / (m * (m - 1)))
        n += 1
    return total / n if n else float("nan")


def _single_threaded_blas():
    """Limit BLAS to one thread for the stream loop, when threadpoolctl is installed.

    Per-event scoring is many small matrix-vector products; a multi-threaded BLAS wakes its
    threads for each one and on a busy machine that costs 10-20x the product itself.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the loop is just slower on multi-core BLAS
        return None
    return threadpool_limits(limits=1)


class _Tally:
    """What the protocol counts over a run of evaluated events: the whole stream, or one part."""

    def __init__(self) -> None:
        self.hits = self.cold_hits = self.evaluated = self.cold_evaluated = 0
        self.ndcg = 0.0
        self.exposure: dict[str, int] = {}
        self.novelty_sum = 0.0
        self.novelty_n = 0
        self.lists: list[list[str]] = []
        # recstream/exposure.py: list slots and interactions on long-tail items, miscalibration
        self.slots = self.tail_slots = self.interactions = self.tail_interactions = 0
        self.miscalibration_sum = 0.0
        self.calibrated = 0

    def add(
        self,
        ids: list[str],
        gain: float | None,
        cold: bool,
        bits: list[float],
        tail_slots: int = 0,
        miscalibration: float | None = None,
    ) -> None:
        """One evaluated list: ``gain`` its NDCG term (None: a miss), ``bits`` each item's
        self-information, in list order (summed in that order, so the floats never change);
        ``tail_slots`` its long-tail items, ``miscalibration`` its KL to the user's history."""
        self.slots += len(ids)
        self.tail_slots += tail_slots
        if miscalibration is not None:
            self.miscalibration_sum += miscalibration
            self.calibrated += 1
        self.evaluated += 1
        self.cold_evaluated += cold
        if gain is not None:
            self.hits += 1
            self.cold_hits += cold
            self.ndcg += gain
        for i, b in zip(ids, bits, strict=True):
            self.exposure[i] = self.exposure.get(i, 0) + 1
            self.novelty_sum += b
        self.novelty_n += len(ids)
        self.lists.append(ids)

    def metrics(
        self,
        k: int,
        catalogue: Sequence[str],
        vectors: tuple[Sequence[str], np.ndarray] | None,
        events: int,
        elapsed: float,
    ) -> dict[str, Any]:
        counts = np.array([self.exposure.get(i, 0) for i in catalogue], dtype=np.float64)
        evaluated, cold_evaluated = self.evaluated, self.cold_evaluated
        return {
            f"hr@{k}": self.hits / evaluated if evaluated else 0.0,
            f"ndcg@{k}": self.ndcg / evaluated if evaluated else 0.0,
            "evaluated": evaluated,
            f"cold_hr@{k}": self.cold_hits / cold_evaluated if cold_evaluated else 0.0,
            "cold_evaluated": cold_evaluated,
            "coverage": len(self.exposure) / len(catalogue) if catalogue else 0.0,
            "novelty": self.novelty_sum / self.novelty_n if self.novelty_n else 0.0,
            "diversity": _diversity(self.lists, vectors),
            "gini": gini(counts),
            # the long tail's share of list slots, against its share of the interactions
            "long_tail_exposure": self.tail_slots / self.slots if self.slots else 0.0,
            "long_tail_interactions": (
                self.tail_interactions / self.interactions if self.interactions else 0.0
            ),
            "miscalibration": (
                self.miscalibration_sum / self.calibrated if self.calibrated else float("nan")
            ),
            "events": events,
            "events_per_s": events / elapsed if elapsed > 0 else float("inf"),
            "k": k,
        }


def holdout_split(n_events: int, fraction: float) -> int:
    """Index of the first held-out event when the last ``fraction`` of the stream is held out.

    The held-out part is the last ``ceil(fraction * n_events)`` events, so the tuning part is
    ``events[:split]``; for 0.5 the split is ``floor(n_events / 2)``.

    >>> holdout_split(100_836, 0.5), holdout_split(5, 0.5), holdout_split(10, 0.7)
    (50418, 2, 3)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    # round(): 0.7 * 10 is 7.000000000000001 in floats, which ceil() would make 8
    return n_events - math.ceil(round(fraction * n_events, 6))


def evaluate(
    model,
    items: Sequence[Item],
    events: Sequence[Event],
    k: int = 10,
    *,
    vectors: tuple[Sequence[str], np.ndarray] | None = None,
    cold_threshold: int = 5,
    progress: bool | str = False,
    on_result: Callable[[int, bool, bool], None] | None = None,
    split_at: int | None = None,
    release: bool = True,
) -> dict[str, Any]:
    """Run the prequential protocol (module docstring) and return the metrics.

    Parameters
    ----------
    model
        Anything with ``learn(event)`` and ``recommend(user_id, k, exclude="seen")``; when it has
        ``upsert_item`` (or ``add_items``) it first receives the catalogue, and
        ``set_item_vectors`` receives ``vectors``.
    items, events
        The catalogue and the stream, in order.
    vectors
        ``(item_ids, float32 matrix)`` content vectors, given to the model before the stream
        (allowed: the catalogue is known) and used for ``diversity``.
    progress
        Show a tqdm bar on stderr (a string is used as its description).
    on_result
        Called as ``on_result(event_index, hit, cold)`` for every evaluated event.
    split_at
        Also report the metrics of ``events[:split_at]`` (``"tune"``) and ``events[split_at:]``
        (``"holdout"``) apart, under ``"parts"`` (each with the whole stream's keys, plus
        ``"first_event"``). The model still learns every event, in order: only the reporting is
        split. The whole-stream metrics are the same with or without it, to the last bit.
    release
        Publish each item when the stream reaches its ``Item.ts`` (:mod:`recstream.releases`),
        as a worker learns of it, and report how soon lists reached the items released during
        the stream (``released*`` keys); False: the whole catalogue before the first event (the
        protocol before 2026-12-02; the same for a dataset without release times).
    """
    if split_at is not None and not 0 <= split_at <= len(events):
        raise ValueError(f"split_at must be in [0, {len(events)}], got {split_at}")
    schedule = ReleaseSchedule(items if release else [], events)
    upfront = schedule.upfront if release else items
    rows = {} if vectors is None else {item_id: r for r, item_id in enumerate(vectors[0])}
    _publish(model, upfront, vectors, rows)
    reach = ReleaseReach(cold_threshold)
    catalogue = {item.item_id for item in upfront}
    seen: dict[str, set[str]] = {}
    item_events: dict[str, int] = {}
    item_users: dict[str, int] = {}
    discounts = [1.0 / math.log2(r + 2) for r in range(k)]
    bounds = [0, len(events)] if split_at is None else [0, split_at, len(events)]
    parts = [_Tally() for _ in bounds[1:]]
    # Without a split the single part is the whole stream: no second tally to keep up to date.
    whole = parts[0] if split_at is None else _Tally()
    part_elapsed: list[float] = []
    part_catalogues: list[list[str]] = []
    tail = LongTail()
    calibration = Calibration({item.item_id: item.categories for item in items})

    limits = _single_threaded_blas()
    bar = None
    if progress:
        from tqdm import tqdm

        desc = progress if isinstance(progress, str) else "evaluate"
        bar = tqdm(total=len(events), desc=desc, file=sys.stderr, unit="ev", mininterval=0.5)
    from recstream.recommender import Recommender

    recommend = model.recommend
    if isinstance(model, Recommender):  # the protocol reads the items only: no reason texts
        recommend = functools.partial(model.recommend, reasons=False)
    try:
        start = time.perf_counter()
        for part, lo, hi in zip(parts, bounds, bounds[1:], strict=False):
            tallies = (whole,) if part is whole else (whole, part)
            part_start = time.perf_counter()
            for n in range(lo, hi):
                event = events[n]
                for item in schedule.due(event):  # published as the stream reaches it
                    _publish(model, [item], vectors, rows)
                    reach.released(item.item_id, n)
                    catalogue.add(item.item_id)
                user_seen = seen.get(event.user_id)
                if event.type == "purchase" and user_seen:
                    recs = recommend(event.user_id, k, exclude="seen")
                    ids = [r.item_id for r in recs]
                    bad = [i for i in ids if i in user_seen]
                    if bad:
                        raise RuntimeError(
                            f"{type(model).__name__} recommended {bad[0]!r}, which user "
                            f"{event.user_id!r} already interacted with (event {n}): "
                            "protocol violated"
                        )
                    cold = item_events.get(event.item_id, 0) < cold_threshold
                    hit = event.item_id in ids
                    gain = discounts[ids.index(event.item_id)] if hit else None
                    n_users = len(seen)
                    bits = [-math.log2((item_users.get(i, 0) + 1) / (n_users + 1)) for i in ids]
                    tail_slots = sum(tail.is_tail(i) for i in ids)
                    miscal = calibration.miscalibration(event.user_id, ids)
                    for tally in tallies:
                        tally.add(ids, gain, cold, bits, tail_slots, miscal)
                    reach.listed(ids, n)
                    if on_result is not None:
                        on_result(n, hit, cold)
                in_tail = tail.is_tail(event.item_id)  # as it was when the event arrived
                for tally in tallies:
                    tally.interactions += 1
                    tally.tail_interactions += in_tail
                model.learn(event)
                reach.learned(event.item_id)
                tail.learn(event.item_id)
                calibration.learn(event.user_id, event.item_id)
                if user_seen is None:
                    user_seen = seen[event.user_id] = set()
                if event.item_id not in user_seen:
                    user_seen.add(event.item_id)
                    item_users[event.item_id] = item_users.get(event.item_id, 0) + 1
                item_events[event.item_id] = item_events.get(event.item_id, 0) + 1
                catalogue.add(event.item_id)
                if bar is not None and n % 500 == 499:
                    bar.update(500)
                    bar.set_postfix(hr=f"{whole.hits / max(whole.evaluated, 1):.4f}", refresh=False)
            part_elapsed.append(time.perf_counter() - part_start)
            # A part's coverage and gini are over the catalogue as it was at the part's end.
            part_catalogues.append(sorted(catalogue))
        elapsed = time.perf_counter() - start
    finally:
        if limits is not None:
            limits.restore_original_limits()
    if bar is not None:
        bar.update(len(events) - bar.n)
        bar.close()

    result = whole.metrics(k, part_catalogues[-1], vectors, len(events), elapsed)
    result.update(reach.metrics())
    if split_at is not None:
        result["parts"] = {
            name: {
                **tally.metrics(k, cat, vectors, hi - lo, seconds),
                **reach.metrics(lo, hi),
                "first_event": lo,
            }
            for name, tally, cat, lo, hi, seconds in zip(
                PARTS, parts, part_catalogues, bounds, bounds[1:], part_elapsed, strict=False
            )
        }
    return result
