"""The worker refits the content projection in its encoder thread, never inside a list."""

from __future__ import annotations

import asyncio

import numpy as np

import recstream.index as index_module
from recstream.events import Event, Item
from recstream.pipeline import StreamProcessor
from recstream.recommender import Recommender, RecommenderConfig
from streams import runtime
from streams.app import settings as app_settings


async def _publish(topic: str, key: bytes | None, value: bytes) -> None:
    pass


def test_the_projection_is_refitted_in_the_encoder_thread(monkeypatch):
    rec = Recommender(RecommenderConfig(content_dim=4), seed=1)
    items = [Item(f"i{n}", title=f"item {n}") for n in range(60)]
    for item in items:
        rec.upsert_item(item)
    rng = np.random.default_rng(0)
    rec.set_item_vectors([i.item_id for i in items], rng.normal(size=(60, 16)))
    processor = StreamProcessor(rec, k=5, dedup_window=100, max_event_bytes=2048)
    rt = runtime.Runtime(app_settings, processor, publish=_publish, redis=None, encoder=None)
    index = rec.index
    index.background_refit = True  # as projection_loop sets it
    loop_thread: list[str] = []
    real_fit = index_module.fit_basis

    def fit_in_place(*args, **kwargs):  # the in-place fit: only ever on the caller's thread
        loop_thread.append("fit")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(index_module, "fit_basis", fit_in_place)

    async def scenario() -> None:
        rec.learn(Event("e1", "u1", "i3", "view", 1.0))
        assert [r.item_id for r in rec.recommend("u1", 5)]  # full width: no basis yet
        assert await rt.refit_projection() is True
        assert index._basis is not None and index._basis_n == 60
        assert await rt.refit_projection() is False  # not due again
        rec.set_item_vectors([f"n{n}" for n in range(20)], rng.normal(size=(20, 16)))
        basis = index._basis
        rec.recommend("u1", 5)
        assert index._basis is basis  # due, but a list does not refit
        assert await rt.refit_projection() is True and index._basis_n == 80

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    finally:
        rt._pool.shutdown(wait=True)
    assert loop_thread == []
