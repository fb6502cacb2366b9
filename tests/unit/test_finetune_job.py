"""The fine-tune as a background job: a spawned process, an event loop left free, the swap.

The job runs the real bundled MiniLM (two steps) in a real spawned process; the swap is checked
on a real :class:`~recstream.recommender.Recommender`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from recstream.encoder import ItemEncoder
from recstream.evaluate import evaluate
from recstream.events import Event, Item
from recstream.finetune import FinetuneConfig
from recstream.finetune_eval import SwapAt
from recstream.finetune_job import (
    FinetuneJob,
    JobResult,
    align,
    pairs_from_recommender,
    run_job,
    swap_vectors,
)
from recstream.recommender import Recommender

pytest.importorskip("torch")

PAIRS = [
    ("Toy Story (1995) Categories: Animation.", "Heat (1995) Categories: Crime, Thriller."),
    ("Notting Hill (1999) Categories: Romance.", "Alien (1979) Categories: Horror, Sci-Fi."),
    ("Fargo (1996) Categories: Crime.", "Mary Poppins (1964) Categories: Musical."),
    ("The Matrix (1999) Categories: Sci-Fi.", "Amélie (2001) Categories: Romance."),
]
CATALOGUE = [("i1", "Heat (1995)"), ("i2", "Toy Story (1995)"), ("i3", "Alien (1979)")]
CONFIG = FinetuneConfig(max_steps=2, batch_size=4, lr=1e-4, device="cpu")


def test_background_job_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """The loop ticks every 10 ms while the job (process start, torch import, MiniLM steps,
    re-encode: seconds) runs; a job run on the loop, or in-process, would stall it."""
    gaps: list[float] = []

    async def main() -> JobResult:
        job = FinetuneJob(PAIRS, CATALOGUE, tmp_path / "ft", CONFIG).start()
        waiting = asyncio.create_task(job.wait())
        last = time.perf_counter()
        while not waiting.done():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        return await waiting

    started = time.perf_counter()
    result = asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert elapsed > 1.0, "the job ended too soon to prove anything"
    assert len(gaps) > 0.3 * elapsed / 0.01  # the loop ran most of its ticks
    assert max(gaps) < 0.5, max(gaps)
    assert result.finetune.steps == 2
    assert result.item_ids == ["i1", "i2", "i3"]
    # the vectors are the tuned encoder's, and carry its version
    encoder = ItemEncoder(result.finetune.path, device="cpu", cache=False)
    assert result.model_version == encoder.model_id
    assert result.model_version != ItemEncoder(device="cpu", cache=False).model_id
    np.testing.assert_allclose(result.vectors, encoder.encode([t for _, t in CATALOGUE]), atol=1e-5)


def test_cancelled_wait_ends_the_process(tmp_path: Path) -> None:
    job = FinetuneJob(PAIRS, CATALOGUE, tmp_path, FinetuneConfig(max_steps=1000, batch_size=4))

    async def main() -> None:
        waiting = asyncio.create_task(job.start().wait())
        await asyncio.sleep(0.5)
        assert job.running
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert not job.running
    assert not list(tmp_path.glob("*-ft-*"))  # nothing half-saved under a final name


def test_a_failing_job_reports_the_childs_error(tmp_path: Path) -> None:
    job = FinetuneJob(PAIRS, CATALOGUE, tmp_path, CONFIG, model=tmp_path / "no-such-model")
    with pytest.raises(RuntimeError, match="offline"):
        job.start().result()


def test_run_job_fills_the_cache_the_worker_reads(tmp_path: Path) -> None:
    result = run_job(PAIRS, CATALOGUE, tmp_path / "ft", CONFIG, cache_dir=tmp_path / "cache")
    worker_encoder = ItemEncoder(result.finetune.path, device="cpu", cache_dir=tmp_path / "cache")
    vectors = worker_encoder.encode([t for _, t in CATALOGUE])
    assert (worker_encoder.items_encoded, worker_encoder.cache_hits) == (0, 3)
    np.testing.assert_array_equal(vectors, result.vectors)
    assert result.text_hashes == [Item(i, title=t).text_hash for i, t in CATALOGUE]


# --- the swap --------------------------------------------------------------------------------
def _result(ids: list[str], texts: list[str], vectors: np.ndarray) -> JobResult:
    hashes = [Item(i, title=t).text_hash for i, t in zip(ids, texts, strict=True)]
    return JobResult(None, "v2", ids, hashes, vectors)  # type: ignore[arg-type]


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], np.ndarray]] = []

    def set_item_vectors(self, ids, vectors) -> None:
        self.calls.append((list(ids), np.array(vectors)))


def test_swap_is_one_call_and_skips_changed_texts() -> None:
    vectors = np.eye(3, dtype=np.float32)
    result = _result(["a", "b", "c"], ["A", "B", "C"], vectors)
    model = Recording()
    current = {
        "a": Item("a", title="A").text_hash,
        "b": Item("b", title="B, edited while the job ran").text_hash,
        "d": Item("d", title="D, new since").text_hash,
    }  # c was deleted meanwhile
    todo = swap_vectors(model, result, current)
    assert len(model.calls) == 1
    ids, installed = model.calls[0]
    assert ids == ["a"]
    np.testing.assert_array_equal(installed, vectors[:1])
    assert sorted(todo) == ["b", "d"]  # to encode again, with the tuned encoder


def test_swap_into_a_recommender_replaces_every_vector() -> None:
    rec = Recommender(seed=1)
    rng = np.random.default_rng(0)
    old = rng.standard_normal((4, 8)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    ids = ["a", "b", "c", "d"]
    for i in ids:
        rec.upsert_item(Item(i, title=i))
    rec.set_item_vectors(ids, old)
    new = old[:, ::-1].copy()
    before = rec.model_version
    assert swap_vectors(rec, _result(ids, ids, new)) == []
    np.testing.assert_allclose(np.stack([rec.index.vector(i) for i in ids]), new, atol=1e-6)
    # the lists from now on carry a new model_version, naming the tuned encoder ("v2")
    assert rec.encoder_version == "v2" and rec.model_version != before
    assert rec.model_version.startswith("hybrid-") and rec.model_version.endswith("-0")
    other = Recommender(seed=1)
    other.set_encoder_version("v3")
    assert other.model_version not in (before, rec.model_version)
    other.set_encoder_version(None)  # back to the base encoder: the version it had
    assert other.model_version == before


def test_align_keeps_geometry_and_turns_towards_the_old_space() -> None:
    rng = np.random.default_rng(1)
    old = rng.standard_normal((50, 16))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    new = old @ rotation + 0.05 * rng.standard_normal((50, 16))
    aligned = align(new, old)
    np.testing.assert_allclose(aligned @ aligned.T, new @ new.T, atol=1e-4)
    assert np.abs(aligned - old).mean() < 0.1 < np.abs(new - old).mean()


def test_pairs_from_a_live_recommender() -> None:
    rec = Recommender(seed=1)
    for i in "abcx":
        rec.upsert_item(Item(i, title=i))
    stream = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "x")]
    for n, (u, i) in enumerate(stream):
        rec.learn(Event(str(n), u, i, "view", float(n)))
    assert pairs_from_recommender(rec) == [("a", "b", 2), ("b", "c", 1)]


# --- the evaluation --------------------------------------------------------------------------
def test_swap_at_the_holdout_boundary_inside_evaluate() -> None:
    items = [Item(i, title=i) for i in "abc"]
    events = [Event(str(n), f"u{n % 2}", "abc"[n % 3], "purchase", float(n)) for n in range(9)]
    model = Recording()
    model.learn = lambda event: None  # type: ignore[attr-defined]
    model.recommend = lambda user, k, exclude=None: []  # type: ignore[attr-defined]
    wrapped = SwapAt(model, 4, ["a", "b", "c"], np.full((3, 2), 2.0, np.float32))
    evaluate(wrapped, items, events, 2, vectors=(["a", "b", "c"], np.ones((3, 2), np.float32)))
    assert wrapped.swapped_at == 4
    assert [float(v[0, 0]) for _, v in model.calls] == [1.0, 2.0]  # base, then tuned


@pytest.mark.slow
def test_evaluate_cli_finetune_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from recstream.cli import main as cli_main
    from recstream.datasets import synthetic_stream, write_dataset

    items, events = synthetic_stream(n_users=30, n_items=25, n_events=600, seed=2)
    write_dataset(tmp_path / "shop", items, events)
    monkeypatch.setenv("RECSTREAM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("RECSTREAM_ENCODER_DEVICE", "cpu")
    out = tmp_path / "out.json"
    argv = ["evaluate", str(tmp_path / "shop"), "--holdout", "0.5", "--json", str(out)]
    assert cli_main([*argv, "--finetune-encoder", "--finetune-steps", "2"]) == 0
    assert "encoder fine-tuned on" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["finetune"]["swapped_after_events"] == report["split_at"] == 300
    assert report["finetune"]["steps"] == 2 and report["finetune"]["pairs"] > 0
    assert report["finetune"]["mean_cos_old_new"] < 1.0
    assert cli_main(["evaluate", str(tmp_path / "shop"), "--finetune-encoder"]) == 2
    assert "needs --holdout" in capsys.readouterr().err


# --- the worker's round ----------------------------------------------------------------------
def test_encoder_tuner_round_swaps_a_live_recommender(tmp_path: Path) -> None:
    from recstream.finetune_worker import EncoderTuner

    titles = {f"i{n}": f"{a} / {b}" for n, (a, b) in enumerate(PAIRS)}
    titles |= {f"j{n}": b for n, (_, b) in enumerate(PAIRS)}
    items = {i: Item(i, title=t) for i, t in titles.items()}
    rec = Recommender(seed=1)
    for item in items.values():
        rec.upsert_item(item)
    for n in range(len(PAIRS)):  # user n takes i_n then j_n: the pairs to learn
        for k, item_id in enumerate((f"i{n}", f"j{n}")):
            rec.learn(Event(f"{n}-{k}", f"u{n}", item_id, "click", float(n)))
    late = Item("new", title="arrived while the job ran")
    tuner = EncoderTuner(
        tmp_path / "ft",
        CONFIG,
        cache_dir=tmp_path / "cache",
        min_pairs=2,
        encoder_kwargs={"device": "cpu"},
    )

    async def main():
        lock = asyncio.Lock()
        catalogue = lambda: [(i, it.text) for i, it in items.items()]  # noqa: E731
        current = lambda: {i: it.text_hash for i, it in (items | {"new": late}).items()}  # noqa: E731
        return await tuner.run_once(rec, catalogue, current, lock)

    outcome = asyncio.run(main())
    assert outcome is not None and outcome.to_encode == ["new"]
    assert outcome.stats["swapped"] == len(items) and outcome.stats["pairs"] == len(PAIRS)
    assert outcome.encoder.model_id == outcome.job.model_version
    ids = list(items)
    expected = outcome.encoder.encode([items[i].text for i in ids])
    assert (outcome.encoder.items_encoded, outcome.encoder.cache_hits) == (0, len(ids))
    np.testing.assert_allclose(np.stack([rec.index.vector(i) for i in ids]), expected, atol=1e-5)
    # too few pairs: no round
    tuner.min_pairs = 10_000
    assert asyncio.run(tuner.run_once(rec, lambda: [], dict, asyncio.Lock())) is None
