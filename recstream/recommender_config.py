"""The hybrid's settings (:class:`RecommenderConfig`): weights, windows, decays, the ranker.

One commented dataclass, apart from :mod:`recstream.recommender` so the settings read on their
own; ``recstream.recommender`` re-exports it (the public import path, and the one pickled
checkpoints of earlier versions name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from recstream.features import BASE_FEATURES, DEFAULT_FEATURES, EXTRA_FEATURES
from recstream.index import VECTOR_DTYPES
from recstream.retrieval import RETRIEVALS
from recstream.state import DEFAULT_EVENT_WEIGHTS

__all__ = ["RANKERS", "RecommenderConfig"]

RANKERS = ("fixed", "learned")
FEATURE_NAMES = frozenset((*BASE_FEATURES, *EXTRA_FEATURES))
# Settings only the learned ranker's features read (their prefixes).
_RANKER_ONLY = ("ranker", "transition_", "attention_", "context_", "taste_")


@dataclass(frozen=True)
class RecommenderConfig:
    """Weights and hyper-parameters of the hybrid.

    The weights were chosen on ml-latest-small (docs/evaluation/README.md records the search);
    nothing in them is specific to that data: decays count events, scales are per-request.
    """

    # --- signal weights: each signal is scaled to [0, 1] over the candidates, then weighted ---
    w_covisit: float = 1.0  # co-visited with the user's recent items: the strongest signal
    w_mf: float = 0.3  # long-term taste from the implicit MF
    w_content: float = 2.0  # BERT similarity to the user's recent profile: reaches cold items
    w_popularity: float = 0.4  # what is popular right now (log-scaled decayed counts)
    w_fresh: float = 0.6  # items whose first event is recent: new items attract purchases
    # --- event types --------------------------------------------------------------------------
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    # --- co-visitation ------------------------------------------------------------------------
    covisit_window: int = 20  # pairs are counted within the user's last N events
    covisit_recency: float = 0.9  # weight per step back in the user's history when scoring
    covisit_neighbors: int = 0  # >0: each recent item contributes only its N nearest items
    # >0: store at most 2N neighbours per item (a row that grows past 2N keeps its N largest
    # counts): bounds a long-running worker's memory at ~items x 2N pairs. 1000 leaves
    # ml-latest-small's hr@10 exactly as unbounded (0.1422; 1% of the pairs pruned), so the
    # default changes no result; 200 prunes 41% of the pairs for -0.8% hr@10 (first half:
    # -0.08%): the setting for a large catalogue (BENCHMARKS.md, "Soak"). 0: unbounded
    covisit_max_stored: int = 1000
    # --- MF -----------------------------------------------------------------------------------
    mf_factors: int = 32
    mf_lr: float = 0.02
    mf_l2: float = 0.01
    mf_negatives: int = 2  # per positive (4 scores the same in the hybrid, and costs more)
    mf_optimizer: str = "sgd"  # "sgd" | "adam" | "adagrad" (River's)
    # --- content and popularity ---------------------------------------------------------------
    profile_decay: float = 0.5  # per event: the profile is the user's current interest
    popularity_half_life: float = 2000.0  # in events: "popular now" = the last few thousand
    fresh_half_life: float = 2000.0  # in events since the item's first event
    recent_size: int = 50  # events kept per user
    # each user's seen / purchased items used for exclusion: the most recent N (0: all). Above
    # any ml-latest-small user (2,698 events), a bound only for crawlers; exclusion then covers
    # just those N items
    user_max_seen: int = 10_000
    user_max_purchased: int = 10_000
    content_dim: int = 128  # score content in a PCA projection this wide (0: full vectors)
    # --- ranking (recstream/ranker.py; settings chosen on the first half of ml-latest-small) ---
    # "fixed": score = the w_* weighted sum of the signals. "learned": a linear ranker over
    # ranker_features that starts at the w_* weights (extra features at 0) and learns online,
    # test-then-learn, from each event of ranker_types: the event's item against the user's
    # candidates, each step weighted by event_weights and by 1 + ranker_cold_boost for an item
    # with fewer than ranker_cold_events events (the protocol's cold items: without it the
    # likelihood favours popular items and the ranker gives up cold hits for warm ones).
    # Purchases only by default: learning clicks too scores as well on the first half but
    # costs a feature pass per click (the step on a purchase reuses the list just ranked).
    # The default since issue 11: held out on ml-latest-small it beats the fixed weights by 8 %
    # on hr@10 and 3 % on cold_hr@10 (docs/evaluation/ranker.md); "fixed" gives the lists of
    # the hybrid before the ranker existed
    ranker: str = "learned"
    ranker_features: tuple[str, ...] = DEFAULT_FEATURES
    ranker_loss: str = "softmax"  # "softmax" | "bpr"
    ranker_lr: float = 0.03
    ranker_l2: float = 0.0  # pull towards the starting weights
    ranker_optimizer: str = "sgd"  # "sgd" | "adam" | "adagrad" (River's)
    ranker_types: tuple[str, ...] = ("purchase",)
    ranker_cold_boost: float = 3.0
    ranker_cold_events: int = 5
    ranker_shown: int = 10  # "bpr": negatives from the list it would have shown ...
    ranker_sampled: int = 10  # ... and drawn uniformly from the candidates
    # --- the sequence and context models behind the ranker's features `transition`,
    # `content_attention`, `context_hour`, `context_device` (recstream/transitions.py,
    # interest.py, context.py; docs/evaluation/ranker.md). Only the learned ranker reads them
    transition_half_life: float = 5000.0  # in events (0: no decay)
    transition_last: int = 3  # the user's last distinct items that score candidates ...
    transition_recency: float = 0.5  # ... each step back weighted this much less
    transition_beta: float = 0.5  # damp destinations everything leads to: / in(j) ** beta
    transition_max_stored: int = 100  # successors kept per item: ~2N (0: all)
    attention_items: int = 10  # the user's recent distinct items a candidate attends over
    attention_temperature: float = 0.1  # of the softmax over their cosines (large: the mean)
    attention_recency: float = 0.9  # prior weight per step back ...
    attention_session_boost: float = 2.0  # ... and times this inside the current session
    # content_taste's long-term profile: per event over the user's recent events (docs:
    # docs/evaluation/synth_gap.md measured 0.9 as the long profile a static taste wants)
    taste_decay: float = 0.9
    context_prior: float = 10.0  # pseudo-events shrinking an item's context shares
    # --- diversity (recstream/diversify.py) -------------------------------------------------
    # 0 = lists exactly as scored; > 0: an MMR re-rank of the best diversity_pool candidates on
    # the item vectors, trading relevance for lists of less similar items (up to 1). The
    # accuracy-diversity trade-off on the first half of ml-latest-small: docs/evaluation/README.md
    diversity: float = 0.0
    diversity_pool: int = 50
    # --- new items (recstream/new_item_slot.py) ----------------------------------------------
    # A list none of whose items is new (published within fresh_half_life events, fewer than
    # ranker_cold_events events) gives its last new_item_slots places to the user's best-scoring
    # new items: a shop's new items get shown whatever the learned ranker makes of new items
    # (0: lists exactly as scored, the version of a model from before the slot)
    new_item_slots: int = 1
    # --- retrieval (recstream/retrieval.py, docs/retrieval.md) ------------------------------
    # "exact": every list scores every catalogue row (O(n) per list; the reference).
    # "two_stage": gather bounded candidates (co-visited neighbours, ANN searches over content
    # and MF vectors, popular and fresh pools) plus retrieval_sample random rows, and score only
    # those with the same signals. "auto": two-stage once the catalogue holds at least
    # retrieval_min_items active items, where it is the cheaper of the two (the cross-over,
    # measured: docs/retrieval.md); the sources are kept up to date from the start either way
    # (per event as cheap as none, measured on ml-latest-small; the content HNSW costs 2.3 KB
    # per item with a vector, and its inserts). "auto" is the default (issue 12). From
    # retrieval_min_items rows on, every path (exact included) takes the MF and content signals'
    # 0 from the list's retrieval_sample uniform rows instead of the whole catalogue, so the
    # two paths score alike (Recommender._scale_floor; below it nothing changed).
    retrieval: str = "auto"
    retrieval_index: str = "hnsw"  # "hnsw" (usearch) | "exact" (numpy scans: tests, tiny sets)
    retrieval_min_items: int = 50_000
    retrieval_sample: int = 1000
    # How the content HNSW stores the unit item vectors: "i8" (a quarter of f32's memory; the
    # candidates it finds are scored on the full float32 vectors, so only which rows it finds
    # can change: docs/retrieval.md measures the candidate recall) | "f16" | "f32"
    retrieval_content_dtype: str = "i8"
    # How the item index stores the full content vectors the lists are scored on: "f32" |
    # "i8" (a quarter of the memory: 10M items x 384 dims take 3.9 GB against 15.4; each row
    # scaled to +-127 with its own float32 scale, scores computed in float32; cosines move by
    # ~1e-3). For catalogues whose float32 vectors would not fit (docs/retrieval.md).
    item_vector_dtype: str = "f32"

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {self.diversity}")
        if self.new_item_slots < 0:
            raise ValueError(f"new_item_slots must be >= 0, got {self.new_item_slots}")
        if self.retrieval not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {RETRIEVALS}, got {self.retrieval!r}")
        if self.retrieval_content_dtype not in ("i8", "f16", "f32"):
            raise ValueError(
                "retrieval_content_dtype must be 'i8', 'f16' or 'f32', "
                f"got {self.retrieval_content_dtype!r}"
            )
        if self.item_vector_dtype not in VECTOR_DTYPES:
            raise ValueError(
                f"item_vector_dtype must be 'f32' or 'i8', got {self.item_vector_dtype!r}"
            )
        unknown = [n for n in self.ranker_features if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)}")

    def digest(self) -> str:
        fields = dataclasses.asdict(self)
        if self.ranker == "fixed":  # unused settings: a fixed model's version stays as it was
            fields = {k: v for k, v in fields.items() if not k.startswith(_RANKER_ONLY)}
        if not self.diversity:  # off: the version of a model from before the knob
            fields = {k: v for k, v in fields.items() if not k.startswith("diversity")}
        # off, or a config pickled before the setting (no value of its own): the version of a
        # model from before the slot
        if not self.__dict__.get("new_item_slots", 0):
            fields.pop("new_item_slots")
        if "retrieval_content_dtype" not in self.__dict__:  # pickled before it (its index: f32)
            fields.pop("retrieval_content_dtype")
        if self.__dict__.get("item_vector_dtype", "f32") == "f32":  # the default, or from before
            fields.pop("item_vector_dtype")
        if self.retrieval == "exact":  # the version of a model from before two-stage lists
            fields = {k: v for k, v in fields.items() if not k.startswith("retrieval")}
        raw = json.dumps(fields, sort_keys=True).encode()
        return hashlib.blake2b(raw, digest_size=4).hexdigest()
