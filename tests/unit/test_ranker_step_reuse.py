"""The learned ranker's step reuses the features of the list just published (worker path)."""

from __future__ import annotations

import recstream.recommender as recommender_module
from recstream.datasets import synthetic_stream
from recstream.recommender import Recommender, RecommenderConfig


def test_a_purchased_list_then_the_purchase_costs_one_feature_pass(monkeypatch):
    items, events = synthetic_stream(n_users=20, n_items=40, n_events=600, seed=2)
    rec = Recommender(RecommenderConfig(ranker="learned"))
    for item in items:
        rec.upsert_item(item)
    for e in events[:500]:
        rec.learn(e)
    calls = []
    real = recommender_module.feature_matrix

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(recommender_module, "feature_matrix", counted)
    purchase = next(
        e
        for e in events[500:]
        if e.type == "purchase"
        and rec.users.get(e.user_id) is not None
        and rec.index.rows[e.item_id] not in rec.users.get(e.user_id).seen
    )
    before = dict(rec.ranker.weights)
    rec.recommend(purchase.user_id, 10, exclude="purchased")  # what a worker publishes
    rec.learn(purchase)
    assert calls == [purchase.user_id]  # the step took the list's features, no second pass
    assert dict(rec.ranker.weights) != before  # and it did step
