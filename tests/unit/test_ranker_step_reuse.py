"""The learned ranker's step reuses the features of the list just ranked only when they are
exactly the ones a fresh pass would give (the protocol's "seen" list): a worker's model must
not depend on which lists it happened to publish (one per batch, not per event)."""

from __future__ import annotations

import copy

import pytest

import recstream.recommender_lists as lists_module
import recstream.recommender_ranking as ranking_module
from recstream.datasets import synthetic_stream
from recstream.recommender import Recommender, RecommenderConfig


@pytest.fixture
def warm():
    items, events = synthetic_stream(n_users=20, n_items=40, n_events=600, seed=2)
    rec = Recommender(RecommenderConfig(ranker="learned"))
    for item in items:
        rec.upsert_item(item)
    for e in events[:500]:
        rec.learn(e)
    purchase = next(
        e
        for e in events[500:]
        if e.type == "purchase"
        and rec.users.get(e.user_id) is not None
        and rec.index.rows[e.item_id] not in rec.users.get(e.user_id).seen
    )
    return rec, purchase


def _count_passes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = lists_module.feature_matrix

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    # the list's pass (recommender) and the step's own (recommender_ranking)
    monkeypatch.setattr(lists_module, "feature_matrix", counted)
    monkeypatch.setattr(ranking_module, "feature_matrix", counted)
    return calls


def test_a_seen_list_then_the_purchase_costs_one_feature_pass(warm, monkeypatch):
    rec, purchase = warm
    plain = copy.deepcopy(rec)
    plain.learn(purchase)  # no list before the event: the step's own feature pass
    calls = _count_passes(monkeypatch)
    rec.recommend(purchase.user_id, 10, exclude="seen")  # what the evaluation ranks
    rec.learn(purchase)
    assert calls == [purchase.user_id]  # the step took the list's features, no second pass
    assert dict(rec.ranker.weights) == dict(plain.ranker.weights) != {}  # and the same step


def test_a_published_purchased_list_does_not_change_what_the_ranker_learns(warm, monkeypatch):
    rec, purchase = warm
    plain = copy.deepcopy(rec)
    before = dict(rec.ranker.weights)
    plain.learn(purchase)
    calls = _count_passes(monkeypatch)
    rec.recommend(purchase.user_id, 10, exclude="purchased")  # what a worker publishes
    rec.learn(purchase)
    assert calls == [purchase.user_id, purchase.user_id]  # the step scored its own candidates
    assert dict(rec.ranker.weights) == dict(plain.ranker.weights) != before
