"""Co-interaction pairs for the encoder's fine-tune (:mod:`recstream.finetune`).

Two items a user takes one after the other are, for this shop, alike, whatever their texts say:

* :func:`user_sequences`: each user's items in stream order;
* :func:`co_interaction_pairs`: unordered pairs within ``window`` steps, counted over users,
  the most frequent first, at most ``max_per_item`` per item so that a few blockbusters do not
  fill the budget;
* :func:`text_pairs`: item ids → the texts the encoder sees;
* :func:`distinct_batches`: batches in which no text appears twice, since every other positive
  of a batch is a negative for an anchor (in-batch negatives) and a duplicate would be a
  "negative" equal to the positive.

>>> seqs = user_sequences([("u1", "a"), ("u1", "b"), ("u2", "a"), ("u1", "b"), ("u2", "b")])
>>> seqs
[['a', 'b'], ['a', 'b']]
>>> co_interaction_pairs(seqs)
[('a', 'b', 2)]
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["co_interaction_pairs", "distinct_batches", "text_pairs", "user_sequences"]


def user_sequences(
    interactions: Iterable[tuple[str, str]] | Iterable[Any],
) -> list[list[str]]:
    """Each user's items in stream order, immediate repeats collapsed (a view then a purchase
    of one item is one step). Takes ``(user_id, item_id)`` tuples or objects with ``user_id``
    and ``item_id`` (:class:`~recstream.events.Event`); users in order of first appearance."""
    by_user: dict[str, list[str]] = {}
    for row in interactions:
        user, item = row if isinstance(row, tuple) else (row.user_id, row.item_id)
        seq = by_user.setdefault(user, [])
        if not seq or seq[-1] != item:
            seq.append(item)
    return [seq for seq in by_user.values() if len(seq) > 1]


def co_interaction_pairs(
    sequences: Iterable[Sequence[str]],
    *,
    window: int = 1,
    min_count: int = 1,
    max_pairs: int | None = None,
    max_per_item: int | None = None,
) -> list[tuple[str, str, int]]:
    """Unordered item pairs within ``window`` steps of each other in a sequence, with counts.

    Returns ``(a, b, count)`` with ``a < b``, the most frequent first (ties by ids, so the
    result is deterministic), ``count >= min_count``; with ``max_per_item`` a pair is skipped
    once either item is in that many kept pairs, then at most ``max_pairs`` are kept.

    >>> co_interaction_pairs([["a", "b", "c"], ["b", "a"]], window=2)
    [('a', 'b', 2), ('a', 'c', 1), ('b', 'c', 1)]
    >>> co_interaction_pairs([["a", "b", "c"], ["b", "a"]], max_per_item=1)
    [('a', 'b', 2)]
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    counts: Counter[tuple[str, str]] = Counter()
    for seq in sequences:
        for i, a in enumerate(seq):
            for b in seq[i + 1 : i + 1 + window]:
                if a != b:
                    counts[(a, b) if a < b else (b, a)] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept: list[tuple[str, str, int]] = []
    per_item: Counter[str] = Counter()
    for (a, b), n in ranked:
        if n < min_count or (max_pairs is not None and len(kept) >= max_pairs):
            break
        if max_per_item is not None and max(per_item[a], per_item[b]) >= max_per_item:
            continue
        per_item[a] += 1
        per_item[b] += 1
        kept.append((a, b, n))
    return kept


def distinct_batches(
    pairs: Sequence[tuple[str, str]], batch_size: int, rng: random.Random
) -> list[list[tuple[str, str]]]:
    """Shuffle ``pairs`` into batches in which no text appears twice (in either column).

    A pair that would repeat a text waits for a later batch; the last, incomplete batch is kept
    when it holds at least two pairs (one pair has no negative). Pairs of two equal texts are
    dropped: nothing to learn from them.

    >>> batches = distinct_batches([("a", "b"), ("a", "c"), ("d", "e")], 2, random.Random(0))
    >>> sorted(len(b) for b in batches), all(len({t for p in b for t in p}) == 2 * len(b)
    ...                                        for b in batches)
    ([2], True)
    """
    queue = [p for p in pairs if p[0] != p[1]]
    rng.shuffle(queue)
    batches: list[list[tuple[str, str]]] = []
    while queue:
        batch: list[tuple[str, str]] = []
        used: set[str] = set()
        rest: list[tuple[str, str]] = []
        for pair in queue:
            if len(batch) < batch_size and pair[0] not in used and pair[1] not in used:
                batch.append(pair)
                used.update(pair)
            else:
                rest.append(pair)
        if len(batch) >= 2:
            batches.append(batch)
        if len(rest) == len(queue) or len(batch) < 2:
            break  # only pairs that clash with each other are left
        queue = rest
    return batches


def text_pairs(
    pairs: Iterable[tuple[str, str, int]] | Iterable[tuple[str, str]],
    texts: Mapping[str, str],
) -> list[tuple[str, str]]:
    """Item-id pairs → text pairs; pairs with an item without text, or of equal texts, dropped.

    >>> text_pairs([("a", "b", 3), ("a", "z", 1), ("a", "c", 1)], {"a": "x", "b": "y", "c": "x"})
    [('x', 'y')]
    """
    out: list[tuple[str, str]] = []
    for pair in pairs:
        ta, tb = texts.get(pair[0], ""), texts.get(pair[1], "")
        if ta and tb and ta != tb:
            out.append((ta, tb))
    return out
