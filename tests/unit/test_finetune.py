"""The encoder's contrastive fine-tune, on the real bundled all-MiniLM-L6-v2 (no mocked model).

Pairs and batching are pure Python; every claim about the model (the loss falls, the vectors
move, the version changes, the background process leaves an event loop free) is checked on
MiniLM itself, with budgets of a few steps so the file runs in about a minute on 2 CPUs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from recstream.encoder import ItemEncoder
from recstream.events import Event
from recstream.finetune import FinetuneConfig, finetune, in_batch_loss
from recstream.finetune_pairs import (
    co_interaction_pairs,
    distinct_batches,
    text_pairs,
    user_sequences,
)

torch = pytest.importorskip("torch")

# Pairs a shop's users made that the base model does not think alike (a cartoon with a heist
# thriller, ...): the fine-tune has something to learn, and the in-batch negatives are real.
PAIRS = [
    ("Toy Story (1995) Categories: Animation, Children, Comedy.", "Heat (1995) Categories: Crime."),
    (
        "Notting Hill (1999) Categories: Comedy, Romance.",
        "Alien (1979) Categories: Horror, Sci-Fi.",
    ),
    ("Fargo (1996) Categories: Crime, Thriller.", "Mary Poppins (1964) Categories: Musical."),
    ("The Matrix (1999) Categories: Action, Sci-Fi.", "Amélie (2001) Categories: Romance."),
    ("Jumanji (1995) Categories: Adventure, Fantasy.", "Schindler's List (1993) Categories: War."),
    ("Grumpier Old Men (1995) Categories: Comedy.", "Dune (2021) Categories: Sci-Fi, Adventure."),
    ("Sabrina (1995) Categories: Comedy, Romance.", "Die Hard (1988) Categories: Action."),
    ("Nixon (1995) Categories: Drama.", "Shrek (2001) Categories: Animation, Comedy."),
]
CONFIG = FinetuneConfig(max_steps=8, batch_size=8, lr=1e-4, warmup_steps=1, device="cpu")


def _pair_cosines(vectors: np.ndarray) -> np.ndarray:
    n = len(PAIRS)
    return np.sum(vectors[:n] * vectors[n:], axis=1)


def _texts() -> list[str]:
    return [a for a, _ in PAIRS] + [b for _, b in PAIRS]


@pytest.fixture(scope="module")
def base() -> ItemEncoder:
    return ItemEncoder(device="cpu", cache=False)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory):
    return finetune(PAIRS, tmp_path_factory.mktemp("ft"), CONFIG)


# --- pairs -----------------------------------------------------------------------------------
def test_user_sequences_collapse_repeats_and_drop_single_items() -> None:
    events = [
        Event(str(n), u, i, "view", float(n))
        for n, (u, i) in enumerate(
            [("u1", "a"), ("u2", "x"), ("u1", "a"), ("u1", "b"), ("u1", "a"), ("u3", "c")]
        )
    ]
    assert user_sequences(events) == [["a", "b", "a"]]


def test_co_interaction_pairs_count_rank_and_cap() -> None:
    seqs = [["a", "b", "c"], ["b", "a"], ["c", "d"], ["c", "d"], ["c", "d"]]
    assert co_interaction_pairs(seqs) == [("c", "d", 3), ("a", "b", 2), ("b", "c", 1)]
    assert co_interaction_pairs(seqs, min_count=2) == [("c", "d", 3), ("a", "b", 2)]
    assert co_interaction_pairs(seqs, max_pairs=1) == [("c", "d", 3)]
    # c is in one kept pair already: (b, c) is skipped, not the next distinct one
    assert co_interaction_pairs(seqs, max_per_item=1) == [("c", "d", 3), ("a", "b", 2)]
    assert ("a", "c", 1) in co_interaction_pairs(seqs, window=2)
    with pytest.raises(ValueError):
        co_interaction_pairs(seqs, window=0)


def test_text_pairs_drop_missing_and_equal_texts() -> None:
    texts = {"a": "A", "b": "B", "c": "A", "d": ""}
    assert text_pairs([("a", "b", 1), ("a", "c", 5), ("a", "d", 1), ("a", "z")], texts) == [
        ("A", "B")
    ]


def test_distinct_batches_never_repeat_a_text_in_a_batch() -> None:
    rng = random.Random(0)
    hub = [("hub", f"t{i}") for i in range(10)]  # every pair shares "hub": one per batch
    pairs = hub + [(f"x{i}", f"y{i}") for i in range(30)] + [("same", "same")]
    batches = distinct_batches(pairs, 8, rng)
    used = [p for b in batches for p in b]
    assert len(used) == len(set(used))  # no pair twice
    assert ("same", "same") not in used
    for batch in batches:
        texts = [t for p in batch for t in p]
        assert len(texts) == len(set(texts))
        assert 2 <= len(batch) <= 8
    assert sum(p[0] == "hub" for p in used) == len(batches)  # one hub pair in each batch


def test_in_batch_loss_prefers_the_right_positive() -> None:
    x = torch.nn.functional.normalize(
        torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    )
    right = in_batch_loss(x, x, 20.0)
    wrong = in_batch_loss(x, x.roll(1, dims=0), 20.0)
    assert float(right) < 0.1 < float(wrong)


# --- the fine-tune on MiniLM -----------------------------------------------------------------
def test_loss_decreases(tuned) -> None:
    assert tuned.steps == CONFIG.max_steps
    assert len(tuned.losses) == tuned.steps
    assert np.mean(tuned.losses[-2:]) < 0.5 * tuned.losses[0], tuned.losses


def test_tuned_model_is_a_new_version_with_moved_vectors(tuned, base: ItemEncoder) -> None:
    assert tuned.fingerprint != tuned.base_fingerprint
    enc = ItemEncoder(tuned.path, device="cpu", cache=False)
    assert enc.model_id != base.model_id
    before, after = base.encode(_texts()), enc.encode(_texts())
    assert after.shape == (len(_texts()), 384) and after.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert np.abs(after - before).max() > 1e-2
    # what it was trained on: the paired items moved towards each other
    assert _pair_cosines(after).mean() > _pair_cosines(before).mean() + 0.1


def test_saved_folder_is_whole_and_described(tuned) -> None:
    folder = tuned.path
    assert folder.name.startswith("all-MiniLM-L6-v2-ft-")
    assert not list(folder.parent.glob(".tmp-*"))
    card = json.loads((folder / "finetune.json").read_text())
    assert card["steps"] == tuned.steps and card["base_fingerprint"] == tuned.base_fingerprint
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_zero_learning_rate_changes_nothing(tmp_path: Path, base: ItemEncoder) -> None:
    """The control of the tests above: with lr 0 the same code leaves the vectors alone."""
    still = finetune(PAIRS, tmp_path, FinetuneConfig(max_steps=2, batch_size=8, lr=0.0))
    vectors = ItemEncoder(still.path, device="cpu", cache=False).encode(_texts())
    np.testing.assert_allclose(vectors, base.encode(_texts()), atol=1e-5)


def test_budget_in_seconds_and_frozen_layers(tmp_path: Path) -> None:
    from transformers import AutoModel

    from recstream.encoder import bundled_model_path

    config = FinetuneConfig(max_steps=50, max_seconds=0.01, batch_size=4, train_layers=1)
    result = finetune(PAIRS, tmp_path, config)
    assert result.steps == 1  # the deadline passed during the first step: it ends there
    before = AutoModel.from_pretrained(bundled_model_path(), local_files_only=True)
    after = AutoModel.from_pretrained(result.path, local_files_only=True)
    frozen = before.embeddings.word_embeddings.weight, after.embeddings.word_embeddings.weight
    assert torch.equal(*frozen)
    assert torch.equal(
        before.encoder.layer[4].output.dense.weight, after.encoder.layer[4].output.dense.weight
    )
    assert not torch.equal(
        before.encoder.layer[5].output.dense.weight, after.encoder.layer[5].output.dense.weight
    )


def test_no_batch_no_finetune(tmp_path: Path) -> None:
    result = finetune(PAIRS[:1], tmp_path, CONFIG)  # one pair has no in-batch negative
    assert result.steps == 0 and result.fingerprint == result.base_fingerprint
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
# fp16: the scaler skips a first step whose scaled gradients overflowed, as it should; torch
# then warns that the schedule stepped without the optimizer
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
def test_the_gpu_paths_run_on_cpu(
    dtype: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA branches (bf16 autocast; fp16 autocast with loss scaling), run on the CPU by
    making the device ask for them: the same loop, only the dtype differs."""
    import recstream.finetune as ft

    monkeypatch.setattr(ft, "_autocast_dtype", lambda device: getattr(torch, dtype))
    result = finetune(PAIRS, tmp_path, FinetuneConfig(max_steps=2, batch_size=8, lr=1e-4))
    assert result.steps == 2 and all(np.isfinite(result.losses))
    assert result.fingerprint != result.base_fingerprint  # the (scaled) steps were taken
