"""The diversity knob: MMR re-rank (recstream/diversify.py) and RecommenderConfig.diversity."""

from __future__ import annotations

import numpy as np
import pytest

from recstream.datasets import synthetic_stream
from recstream.diversify import mmr
from recstream.recommender import Recommender, RecommenderConfig


def _pairwise_similarity(rows, vectors) -> float:
    v = vectors[rows]
    s = v @ v.T
    m = len(rows)
    return float((s.sum() - np.trace(s)) / (m * (m - 1)))


def test_mmr_keeps_the_order_at_zero_and_spreads_the_list_as_it_grows() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    # 30 items in 3 tight clusters; the scores favour cluster 0 throughout
    vectors = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(30, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    scores = np.concatenate([np.linspace(1.0, 0.9, 10), np.linspace(0.8, 0.7, 20)])
    order = np.argsort(-scores, kind="stable")
    has = np.ones(30, dtype=bool)
    plain = mmr(order, scores[order], vectors, has, 5, 0.0)
    assert plain.tolist() == order[:5].tolist()
    sims = [
        _pairwise_similarity(mmr(order, scores[order], vectors, has, 5, d), vectors)
        for d in (0.0, 0.3, 0.7)
    ]
    assert sims[0] > sims[1] >= sims[2]
    spread = mmr(order, scores[order], vectors, has, 5, 0.7)
    assert spread[0] == order[0]  # the best item always leads
    assert len(set(spread.tolist())) == 5
    assert {int(r) // 10 for r in spread} == {0, 1, 2}  # every cluster is in the list
    with pytest.raises(ValueError):
        mmr(order, scores[order], vectors, has, 5, 1.5)


def test_the_knob_in_the_recommender_and_its_version() -> None:
    items, events = synthetic_stream(n_users=30, n_items=60, n_events=2000, seed=4)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(items), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    models = {}
    for d in (0.0, 0.6):
        rec = Recommender(RecommenderConfig(diversity=d))
        for item in items:
            rec.upsert_item(item)
        rec.set_item_vectors([i.item_id for i in items], vectors)
        for e in events:
            rec.learn(e)
        models[d] = rec
    users = sorted({e.user_id for e in events})
    rows = {
        d: [[rec.index.row(r.item_id) for r in rec.recommend(u, 10)] for u in users]
        for d, rec in models.items()
    }
    assert rows[0.0] != rows[0.6]
    mean_sim = {
        d: np.mean([_pairwise_similarity(r, vectors) for r in rs]) for d, rs in rows.items()
    }
    assert mean_sim[0.6] < mean_sim[0.0]
    # off, the model's version is the one from before the knob existed
    assert RecommenderConfig(diversity=0.0).digest() == RecommenderConfig().digest()
    assert RecommenderConfig(diversity=0.6).digest() != RecommenderConfig().digest()
    with pytest.raises(ValueError):
        RecommenderConfig(diversity=-0.1)


def test_the_sweep_command_writes_every_value_and_the_plot(tmp_path) -> None:
    import json

    from recstream.cli import main
    from recstream.datasets import write_dataset

    items, events = synthetic_stream(n_users=20, n_items=30, n_events=600, seed=5)
    write_dataset(tmp_path / "shop", items, events)
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    args = ["diversity-sweep", str(tmp_path / "shop"), "--values", "0", "0.6"]
    assert main([*args, "--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert result["events"] == 300  # the first half only
    assert [r["diversity_setting"] for r in result["runs"]] == [0.0, 0.6]
    assert all(r["evaluated"] == result["runs"][0]["evaluated"] > 0 for r in result["runs"])
    assert png.stat().st_size > 10_000


def test_set_overrides_any_config_field_for_ablations() -> None:
    import argparse

    from recstream.ranker_report import add_arguments, hybrid_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--set", "w_mf=0", "--set", "mf_factors=8", "--diversity", "0.2"])
    config = hybrid_config(args)
    assert (config.w_mf, config.mf_factors, config.diversity) == (0.0, 8, 0.2)
    assert isinstance(config.mf_factors, int)
    assert hybrid_config(parser.parse_args([])) is None
    for bad in ("nonsense=1", "w_mf", "w_mf=high", "event_weights=1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--set", bad])
