"""The worker's fine-tune rounds (streams/finetuning.py), without torch and without Kafka.

The real :class:`~recstream.finetune_worker.EncoderTuner` runs each round; only its child
process (:class:`~recstream.finetune_job.FinetuneJob`) and the loading of the tuned model are
replaced, by a job that "re-encodes" each text to a known vector. What is checked is the glue:
the setting, the texts a round needs, the swap under the lock (vectors, encoder, a stale batch
in flight dropped, the queue re-encoded), the pointer and the restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from recstream import finetune_worker
from recstream.events import Event, Item
from recstream.finetune import FinetuneResult
from recstream.finetune_job import JobResult
from recstream.online import EncodeQueue
from recstream.recommender import Recommender
from streams.finetuning import EncoderFinetuning, finetune_interval

DIM = 4


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def tuned_vector(text: str) -> np.ndarray:
    return _unit(int(hashlib.sha1(text.encode()).hexdigest()[:8], 16))


class FakeEncoder:
    model_id = "tuned-1"
    max_length = 128

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([tuned_vector(t) for t in texts])


class FakeJob:
    """FinetuneJob's interface; "re-encodes" the catalogue with :func:`tuned_vector`."""

    started: ClassVar[list[FakeJob]] = []

    def __init__(self, pairs: Any, catalogue: Any, out_root: Any, config: Any, **kw: Any) -> None:
        self.pairs, self.catalogue = list(pairs), list(catalogue)
        FakeJob.started.append(self)

    def start(self) -> FakeJob:
        return self

    running = False

    async def wait(self) -> JobResult:
        texts = [t for _, t in self.catalogue]
        tuned = FinetuneResult(Path("/nowhere/ft"), "b", "a", 3, 1.0, [2.0, 1.0], 0, "cpu")
        return JobResult(
            tuned,
            FakeEncoder.model_id,
            [i for i, _ in self.catalogue],
            [hashlib.sha1(t.encode()).hexdigest() for t in texts],
            FakeEncoder().encode(texts),
        )

    def cancel(self) -> None:
        pass


class Host(EncoderFinetuning):
    """What Runtime gives the mixin."""

    def __init__(self, tmp: Path, interval: float = 60.0, store: str = "local") -> None:
        self.settings = SimpleNamespace(
            encoder_finetune_interval_s=interval,
            encoder_finetune_min_pairs=1,
            state_store=store,
            models_dir=str(tmp),
            app_id="test",
            encoder_device="cpu",
            encoder_batch_size=8,
            encoder_model="",
        )
        self.processor = SimpleNamespace(
            recommender=Recommender(), encode_queue=EncodeQueue(), changes=0
        )
        self.lock = asyncio.Lock()
        self.encoder = SimpleNamespace(model_id="base", max_length=128)
        self.redis = None
        self._pool = None
        self._wakeup = asyncio.Event()


ITEMS = [Item(item_id=f"i{n}", title=f"Film {n}", categories=("Drama",)) for n in range(6)]


def _catalogue(host: Host, items: list[Item], *, note: bool = True) -> None:
    rec = host.processor.recommender
    for item in items:
        rec.upsert_item(item)
    rec.set_item_vectors([i.item_id for i in items], np.stack([_unit(7)] * len(items)))
    if note:
        host.note_encoded(items, [i.item_id for i in items])
    for n, user in enumerate(["u1", "u2", "u3"]):  # co-interactions: i0-i1, i1-i2, ...
        for item in items[n : n + 3]:
            rec.learn(Event(f"{user}{item.item_id}", user, item.item_id, "click", 1.0))


@pytest.fixture(autouse=True)
def fake_job(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeJob.started = []
    monkeypatch.setattr(finetune_worker, "FinetuneJob", FakeJob)
    monkeypatch.setattr(finetune_worker.EncoderTuner, "_load", lambda self, path: FakeEncoder())


def test_off_by_default_and_in_group_mode(tmp_path: Path) -> None:
    assert finetune_interval(SimpleNamespace()) == 0.0
    for host in (Host(tmp_path, interval=0.0), Host(tmp_path, store="kafka")):
        asyncio.run(asyncio.wait_for(host.finetune_loop(), 1.0))  # returns at once
        assert host.note_encoded(ITEMS, [i.item_id for i in ITEMS]) == []
        assert not host._tune_items


def test_a_round_swaps_vectors_and_encoder_and_requeues_the_queue(tmp_path: Path) -> None:
    host = Host(tmp_path)
    _catalogue(host, ITEMS)
    queue = host.processor.encode_queue
    changed = Item(item_id="i0", title="Film 0, recut", categories=("Drama",))
    host.processor.recommender.upsert_item(changed)
    queue.put(changed)
    stale_batch = queue.take(10)  # in flight with the old encoder while the round swaps

    stats = asyncio.run(host.finetune_round())

    assert stats is not None and stats["model_version"] == "tuned-1"
    [job] = FakeJob.started
    assert sorted(i for i, _ in job.catalogue) == sorted(i.item_id for i in ITEMS)
    rec = host.processor.recommender
    for item in ITEMS[1:]:
        assert np.allclose(rec.index.vector(item.item_id), tuned_vector(item.text))
    assert host.encoder.model_id == "tuned-1"
    assert queue.complete(stale_batch) == []  # the old encoder's result is dropped...
    assert queue.waiting == 1 and host._wakeup.is_set()  # ...and i0 waits for the new one
    assert host.processor.changes == 1
    pointer = json.loads((host.finetune_dir / "current.json").read_text())
    assert pointer["model_version"] == "tuned-1"
    lines = (host.finetune_dir / "items.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["item_id"] for line in lines) == [f"i{n}" for n in range(6)]


def test_no_round_while_texts_are_unknown(tmp_path: Path) -> None:
    host = Host(tmp_path)
    _catalogue(host, ITEMS[:3])
    _catalogue(host, ITEMS[3:], note=False)  # encoded before tuning was switched on
    assert asyncio.run(host.finetune_round()) is None
    assert FakeJob.started == [] and host.encoder.model_id == "base"


def test_restart_takes_the_tuned_encoder_back_only_with_its_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Host(tmp_path)
    _catalogue(first, ITEMS)
    assert asyncio.run(first.finetune_round()) is not None
    monkeypatch.setattr(Host, "_load_tuned", lambda self, path: FakeEncoder())

    # a checkpoint written after the swap: the tuned vectors, the tuned encoder
    after = Host(tmp_path)
    after.processor.recommender = first.processor.recommender
    assert asyncio.run(after.restore_finetuned()) is True
    assert after.encoder.model_id == "tuned-1" and len(after._tune_items) == len(ITEMS)

    # a checkpoint from before the swap: the base vectors, the base encoder
    before = Host(tmp_path)
    _catalogue(before, ITEMS, note=False)
    assert asyncio.run(before.restore_finetuned()) is False
    assert before.encoder.model_id == "base"


class BaseEncoder:
    model_id = "base"
    max_length = 128

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([_unit(7)] * len(texts))


def test_the_worker_tunes_beside_its_encoder_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real Runtime: items encoded by the base encoder, a round in the encoder task swaps the
    tuned one in, and an item arriving afterwards is encoded by the tuned one."""
    from recstream.config import Settings
    from recstream.pipeline import KafkaMessage, StreamProcessor
    from streams import finetuning
    from streams.runtime import Runtime

    monkeypatch.setattr(finetuning, "finetune_interval", lambda settings: 0.05)
    settings = Settings().replace(models_dir=str(tmp_path), encoder_interval_s=0.0)

    async def publish(topic: str, key: bytes | None, value: bytes) -> None:
        pass

    processor = StreamProcessor(Recommender(seed=1), k=5, dedup_window=100, max_event_bytes=2048)
    rt = Runtime(settings, processor, publish=publish, redis=None, encoder=BaseEncoder())
    rt._tuner().min_pairs = 1
    topic = settings.topic("items")

    def message(item: Item, offset: int) -> KafkaMessage:
        body = json.dumps({"item_id": item.item_id, "title": item.title, "categories": ["Drama"]})
        return KafkaMessage(body.encode(), topic, 0, offset, key=item.item_id.encode())

    async def until(condition: Any) -> None:
        while not condition():
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        task = asyncio.create_task(rt.encoder_loop())
        try:
            for n, item in enumerate(ITEMS):
                await rt.on_item(message(item, n))
            index = processor.recommender.index
            await until(lambda: int(index.has_vector.sum()) == len(ITEMS))
            assert rt.encoder.model_id == "base"
            for n, user in enumerate(["u1", "u2", "u3"]):
                for item in ITEMS[n : n + 3]:
                    processor.recommender.learn(Event(f"{user}{n}", user, item.item_id, "view", 1))
            await until(lambda: rt.encoder.model_id == "tuned-1")
            assert np.allclose(index.vector("i1"), tuned_vector(ITEMS[1].text))
            late = Item(item_id="late", title="Late film", categories=("Drama",))
            await rt.on_item(message(late, 99))
            await until(lambda: index.vector("late") is not None)
            assert np.allclose(index.vector("late"), tuned_vector(late.text))
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert FakeJob.started  # the rounds ran through EncoderTuner's job


def test_a_round_removes_the_model_and_cache_it_replaces(tmp_path: Path) -> None:
    host = Host(tmp_path)
    _catalogue(host, ITEMS)
    old_model = host.finetune_dir / "models" / "all-MiniLM-L6-v2-ft-old"
    cache = tmp_path / "cache" / "encoder"
    for folder in (old_model, cache / "tuned-0", cache / "base"):
        folder.mkdir(parents=True)
    (host.finetune_dir / "current.json").write_text(
        json.dumps({"path": str(old_model), "model_version": "tuned-0"})
    )
    assert asyncio.run(host.finetune_round()) is not None
    assert not old_model.exists() and not (cache / "tuned-0").exists()
    assert (cache / "base").is_dir()  # the base model's vectors are never touched
