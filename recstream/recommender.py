"""The hybrid recommender: co-visitation + MF + content similarity + popularity, per event.

Every event updates, in O(window) time: the user's state and content profile
(:mod:`recstream.state`), item co-visitation (:mod:`recstream.covisit`), the implicit MF
(:mod:`recstream.mf`), time-decayed popularity (:mod:`recstream.popularity`) and the items'
first-seen clock. ``recommend`` (:mod:`recstream.recommender_lists`) scores the list's *scope*
with numpy vector operations over one shared item index (:mod:`recstream.index`), normalises each
signal, sums them with the weights of :class:`RecommenderConfig` and returns the top K, each with
the reason of its largest contribution. The scope is every item (``retrieval="exact"``, the
default and the reference) or, with ``retrieval="two_stage"`` (or ``"auto"`` on a large
catalogue), the few thousand candidates :class:`~recstream.retrieval.TwoStage` gathers from
bounded sources, so a list's cost does not grow with the catalogue. With
``RecommenderConfig(ranker="learned")`` the weights are an
:class:`~recstream.ranker.OnlineRanker` over :mod:`recstream.features` instead: it starts at
those weights and learns test-then-learn from the stream (each purchase, before the signals
learn it, against the candidates the user had), and is saved with the model.

Per-user state is portable (:meth:`Recommender.export_user`, :meth:`Recommender.import_user`)
and the item side is shared between workers as deltas (:meth:`Recommender.item_delta`,
:meth:`Recommender.apply_item_delta`): :mod:`recstream.recommender_sharing`.

Cold users (no events) get popular-now and fresh items. Cold items (new, few or no events) are
reachable through content similarity (they have text, hence a vector, before they have clicks)
and the fresh-item prior.

>>> from recstream.events import Event, Item
>>> rec = Recommender()
>>> for i in ("a", "b", "c", "d"):
...     _ = rec.upsert_item(Item(i, title=f"item {i}"))
>>> stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a")]
>>> for n, (u, i) in enumerate(stream):
...     rec.learn(Event(f"e{n}", u, i, "purchase", float(n)))
>>> [(r.item_id, r.reason) for r in rec.recommend("u3", k=1)]
[('b', 'bought together with a')]
>>> [r.item_id for r in rec.recommend("new-user", k=2)]
['a', 'b']
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recstream.categories import ItemCategories
from recstream.context import ContextAffinity
from recstream.covisit import CoVisitation
from recstream.events import Event, Item
from recstream.features import FeatureCache
from recstream.index import ItemIndex, grow
from recstream.mf import ImplicitMF
from recstream.new_item_slot import NewItems
from recstream.popularity import Popularity
from recstream.ranker import OnlineRanker
from recstream.recommender_config import RANKERS, RecommenderConfig
from recstream.recommender_lists import ListScoring
from recstream.recommender_ranking import RankerSteps
from recstream.recommender_sharing import USER_FORMAT, SharedState
from recstream.recommender_signals import SignalScales
from recstream.retrieval import TwoStage
from recstream.state import EXCLUDE_MODES, UserStore
from recstream.transitions import Transitions

__all__ = ["RANKERS", "USER_FORMAT", "Recommender", "RecommenderConfig"]


_FORMAT_VERSION = 1


class Recommender(SharedState, ListScoring, RankerSteps, SignalScales):
    """Hybrid streaming recommender (module docstring).

    Parameters
    ----------
    config
        Weights and hyper-parameters; ``None`` uses the defaults.
    seed
        Seeds the MF initialisation and its negative sampling.
    exclude
        Default exclusion: ``"purchased"`` (never recommend an item the user bought) or
        ``"seen"`` (nor any item the user interacted with).
    allow_unknown_items
        ``False`` (the default): only :meth:`upsert_item` makes an item recommendable; an event
        naming an unknown item is learned as a signal, and the item waits for its catalogue
        entry. ``True`` lets events add items, for shops without a catalogue feed. Anyone who
        can produce an event could otherwise put any id in front of every user.
    """

    # Class-level default: a model pickled before the setting existed loads with it.
    allow_unknown_items = False
    # The clock (n_events) as of the last item_delta(), plus the events merged since: None
    # until track_item_deltas() (class default: also for models pickled before it existed).
    _delta_clock: int | None = None
    # The learned ranker and the features of the last list it ranked; None: the fixed weights
    # (also for models pickled before the ranker existed).
    ranker: OnlineRanker | None = None
    _feature_cache: FeatureCache | None = None
    # The sequence and context models behind the ranker's features (transition, context_*):
    # None when no feature reads them (also for models pickled before they existed).
    transitions: Transitions | None = None
    context: ContextAffinity | None = None
    categories: ItemCategories | None = None  # catalogue categories (category_taste)
    # The two-stage candidate sources (recstream/retrieval.py); None: exact lists only.
    retrieval: TwoStage | None = None

    def __init__(
        self,
        config: RecommenderConfig | None = None,
        *,
        seed: int = 42,
        exclude: str = "purchased",
        allow_unknown_items: bool = False,
    ) -> None:
        if exclude not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {exclude!r}")
        self.config = config or RecommenderConfig()
        if self.config.ranker not in RANKERS:
            raise ValueError(f"ranker must be one of {RANKERS}, got {self.config.ranker!r}")
        # model_version is read for every published recommendation; the config is frozen, so
        # its digest is computed once (hashing the config per event cost 17% of the worker).
        self._config_digest = self.config.digest()
        self.seed = seed
        self.exclude = exclude
        self.allow_unknown_items = allow_unknown_items
        c = self.config
        self.index = ItemIndex(reduce_dim=c.content_dim or None, vector_dtype=c.item_vector_dtype)
        self.users = UserStore(
            recent_size=c.recent_size,
            weights=c.event_weights,
            profile_decay=c.profile_decay,
            max_seen=c.user_max_seen,
            max_purchased=c.user_max_purchased,
        )
        shared = {"index": self.index, "users": self.users}
        self.covisit = CoVisitation(
            window=c.covisit_window,
            weights=c.event_weights,
            recency=c.covisit_recency,
            tie_break=False,  # ties are settled by the other signals
            max_neighbors=c.covisit_neighbors or None,
            max_stored=c.covisit_max_stored,
            **shared,
        )
        self.mf = ImplicitMF(
            n_factors=c.mf_factors,
            lr=c.mf_lr,
            l2=c.mf_l2,
            n_negatives=c.mf_negatives,
            optimizer=c.mf_optimizer,
            weights=c.event_weights,
            seed=seed,
            **shared,
        )
        self.popularity = Popularity(
            weights=c.event_weights, half_life=c.popularity_half_life, clock="events", **shared
        )
        # Fresh-item prior: a decayed counter that counts only each item's first appearance
        # (its first event, or its upsert when it is released mid-stream; the catalogue loaded
        # before the stream does not count), so its score is 2 ** (-age in events / half-life).
        self.fresh = Popularity(
            weights=dict.fromkeys(("view", "click", "purchase"), 1.0),
            half_life=c.fresh_half_life,
            clock="events",
            **shared,
        )
        self._fresh_marked = np.zeros(0, dtype=bool)
        # the items published while the stream ran, for the new-item slot (None: slot off)
        self.new_items = NewItems(c.fresh_half_life) if c.new_item_slots else None
        # Kept only when the learned ranker reads them: a model nobody scores with would cost
        # every event an update and every checkpoint its counts.
        features = set(c.ranker_features) if c.ranker == "learned" else set()
        if "transition" in features:
            self.transitions = Transitions(
                half_life=c.transition_half_life or None,
                weights=c.event_weights,
                n_last=c.transition_last,
                recency=c.transition_recency,
                beta=c.transition_beta,
                max_stored=c.transition_max_stored,
                **shared,
            )
        if "category_taste" in features:
            self.categories = ItemCategories()
        if features & {"context_hour", "context_device"}:
            self.context = ContextAffinity(weights=c.event_weights, prior=c.context_prior, **shared)
        self._text_hash: dict[str, str] = {}
        self.n_events = 0
        if c.ranker == "learned":
            # Per model: it steps on this model's users' purchases and is saved with its
            # checkpoint; with several workers the steps travel in the item deltas.
            self.ranker = OnlineRanker(
                c.ranker_features,
                {name: w for name, w in self._weights().items() if name in c.ranker_features},
                lr=c.ranker_lr,
                l2=c.ranker_l2,
                optimizer=c.ranker_optimizer,
                loss=c.ranker_loss,
                n_shown=c.ranker_shown,
                n_sampled=c.ranker_sampled,
                seed=seed,
            )
            self._feature_cache = FeatureCache()
        if c.retrieval != "exact":
            self.retrieval = TwoStage(
                index=c.retrieval_index,
                sample=c.retrieval_sample,
                content_dtype=c.retrieval_content_dtype,
                seed=seed,
            )

    # -- catalogue ---------------------------------------------------------------------------
    # The encoder whose vectors the model scores with, when it is not the base one (a tuned
    # encoder swapped in: recstream/finetune_job.py). Class default: the base encoder, also for
    # models pickled before it existed.
    encoder_version: str | None = None
    _version_digest: str | None = None

    def set_encoder_version(self, version: str | None) -> None:
        """Name the encoder of the vectors now installed (None: the base one); model_version
        changes with it, so a list says which vectors scored it."""
        self.encoder_version = version or None
        self._version_digest = None
        if self.encoder_version:
            key = f"{self._config_digest}/{self.encoder_version}".encode()
            self._version_digest = hashlib.blake2b(key, digest_size=4).hexdigest()

    @property
    def model_version(self) -> str:
        """Changes whenever the weights (any event), the configuration or the encoder (a tuned
        one swapped in) change: ``hybrid-<digest>-<events>``."""
        return f"hybrid-{self._version_digest or self._config_digest}-{self.n_events}"

    def upsert_item(self, item: Item) -> bool:
        """Add or update a catalogue item; True when it needs (re-)encoding (new or new text).

        A changed item keeps its old vector until the new one arrives: slightly stale content
        is better than none.
        """
        self._stale()
        if item.deleted:
            self.delete_item(item.item_id)
            return False
        row = self.index.row(item.item_id)
        was_active = row is not None and bool(self.index.active[row])
        row = self.index.activate(item.item_id)
        if self.categories is not None:
            self.categories.set(row, item.categories)
        if not was_active and self.n_events > 0:
            # released while the stream runs (new, or learned from events while it waited for
            # this entry): fresh from now; an item marked fresh before keeps its clock
            marked = row < self._fresh_marked.shape[0] and bool(self._fresh_marked[row])
            self._mark_fresh(row)
            log = getattr(self, "new_items", None)  # pickles from before the slot: none
            if log is not None and not marked:  # a re-published item (back in stock) is not new
                log.published(row, self.n_events, item.ts)
        if not was_active and self.retrieval is not None:
            self.retrieval.on_activate(self, row)
        digest = item.text_hash
        changed = self._text_hash.get(item.item_id) != digest
        self._text_hash[item.item_id] = digest
        return changed

    def delete_item(self, item_id: str) -> None:
        """Never recommend ``item_id`` again (until it is upserted again)."""
        self._stale()
        self.index.delete(item_id)
        row = self.index.row(item_id)
        if row is not None and self.retrieval is not None:
            self.retrieval.on_delete(row)

    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Store content vectors (float32, L2-normalised) for ``item_ids``."""
        self._stale()
        item_ids = list(item_ids)
        self.index.set_vectors(item_ids, vectors)
        if self.retrieval is not None:
            rows = np.fromiter((self.index.rows[i] for i in item_ids), np.int64, len(item_ids))
            self.retrieval.on_vectors(self, rows)

    # -- learning ----------------------------------------------------------------------------
    def learn(self, event: Event) -> None:
        """Update every signal with one event; an unknown item is learned but recommendable
        only once catalogued (see ``allow_unknown_items``)."""
        c_weights = self.config.event_weights
        if self.ranker is not None and event.type in self.config.ranker_types:
            self._learn_ranker(event)  # test-then-learn: before any signal learns the event
        row = self.index.add(event.item_id, active=self.allow_unknown_items)
        self.n_events += 1
        log = getattr(self, "new_items", None)  # pickles from before the slot: none
        if log is not None:
            log.learned(event.ts)
        if self.index.active[row]:  # a waiting item's fresh clock starts at its upsert
            self._mark_fresh(row)
        # MF first: its negative sampler must see the user's history *before* this event
        # (the positive itself is never drawn, so the order only matters for clarity).
        self.mf.update(event.user_id, row, event.type)
        self.covisit.update(event.user_id, row, event.type)
        if self.transitions is not None:
            self.transitions.update(event.user_id, row, event.type, clock=self.n_events)
        if self.context is not None:
            self.context.update(event.user_id, row, event)
        self.popularity.add(row, c_weights.get(event.type, 0.0), float(self.n_events))
        if self.retrieval is not None:
            self.retrieval.on_counts(self, [row])
        self.users.update(event, row, self.index.vector(event.item_id), clock=self.n_events)

    def forget_user(self, user_id: str) -> bool:
        """Remove ``user_id`` from every per-user state: history, profile, seen and purchased
        items, co-visitation window, MF factors. What the user's events added to item-side
        aggregates (co-visitation counts, popularity, MF item factors) stays: it cannot be told
        apart from other users' and names nobody. True when the user was known."""
        self._stale()
        known = self.users.forget(user_id)
        known |= self.covisit.forget_user(user_id)
        known |= self.mf.forget_user(user_id)
        for model in (self.transitions, self.context):
            if model is not None:
                known |= model.forget_user(user_id)
        return known

    def _mark_fresh(self, row: int) -> None:
        """Start the fresh-item clock of ``row`` at its first appearance (upsert or event)."""
        self._fresh_marked = grow(self._fresh_marked, row + 1, fill=False)
        if not self._fresh_marked[row]:
            self._fresh_marked[row] = True
            self.fresh.add(row, 1.0, float(self.n_events))
            if self.retrieval is not None:
                self.retrieval.on_fresh(row)

    def _stale(self) -> None:
        """The model changed outside learn(): the cached features no longer hold."""
        if self._feature_cache is not None:
            self._feature_cache.clear()

    # -- introspection -----------------------------------------------------------------------
    def user_profile(self, user_id: str) -> np.ndarray | None:
        """The user's content profile (L2-normalised float32), or None before any vector."""
        state = self.users.get(user_id)
        return None if state is None else state.profile()

    def stats(self) -> dict[str, int | float]:
        n = len(self.index)
        return {
            "n_users": len(self.users),
            "n_items": n,
            "n_active_items": int(np.count_nonzero(self.index.active)),
            "n_events": self.n_events,
            "n_vectors": self.index.n_vectors,
            "n_covisit_pairs": self.covisit.n_pairs,
            "mf_factors": self.config.mf_factors,
            # the new-item slot (new_item_slot.py): items new now, lists it changed so far
            "new_items": int(self._new_rows().size),
            "slot_lists": getattr(getattr(self, "new_items", None), "slot_lists", 0),
        }

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the whole model to one file atomically (temporary file + ``os.replace``).

        The format is a pickle: load only files you wrote yourself.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": _FORMAT_VERSION, "model": self}, f, protocol=5)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Read a model written by :meth:`save`."""
        with Path(path).open("rb") as f:
            data = pickle.load(f)
        if not isinstance(data, dict) or data.get("format") != _FORMAT_VERSION:
            raise ValueError(f"{path}: not a recstream model file (format {_FORMAT_VERSION})")
        model = data["model"]
        if not isinstance(model, cls):
            raise ValueError(f"{path}: holds a {type(model).__name__}, not a {cls.__name__}")
        return model
