"""The worker's encoder tuned to the shop: periodic fine-tune rounds (issue 11, item 7).

A mixin of :class:`streams.encoding.ItemEncoding` (so of :class:`streams.runtime.Runtime`),
off unless ``RECSTREAM_ENCODER_FINETUNE_INTERVAL_S`` > 0 (``Settings.
encoder_finetune_interval_s``; read with ``getattr`` so a Settings without the field is "off").
Every interval, one round of :class:`recstream.finetune_worker.EncoderTuner`: pairs from the
users' recent items and a snapshot of the catalogue under the model lock, the fine-tune and the
catalogue's re-encode in a spawned, niced process (the event loop never waits for it), then
under the lock, with no await in between (:meth:`_tuned_encoder_swapped`):

* every re-encoded vector installed with one ``set_item_vectors`` call;
* the tuned encoder made the worker's, so later items are encoded with it;
* every item of the encode queue put back (``EncodeQueue.put``): a batch the old encoder has in
  flight is then dropped when it completes, and everything waiting, changed texts and items
  that arrived during the round included, is encoded by the new one.

The job needs every item's text, which a worker does not keep (the recommender keeps hashes,
and the items topic is not re-read below the checkpoint's offsets). With tuning on, each
encoded item is kept (:attr:`_tune_items`) and appended to ``items.jsonl`` under
``<models_dir>/cache/finetuned/<app_id>/`` (in the encoder thread), rewritten whole at each
round; a round is skipped while more than 1 % of the items with a vector have no known text
(tuning switched on for a state built without it), since those would keep the old model's
vectors. ``current.json`` there names the encoder swapped in last; at the next start it is
used again only if the restored checkpoint's vectors are its own (a few are compared), so a
checkpoint older than the swap keeps the base encoder.

Group mode (``RECSTREAM_STATE_STORE=kafka``) is not supported: the workers would need one tuner
and a switch of model version shared over the item-vectors topic; the loop logs and stays off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recstream.events import Item

log = logging.getLogger("recstream.worker")

MAX_UNKNOWN_SHARE = 0.01  # items with a vector but no known text a round tolerates
RESTORE_SAMPLE = 8  # vectors compared at a restart to tell whose they are

__all__ = ["EncoderFinetuning", "finetune_interval"]


def finetune_interval(settings: Any) -> float:
    """Seconds between rounds; 0 (the default, and a Settings without the field): off.

    >>> class S: encoder_finetune_interval_s = 600.0
    >>> finetune_interval(S()), finetune_interval(object())
    (600.0, 0.0)
    """
    return max(0.0, float(getattr(settings, "encoder_finetune_interval_s", 0.0) or 0.0))


class EncoderFinetuning:
    """Mixin; expects Runtime's ``settings``, ``processor``, ``lock``, ``encoder``, ``redis``,
    ``_pool`` and ``_wakeup``. :meth:`finetune_loop` runs beside the encoder loop."""

    settings: Any
    processor: Any
    lock: asyncio.Lock
    encoder: Any
    redis: Any
    _pool: Any
    _wakeup: asyncio.Event

    # -- state (created lazily: the mixin has no __init__ of its own) ---------------------------
    @property
    def finetune_enabled(self) -> bool:
        return finetune_interval(self.settings) > 0 and self.settings.state_store != "kafka"

    @property
    def _tune_items(self) -> dict[str, Item]:
        """item_id → the item as last encoded here (its text is what a round re-encodes)."""
        return vars(self).setdefault("_tune_items_", {})

    @property
    def finetune_dir(self) -> Path:
        return Path(self.settings.models_dir) / "cache" / "finetuned" / self.settings.app_id

    def _tuner(self) -> Any:
        tuner = vars(self).get("_tuner_")
        if tuner is None:
            from recstream.finetune import FinetuneConfig
            from recstream.finetune_worker import EncoderTuner

            s = self.settings
            tuner = vars(self)["_tuner_"] = EncoderTuner(
                self.finetune_dir / "models",
                FinetuneConfig(
                    max_steps=int(getattr(s, "encoder_finetune_steps", 60)),
                    max_seconds=float(getattr(s, "encoder_finetune_seconds", 180.0)),
                    device=s.encoder_device,
                ),
                model=s.encoder_model or None,
                cache_dir=Path(s.models_dir) / "cache" / "encoder",
                min_pairs=int(getattr(s, "encoder_finetune_min_pairs", 500)),
                encoder_kwargs=self._encoder_kwargs(),
            )
        return tuner

    def _encoder_kwargs(self) -> dict[str, Any]:
        """The worker's encoder settings (streams/worker.py's make_encoder): the tuned encoder
        must produce exactly the vectors the job wrote to the cache (same model_id)."""
        from streams.encoding import encoder_threads

        s = self.settings
        kwargs: dict[str, Any] = {
            "device": s.encoder_device,
            "batch_size": s.encoder_batch_size,
            "num_threads": encoder_threads(),
        }
        if self.encoder is not None and hasattr(self.encoder, "max_length"):
            kwargs["max_length"] = int(self.encoder.max_length)
        return kwargs

    # -- the texts the job needs ----------------------------------------------------------------
    def note_encoded(self, batch: Iterable[Item], ids: Iterable[str]) -> list[Item]:
        """Remember the items whose vectors were just installed; the ones to append to disk."""
        if not self.finetune_enabled:
            return []
        by_id = {item.item_id: item for item in batch}
        kept = [by_id[i] for i in ids if i in by_id]
        for item in kept:
            self._tune_items[item.item_id] = item
        return kept

    def append_items_file(self, items: list[Item]) -> None:
        """Append ``items`` to ``items.jsonl`` (the encoder thread calls it; never raises)."""
        if not items:
            return
        try:
            self.finetune_dir.mkdir(parents=True, exist_ok=True)
            with (self.finetune_dir / "items.jsonl").open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(i.to_dict(), separators=(",", ":")) + "\n" for i in items)
        except OSError as exc:
            log.warning("encoder fine-tune: cannot keep item texts: %s", exc)

    def _write_items_file(self, items: list[Item]) -> None:
        """Rewrite ``items.jsonl`` with ``items`` only (atomic rename)."""
        self.finetune_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.finetune_dir / ".items.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(i.to_dict(), separators=(",", ":")) + "\n" for i in items)
        os.replace(tmp, self.finetune_dir / "items.jsonl")

    def _read_items_file(self) -> dict[str, Item]:
        items: dict[str, Item] = {}
        path = self.finetune_dir / "items.jsonl"
        with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError, TypeError):  # a line cut by a crash
                    d = json.loads(line)
                    d["categories"], d["tags"] = tuple(d["categories"]), tuple(d["tags"])
                    items[d["item_id"]] = Item(**d)
        return items

    def _live(self) -> tuple[dict[str, str], int]:
        """``item_id → text hash`` of the items with a vector whose text is known (what a round
        re-encodes), and how many items with a vector have none. Under the lock."""
        index = self.processor.recommender.index
        vectored = np.flatnonzero(index.active & index.has_vector)
        known, unknown = {}, 0
        for row in vectored:
            item = self._tune_items.get(index.ids[row])
            if item is None or not item.text:
                unknown += 1
            else:
                known[item.item_id] = item.text_hash
        return known, unknown

    # -- the loop -------------------------------------------------------------------------------
    async def finetune_loop(self) -> None:
        """Forever (while the worker runs): a round every interval. Off: returns at once."""
        interval = finetune_interval(self.settings)
        if interval <= 0:
            return
        if not self.finetune_enabled:
            log.warning("encoder fine-tune: not with RECSTREAM_STATE_STORE=kafka; off")
            return
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.finetune_round()
                except Exception:  # a failed round must not end the loop (nor the worker)
                    log.exception("encoder fine-tune: round failed; next in %.0f s", interval)
        finally:
            self._tuner().cancel()  # the worker stops: the child process goes too

    async def finetune_round(self) -> dict[str, Any] | None:
        """One round; its statistics, or None when skipped."""
        async with self.lock:
            known, unknown = self._live()
            snapshot = [self._tune_items[i] for i in known]
        total = len(known) + unknown
        if total == 0 or unknown > MAX_UNKNOWN_SHARE * total:
            log.warning(
                "encoder fine-tune: %d of %d items with a vector have no text known to the tuner "
                "(encoded before tuning was on): skipped; a state built with it on is needed",
                unknown,
                total,
            )
            return None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._write_items_file, snapshot)  # compacted
        items = self._tune_items

        def catalogue() -> list[tuple[str, str]]:
            return [(i, items[i].text) for i in self._live()[0]]

        outcome = await self._tuner().run_once(
            self.processor.recommender,
            catalogue,
            lambda: self._live()[0],
            self.lock,
            on_swap=self._tuned_encoder_swapped,
        )
        if outcome is None:
            return None
        job = outcome.job
        pointer = {"path": str(job.finetune.path), "model_version": job.model_version}
        previous = await loop.run_in_executor(None, self._write_pointer, pointer)
        if previous is not None and previous.get("model_version") != job.model_version:
            # in the encoder thread: after any batch the replaced encoder still has in flight
            await loop.run_in_executor(self._pool, self._remove_tuned, previous)
        if self.redis is not None:  # the serving side reads the vectors there too
            live = self._live()[0]
            rows = [i for i, h in enumerate(job.text_hashes) if live.get(job.item_ids[i]) == h]
            await self.redis.write_item_vectors(
                [job.item_ids[i] for i in rows],
                job.vectors[rows],
                [job.text_hashes[i] for i in rows],
            )
        return outcome.stats

    def _tuned_encoder_swapped(self, outcome: Any) -> None:
        """Under the lock, right after the vectors' swap (no await in between)."""
        self.encoder = outcome.encoder
        queue = self.processor.encode_queue
        for item in queue.items():
            queue.put(item)  # not in flight any more: an old-encoder batch result is dropped
        self.processor.changes += 1  # the next checkpoint holds the new vectors
        if queue.waiting:
            self._wakeup.set()

    def _write_pointer(self, pointer: dict[str, str]) -> dict[str, str] | None:
        """Write ``current.json``; the pointer it replaces (None: none)."""
        self.finetune_dir.mkdir(parents=True, exist_ok=True)
        path = self.finetune_dir / "current.json"
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        tmp = self.finetune_dir / ".current.json.tmp"
        tmp.write_text(json.dumps(pointer) + "\n")
        os.replace(tmp, path)
        return previous

    def _remove_tuned(self, pointer: dict[str, str]) -> None:
        """Delete a replaced tuned model and its vector cache (~90 MB and 1.5 KB per item for
        MiniLM): each round starts from the base model, so nothing needs them any more."""
        model = Path(pointer.get("path", ""))
        if not model.resolve().is_relative_to(self.finetune_dir.resolve()):
            return  # not a model a round wrote (the base model, a zero-step round): kept
        cache = Path(self.settings.models_dir) / "cache" / "encoder"
        for path in (model, cache / str(pointer.get("model_version"))):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    # -- a restart ------------------------------------------------------------------------------
    async def restore_finetuned(self) -> bool:
        """At the start: load the kept texts, and the tuned encoder when the restored vectors
        are its own. True when the worker now encodes with the tuned model."""
        if not self.finetune_enabled:
            return False
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(None, self._read_items_file)
        for item_id, item in stored.items():
            self._tune_items.setdefault(item_id, item)  # encoded since the start wins
        try:
            pointer = json.loads((self.finetune_dir / "current.json").read_text())
        except (OSError, ValueError):
            return False
        try:
            tuned = await loop.run_in_executor(self._pool, self._load_tuned, pointer["path"])
        except Exception as exc:  # a removed folder: the base encoder, and the next round
            log.warning("encoder fine-tune: %s not loaded: %s", pointer.get("path"), exc)
            return False
        if tuned.model_id != pointer.get("model_version"):
            return False
        async with self.lock:
            known = list(self._live()[0])[:RESTORE_SAMPLE]
            index = self.processor.recommender.index
            saved = np.stack([index.vector(i) for i in known]) if known else None  # copies
        if saved is None:
            return False
        texts = [self._tune_items[i].text for i in known]
        fresh = await loop.run_in_executor(self._pool, tuned.encode, texts)
        if float(np.min(np.sum(saved * fresh, axis=1))) < 0.999:
            log.info("encoder fine-tune: the checkpoint predates %s: base encoder", pointer)
            return False
        self.encoder = tuned
        log.info("encoder fine-tune: %s restored with the checkpoint", pointer["model_version"])
        return True

    def _load_tuned(self, path: str) -> Any:
        from recstream.encoder import ItemEncoder

        cache = Path(self.settings.models_dir) / "cache" / "encoder"
        return ItemEncoder(path, cache_dir=cache, **self._encoder_kwargs())
