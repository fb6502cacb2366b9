"""RECSTREAM_RANKER and _RANKER_FEATURES pick the model a worker starts with, in both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstream.config import Settings
from streams.worker import restore_processor


@pytest.mark.parametrize("store", ["local", "kafka"])
@pytest.mark.parametrize("ranker", ["fixed", "learned"])
def test_a_fresh_worker_model_has_the_configured_ranker(
    tmp_path: Path, store: str, ranker: str
) -> None:
    settings = Settings(state_store=store, ranker=ranker)
    _, processor = restore_processor(settings, {}, tmp_path / "checkpoints")
    rec = processor.recommender
    assert rec.config.ranker == ranker
    assert (rec.ranker is not None) == (ranker == "learned")
    if store == "kafka":  # several workers: the ranker's steps go out with the item deltas
        delta = rec.item_delta()
        assert (delta["ranker"] is not None) == (ranker == "learned")


def test_an_unknown_ranker_is_refused() -> None:
    with pytest.raises(ValueError, match="RECSTREAM_RANKER"):
        Settings(ranker="clever")


@pytest.mark.parametrize("store", ["local", "kafka"])
def test_ranker_features_reach_a_fresh_worker_model(tmp_path: Path, store: str) -> None:
    settings = Settings(state_store=store, ranker_features="+content_taste")
    _, processor = restore_processor(settings, {}, tmp_path / "checkpoints")
    features = processor.recommender.ranker.features
    assert features[-1] == "content_taste" and "transition" in features  # the default, plus
    only = Settings(state_store=store, ranker_features="covisit, content_taste")
    _, processor = restore_processor(only, {}, tmp_path / "checkpoints-only")
    assert processor.recommender.ranker.features == ("covisit", "content_taste")


def test_an_unknown_ranker_feature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RECSTREAM_RANKER_FEATURES: unknown feature"):
        restore_processor(Settings(ranker_features="+clever"), {}, tmp_path / "checkpoints")
