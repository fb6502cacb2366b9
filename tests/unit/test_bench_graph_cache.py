"""bench/two_stage.py keeps the content graph of a large build and loads it on the next run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is not an installed package

from bench import two_stage


def test_a_second_build_loads_the_graph_and_lists_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(two_stage, "CACHE_FROM", 1000)
    monkeypatch.setattr(two_stage, "CACHE_DIR", tmp_path)
    first, users, took = two_stage.build(2000, n_users=30, n_events=400, seed=3)
    assert took["graph_from_cache"] is False
    graph = two_stage.cached_graph(2000, 3, "f32")
    assert graph.exists() and not list(tmp_path.glob("*.partial*"))
    again, users_again, took_again = two_stage.build(2000, n_users=30, n_events=400, seed=3)
    assert took_again["graph_from_cache"] is True
    assert users_again == users
    listed = [u for u in users if first.users.get(u) is not None][:10]
    assert listed
    for user in listed:
        assert [r.item_id for r in again.recommend(user, 10)] == [
            r.item_id for r in first.recommend(user, 10)
        ]
    # a smaller build than CACHE_FROM neither writes nor reads a graph
    _, _, small = two_stage.build(500, n_users=5, n_events=50, seed=3)
    assert "graph_from_cache" not in small
