"""Two-stage retrieval for :class:`~recstream.recommender.Recommender`: the candidate sources
of one model, kept up to date from it, and the rows a list then scores.

The exact path scores every catalogue row per list (O(n): 7 ms at 1M items, 20–30 numpy passes).
:class:`TwoStage` gathers a bounded set of rows instead (:mod:`recstream.candidates`) from
sources whose per-list cost does not grow with the catalogue, and the recommender scores only
those with the same signals, features and ranker (``Recommender._signals(rows=...)``):

- ``covisit``: the union of the stored co-visitation neighbours of the user's recent items,
  scored as the co-visitation signal scores them (:meth:`CoVisitation.neighbourhood`);
- ``content``: an ANN search (:mod:`recstream.ann`) with the user's content profile; items are
  upserted as their vectors arrive, removed when deleted;
- ``mf`` (off by default, see :data:`DEFAULT_QUOTAS`): an inner-product ANN search with
  ``[p_u, 1]`` over ``[q_i, b_i]``. Item factors move with every event, so the rows events
  touched are re-upserted in one batch every ``mf_refresh_every`` events (and on merged deltas);
  meanwhile a stale vector only costs recall: the second stage scores with the live factors;
- ``popular``: a top-N pool of the popularity counts, offered each counted row's new total per
  event (O(1)), rebuilt only when the popularity frame is rescaled (every ~60 half-lives);
- ``fresh``: the latest items to appear.

On top of the candidates a list scores ``sample`` rows drawn uniformly from the catalogue
(:func:`scale_sample`). The exact path scales each signal over every row (``max`` or
``min``..``max``); over candidates alone the minimum of a min-max signal (MF, content) would be
the candidates' own, which widens that signal's spread and changes the signals' balance. The
sample puts typical catalogue rows back into the scale, cheaply (O(sample)). From
``retrieval_min_items`` rows on, *both* paths take a min-max signal's 0 from that sample
(``Recommender._scale_floor``): the minimum of 1M rows sits far below a 1,000-row sample's, and
the two paths' different floors were most of what the two-stage top-10 missed.

>>> from recstream.events import Event, Item
>>> from recstream.recommender import Recommender, RecommenderConfig
>>> rec = Recommender(RecommenderConfig(retrieval="two_stage", retrieval_index="exact"))
>>> for i in "abcd":
...     _ = rec.upsert_item(Item(i))
>>> for n, (u, i) in enumerate([("u1", "a"), ("u1", "b"), ("u2", "a")]):
...     rec.learn(Event(str(n), u, i, "purchase", float(n)))
>>> rec.retrieval.gather(rec, "u2", "purchased").tolist()  # b (co-visited), c, d (sample)
[1, 2, 3]
>>> [r.item_id for r in rec.recommend("u2", k=1)]
['b']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recstream.ann import VectorIndex, make_index
from recstream.candidates import (
    CandidateGatherer,
    FreshSource,
    PopularSource,
    Query,
    VectorSource,
    mf_query,
)
from recstream.index import isin_rows, unique_rows

if TYPE_CHECKING:
    from recstream.recommender import Recommender

__all__ = ["RETRIEVALS", "TwoStage", "scale_sample"]

RETRIEVALS = ("exact", "two_stage", "auto")
# Chosen at 10k items (bench/two_stage.py, docs/retrieval.md): the MF source added no exact
# top-10 item the others missed (the hybrid weighs MF 0.3 against content 2.0), and an HNSW
# graph of factors that move with every event costs a remove + add per touched row (~40 ms at
# 1M items), so it is off (quota 0: no MF index is kept) unless a quota asks for it.
DEFAULT_QUOTAS = {"covisit": 500, "content": 800, "mf": 0, "popular": 200, "fresh": 50}


def scale_sample(n: int, seed: int, clock: int, size: int) -> np.ndarray:
    """The rows one list draws uniformly (with replacement) from a catalogue of ``n``: at most
    ``size``, seeded by ``(seed, clock)`` (the model's event clock), so every path that lists at
    one model state draws the same rows.

    >>> scale_sample(10, 42, 7, 4).tolist() == scale_sample(10, 42, 7, 4).tolist()
    True
    >>> scale_sample(0, 42, 7, 4).size, scale_sample(3, 42, 7, 1000).size
    (0, 3)
    """
    if n <= 0 or size <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.random.default_rng((seed, clock)).integers(0, n, size=min(size, n))


_BULK = 10_000  # rows from which an upsert uses every core (a catalogue load, a rebuild)


def _bulk_upsert(index: VectorIndex, rows: np.ndarray, vectors: np.ndarray) -> None:
    """Upsert on the caller's thread, or on every core for a bulk load (usearch: threads=0)."""
    threads = getattr(index, "threads", None)
    if threads is None or rows.size < _BULK:
        index.upsert(rows, vectors)
        return
    index.threads = 0  # type: ignore[attr-defined]
    try:
        index.upsert(rows, vectors)
    finally:
        index.threads = threads  # type: ignore[attr-defined]


class _CovisitNeighbourhood:
    """The co-visitation signal's own support: the best-scored neighbours of the history."""

    name = "covisit"

    def __init__(self, rec: Recommender) -> None:
        self.rec = rec

    def propose(self, query: Query, quota: int, exclude: set[int]) -> np.ndarray:
        rows, scores = self.rec.covisit.neighbourhood(query.history)
        if exclude and rows.size:
            keep = ~isin_rows(rows, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            rows, scores = rows[keep], scores[keep]
        return rows[np.lexsort((rows, -scores))[:quota]]


class TwoStage:
    """The candidate sources of one recommender (module docstring).

    Parameters
    ----------
    index
        ``"hnsw"`` (usearch; what a large catalogue needs) or ``"exact"`` (numpy scans: the
        reference, cheaper to keep for small catalogues and tests).
    quotas
        Rows per source (``covisit``, ``content``, ``mf``, ``popular``, ``fresh``).
    sample
        Uniformly drawn rows scored with the candidates (the scale reference).
    mf_refresh_every
        Events between batch re-upserts of the item factors that changed.
    content_dtype
        How the content HNSW stores the (unit) item vectors: ``"i8"`` (a quarter of
        ``"f32"``'s memory; the candidates it finds are scored on the full vectors, so only
        which rows it finds can change: the candidate recall in docs/retrieval.md), ``"f16"``
        or ``"f32"``. The MF index stays f32: its vectors are not unit length.
    seed
        Seeds the sample (with the model's event clock: a list is reproducible).
    """

    def __init__(
        self,
        *,
        index: str = "hnsw",
        quotas: dict[str, int] | None = None,
        sample: int = 1000,
        mf_refresh_every: int = 1000,
        content_dtype: str = "i8",
        popular_size: int = 500,
        fresh_size: int = 500,
        seed: int = 42,
    ) -> None:
        self.index_kind = index
        self.quotas = dict(DEFAULT_QUOTAS if quotas is None else quotas)
        self.sample = sample
        self.mf_refresh_every = mf_refresh_every
        self.content_dtype = content_dtype
        self.seed = seed
        self.popular = PopularSource(size=popular_size, refresh_every=1 << 62)
        self.fresh = FreshSource(size=fresh_size)
        self.content: VectorIndex | None = None  # built with the first vectors (their width)
        self.mf: VectorIndex | None = None
        self._mf_dirty: set[int] = set()
        self._since_mf_refresh = 0
        self._popular_frame: float | None = None

    def _options(self, **extra: str) -> dict:
        # efConstruction 64 instead of usearch's 128: half the build time (1M items: ~8 min
        # on 2 cores) for the recall docs/retrieval.md measured
        return {"expansion_add": 64, **extra} if self.index_kind == "hnsw" else {}

    # -- kept up to date by the recommender --------------------------------------------------
    def on_vectors(self, rec: Recommender, rows: np.ndarray) -> None:
        """Vectors were set for ``rows`` (the index holds them normalised)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return
        if self.content is None:
            dtype = getattr(self, "content_dtype", "f32")  # a TwoStage pickled before it
            options = {"dtype": dtype, "metric": "cos" if dtype == "i8" else "ip"}
            self.content = make_index(
                self.index_kind,
                int(rec.index.dim or 0),
                **self._options(**options if self.index_kind == "hnsw" else {}),
            )
        active = rec.index.active[rows]
        _bulk_upsert(self.content, rows[active], rec.index.vectors_at(rows[active]))

    def on_delete(self, row: int) -> None:
        for index in (self.content, self.mf):
            if index is not None:
                index.remove([row])

    def on_activate(self, rec: Recommender, row: int) -> None:
        """An item became recommendable (again): back into the indexes it has vectors for."""
        if self.content is not None and rec.index.has_vector[row]:
            self.content.upsert([row], rec.index.vectors_at([row]))
        self._mf_dirty.add(row)

    def on_fresh(self, row: int) -> None:
        self.fresh.note(row)

    def on_counts(self, rec: Recommender, rows: np.ndarray | list[int]) -> None:
        """``rows`` were counted (an event, or a merged delta): popular pool and MF factors."""
        frame = None
        for row in rows:
            frame, total = rec.popularity.frame_total(int(row))
            if frame == self._popular_frame:
                self.popular.offer(int(row), total)
        if frame is not None and frame != self._popular_frame:
            self._refresh_popular(rec)  # a rescaled frame: every pooled total is stale
        self._mf_dirty.update(int(r) for r in rows)
        self._since_mf_refresh += 1
        if self._since_mf_refresh >= self.mf_refresh_every:
            self.refresh_mf(rec)

    def _refresh_popular(self, rec: Recommender) -> None:
        """Rebuild the pool from every row: O(n), once per popularity frame (rare)."""
        self._popular_frame, totals = rec.popularity.frame_totals()
        self.popular.refresh(totals)

    def refresh_mf(self, rec: Recommender) -> None:
        """Re-upsert the item factors of the rows counted since the last refresh (one batch)."""
        self._since_mf_refresh = 0
        if not self.quotas.get("mf", 0):
            self._mf_dirty.clear()
            return
        if not self._mf_dirty:
            return
        rows = np.fromiter(self._mf_dirty, dtype=np.int64, count=len(self._mf_dirty))
        rows.sort()
        self._mf_dirty.clear()
        rows = rows[rows < len(rec.index)]
        rows = rows[rec.index.active[rows]]
        if not rows.size:
            return
        vectors = rec.mf.item_vectors_at(rows)
        if self.mf is None:
            self.mf = make_index(self.index_kind, vectors.shape[1], **self._options())
        _bulk_upsert(self.mf, rows, vectors)

    def rebuild(self, rec: Recommender) -> None:
        """Every index and pool from the model as it is (a model loaded from before two-stage,
        or a switch of ``retrieval``): O(n), once."""
        self.content = self.mf = None
        self._mf_dirty = set(range(len(rec.index)))
        if rec.index.dim is not None:
            self.on_vectors(rec, np.flatnonzero(rec.index.has_vector))
        self.refresh_mf(rec)
        self._refresh_popular(rec)

    # -- one list ----------------------------------------------------------------------------
    def gatherer(self, rec: Recommender) -> CandidateGatherer:
        q = self.quotas
        sources = [
            (_CovisitNeighbourhood(rec), q.get("covisit", 0)),
            (VectorSource("content", self.content), q.get("content", 0)) if self.content else None,
            (VectorSource("mf", self.mf), q.get("mf", 0)) if self.mf else None,
            (self.popular, q.get("popular", 0)),
            (self.fresh, q.get("fresh", 0)),
        ]
        return CandidateGatherer(
            [s for s in sources if s is not None],
            cap=sum(q.values()),
            active=lambda: rec.index.active,
        )

    def gather(self, rec: Recommender, user_id: str, mode: str) -> np.ndarray:
        """The rows one list of ``user_id`` scores: candidates plus the sample, less the
        user's excluded rows and inactive items, sorted (ties then go to the lower row, as on
        the exact path)."""
        state = rec.users.get(user_id)
        excluded = state.excluded(mode) if state is not None else set()
        vectors: dict[str, np.ndarray] = {}
        if state is not None:
            profile = state.profile()
            if profile is not None:
                vectors["content"] = profile
            p = rec.mf.user_vector(user_id)
            if p is not None:
                vectors["mf"] = mf_query(p, bias=rec.mf.bias)
        query = Query(history=rec.covisit.history(user_id), vectors=vectors, exclude=excluded)
        rows = self.gatherer(rec)(query).rows
        n = len(rec.index)
        if self.sample and n:
            drawn = scale_sample(n, self.seed, rec.n_events, self.sample)
            drawn = drawn[rec.index.active[drawn]]
            if excluded:
                drawn = drawn[~isin_rows(drawn, np.fromiter(excluded, np.int64, len(excluded)))]
            rows = np.concatenate([rows, drawn])
        return unique_rows(rows)

    def memory_bytes(self) -> int:
        """Bytes held by the two ANN indexes (the pools are a few thousand numbers)."""
        return sum(i.memory_bytes() for i in (self.content, self.mf) if i is not None)
