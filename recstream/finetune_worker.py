"""What a worker's periodic timer calls to tune its encoder: :class:`EncoderTuner`.

One round (:meth:`EncoderTuner.run_once`), all of it off the event loop but the two short
sections under the worker's lock:

1. under the lock: the co-interaction pairs of the users' recent events
   (:func:`~recstream.finetune_job.pairs_from_recommender`) and a snapshot of the catalogue's
   texts — a pass over dicts, no model work;
2. the fine-tune and the catalogue's re-encode in a spawned, niced process
   (:class:`~recstream.finetune_job.FinetuneJob`), awaited: the loop keeps serving;
3. the tuned :class:`~recstream.encoder.ItemEncoder` is loaded in a thread (it reads the
   vectors the job wrote to the shared encoder cache: nothing is encoded twice);
4. under the lock: every vector swapped in with one ``set_item_vectors`` call
   (:func:`~recstream.finetune_job.swap_vectors`); items whose text changed while the job ran,
   or that arrived since, are returned for the new encoder.

The caller (``streams/``) then makes the returned encoder the worker's and queues the returned
items for it. Each round starts from the base model (``model``), not from the previous tuned
one, so rounds do not drift further and further from the space the users' profiles were built
in; the pairs are the users' latest, so each round follows the shop as it is now.

>>> tuner = EncoderTuner("models/cache/finetuned", min_pairs=100)
>>> tuner.running, tuner.rounds
(False, 0)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.finetune import FinetuneConfig
from recstream.finetune_job import FinetuneJob, JobResult, pairs_from_recommender, swap_vectors
from recstream.finetune_pairs import text_pairs

__all__ = ["EncoderTuner", "TuneOutcome"]

log = logging.getLogger(__name__)


@dataclass
class TuneOutcome:
    """A finished round: ``encoder`` (the tuned ItemEncoder, to become the worker's),
    ``to_encode`` (item ids its vectors must still be computed for), ``job`` (the job's result:
    losses, timings, ``model_version``)."""

    encoder: Any
    to_encode: list[str]
    job: JobResult
    stats: dict[str, Any] = field(default_factory=dict)


class EncoderTuner:
    """Periodic fine-tunes of a worker's encoder, one at a time.

    Parameters
    ----------
    out_root
        Where tuned models are saved (``<models_dir>/cache/finetuned``: regenerable, ignored).
    config
        The budget (:class:`~recstream.finetune.FinetuneConfig`; its defaults: 60 steps or
        180 s, one CPU thread, CUDA when present).
    model
        The base model (``RECSTREAM_ENCODER_MODEL``; ``None``: the bundled MiniLM).
    cache_dir
        The worker's encoder cache root, filled by the job for the new encoder.
    min_pairs
        A round with fewer pairs does nothing (returns None): too little to learn from.
    encoder_kwargs
        Passed to the new ``ItemEncoder`` (device, batch size, max length, threads: the
        worker's encoder settings).
    """

    def __init__(
        self,
        out_root: str | Path,
        config: FinetuneConfig | None = None,
        *,
        model: str | Path | None = None,
        cache_dir: str | Path | None = None,
        min_pairs: int = 500,
        max_pairs: int = 20_000,
        max_per_item: int = 20,
        encoder_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.out_root = Path(out_root)
        self.config = config or FinetuneConfig()
        self.model = model
        self.cache_dir = cache_dir
        self.min_pairs = min_pairs
        self.max_pairs = max_pairs
        self.max_per_item = max_per_item
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.job: FinetuneJob | None = None
        self.rounds = 0
        self.last: TuneOutcome | None = None

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    async def run_once(
        self,
        recommender: Any,
        catalogue: Callable[[], Sequence[tuple[str, str]]],
        current: Callable[[], Mapping[str, str]],
        lock: asyncio.Lock,
        on_swap: Callable[[TuneOutcome], None] | None = None,
    ) -> TuneOutcome | None:
        """One round (module docstring); None when one is running or there are too few pairs.

        ``catalogue()`` → ``(item_id, text)`` of the live items; ``current()`` → ``item_id →
        text hash`` of the live items; both called under ``lock``, the worker's model lock.
        ``on_swap(outcome)`` is called under the lock right after the swap, with no await in
        between: the worker makes the tuned encoder its own there, so no batch encoded by the
        old one can land after the swap unnoticed (:mod:`streams.finetuning`).
        """
        if self.running:
            return None
        async with lock:
            pairs = pairs_from_recommender(
                recommender, max_pairs=self.max_pairs, max_per_item=self.max_per_item
            )
            items = [(i, t) for i, t in catalogue() if t]
        texts = text_pairs(pairs, dict(items))
        if len(texts) < self.min_pairs:
            log.info(
                "encoder fine-tune: %d pairs (< %d): not this time", len(texts), self.min_pairs
            )
            return None
        self.job = FinetuneJob(
            texts,
            items,
            self.out_root,
            self.config,
            model=self.model,
            cache_dir=self.cache_dir,
            encode_batch_size=int(self.encoder_kwargs.get("batch_size", 64)),
            encode_max_length=int(self.encoder_kwargs.get("max_length", 128)),
        ).start()
        try:
            result = await self.job.wait()
        finally:
            self.job = None
        encoder = await asyncio.to_thread(self._load, result.finetune.path)
        if encoder.model_id != result.model_version:
            # another device kind or max_length than the job's: its vectors would not be this
            # encoder's; keep the worker as it is rather than mix two models' vectors
            log.warning(
                "encoder fine-tune: versions differ (%s, %s): not swapped",
                encoder.model_id,
                result.model_version,
            )
            return None
        tuned = result.finetune
        async with lock:
            now = current()
            todo = swap_vectors(recommender, result, now)
            self.rounds += 1
            stats = {
                "pairs": len(texts),
                "steps": tuned.steps,
                "finetune_seconds": round(tuned.seconds, 2),
                "reencode_seconds": round(result.encode_seconds, 2),
                "loss_first": tuned.losses[0] if tuned.losses else None,
                "loss_last": tuned.losses[-1] if tuned.losses else None,
                # installed: encoded by the job and unchanged since (todo also holds the items
                # that arrived while it ran, which the job never saw; deleted ones are neither)
                "swapped": sum(
                    now.get(i) == h
                    for i, h in zip(result.item_ids, result.text_hashes, strict=True)
                ),
                "to_encode": len(todo),
                "model_version": result.model_version,
            }
            self.last = TuneOutcome(encoder, todo, result, stats)
            if on_swap is not None:
                on_swap(self.last)
        log.info("encoder fine-tune: swapped in %s", stats)
        return self.last

    def _load(self, path: Path) -> Any:
        from recstream.encoder import ItemEncoder

        kwargs = {"device": self.config.device, **self.encoder_kwargs}
        return ItemEncoder(
            path, cache_dir=self.cache_dir, cache=self.cache_dir is not None, **kwargs
        )

    def cancel(self) -> None:
        """Stop a running round's process (the worker's shutdown)."""
        if self.job is not None:
            self.job.cancel()
