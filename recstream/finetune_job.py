"""The encoder's fine-tune as a background job: tune, re-encode the catalogue, swap the vectors.

:func:`run_job` is the whole job in one call: fine-tune on co-interaction pairs
(:func:`recstream.finetune.finetune`), then re-encode the catalogue with the tuned model (an
:class:`~recstream.encoder.ItemEncoder`, so the vectors are exactly those the worker's encoder
will produce for later items). It takes minutes on a CPU, so a worker never runs it on its event
loop, nor in one of its threads (torch would hold the GIL-free cores and the memory of a
training run): :class:`FinetuneJob` runs it in a **spawned process** (a fresh interpreter: no
forked copy of the worker's state, no inherited locks, the memory given back when it ends),
niced on the CPU, and an ``asyncio`` caller awaits :meth:`FinetuneJob.wait` while its loop keeps
serving. Cancelling the wait ends the process.

Then :func:`swap_vectors` installs every re-encoded vector with **one**
``set_item_vectors`` call (the model never scores with half old, half new vectors), skipping the
items whose text changed while the job ran (returned, to be encoded again by the new encoder).
The new vectors carry the tuned encoder's ``model_id`` (:attr:`JobResult.model_version`).

Where the pairs come from: :func:`pairs_from_recommender` reads the consecutive items of each
user's recent events from a live :class:`~recstream.recommender.Recommender` (no hook in the
stream needed); the evaluation mines them from the events (:mod:`recstream.finetune_eval`).

>>> import numpy as np
>>> old = np.eye(3, dtype=np.float32)
>>> new = old[:, [1, 0, 2]]  # the same geometry, axes swapped
>>> np.allclose(align(new, old), old)
True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recstream.finetune import FinetuneConfig, FinetuneResult, finetune
from recstream.finetune_pairs import co_interaction_pairs

__all__ = [
    "FinetuneJob",
    "JobResult",
    "align",
    "finetune_in_background",
    "pairs_from_recommender",
    "run_job",
    "swap_vectors",
]

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """A tuned encoder and the catalogue re-encoded with it.

    ``model_version``: the ``model_id`` of ``ItemEncoder(finetune.path)`` (as built by the job:
    same device kind and ``max_length``), which differs from the base encoder's;
    ``item_ids``, ``text_hashes`` (``Item.text_hash`` of the text encoded) and ``vectors``
    (float32, rows L2-normalised) in catalogue order; ``encode_seconds``: the re-encode.
    """

    finetune: FinetuneResult
    model_version: str
    item_ids: list[str] = field(default_factory=list)
    text_hashes: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    encode_seconds: float = 0.0


def run_job(
    pairs: Sequence[tuple[str, str]],
    catalogue: Sequence[tuple[str, str]],
    out_root: str | Path,
    config: FinetuneConfig | None = None,
    *,
    model: str | Path | None = None,
    cache_dir: str | Path | None = None,
    encode_batch_size: int = 64,
    encode_max_length: int = 128,
) -> JobResult:
    """Fine-tune on text ``pairs``, then encode ``catalogue`` (``(item_id, text)``) with it.

    Blocking; in a worker, run it through :class:`FinetuneJob`. ``cache_dir``: the encoder
    cache root to fill (the worker's, so that its ``ItemEncoder`` of the tuned model finds every
    vector there; ``None``: no cache). The encode uses ``config``'s device and thread count.
    """
    import hashlib

    from recstream.encoder import ItemEncoder

    config = config or FinetuneConfig()
    tuned = finetune(pairs, out_root, config, model=model)
    encoder = ItemEncoder(
        tuned.path,
        device=config.device,
        batch_size=encode_batch_size,
        max_length=encode_max_length,
        cache_dir=cache_dir,
        cache=cache_dir is not None,
        num_threads=config.num_threads,
    )
    start = time.perf_counter()
    texts = [text for _, text in catalogue]
    vectors = encoder.encode(texts)
    return JobResult(
        finetune=tuned,
        model_version=encoder.model_id,
        item_ids=[item_id for item_id, _ in catalogue],
        text_hashes=[hashlib.sha1(t.encode()).hexdigest() for t in texts],  # Item.text_hash
        vectors=vectors,
        encode_seconds=time.perf_counter() - start,
    )


def _child(conn: Any, kwargs: dict[str, Any], nice: int) -> None:
    """The spawned process: run the job, send ``("ok", JobResult)`` or ``("error", text)``."""
    try:
        if nice:
            with contextlib.suppress(OSError, AttributeError):
                os.nice(nice)  # the worker's event loop wins every contended core
        conn.send(("ok", run_job(**kwargs)))
    except BaseException as exc:  # everything, KeyboardInterrupt too, goes back to the parent
        conn.send(("error", "".join(traceback.format_exception(exc))))
    finally:
        conn.close()


class FinetuneJob:
    """:func:`run_job` in a spawned process; :meth:`wait` awaits it without blocking a loop.

    Parameters are :func:`run_job`'s, plus ``nice`` (added to the process's niceness; 0: none).
    One job is one process: start it once, then :meth:`wait` (async) or :meth:`result`
    (blocking) once. :meth:`cancel` (also on a cancelled :meth:`wait`) terminates it.
    """

    def __init__(self, *args: Any, nice: int = 10, **kwargs: Any) -> None:
        names = ("pairs", "catalogue", "out_root", "config")
        self.kwargs: dict[str, Any] = {**dict(zip(names, args, strict=False)), **kwargs}
        self.kwargs["pairs"] = [tuple(p) for p in self.kwargs["pairs"]]  # plain, picklable
        self.kwargs["catalogue"] = [tuple(c) for c in self.kwargs["catalogue"]]
        self.nice = nice
        self._process: Any = None
        self._conn: Any = None
        self.started_at: float | None = None

    def start(self) -> FinetuneJob:
        if self._process is not None:
            raise RuntimeError("a FinetuneJob runs once")
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child, args=(child, self.kwargs, self.nice), name="recstream-finetune"
        )
        self._process.daemon = True  # never outlives the worker that started it
        self._process.start()
        child.close()  # the parent's copy: recv() sees EOF when the child's end closes
        self._conn = parent
        self.started_at = time.monotonic()
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def result(self) -> JobResult:
        """Block until the job ends; its result, or RuntimeError with the child's traceback."""
        if self._process is None:
            raise RuntimeError("start() the job first")
        try:
            # recv before join: a result of several MB fills the pipe, and the child's send
            # would wait for a reader that waits for the child to exit
            status, payload = self._conn.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(
                f"fine-tune process died (exit code {self._process.exitcode})"
            ) from None
        finally:
            self._conn.close()
        self._process.join()
        if status != "ok":
            raise RuntimeError(f"fine-tune failed in its process:\n{payload}")
        return payload

    async def wait(self) -> JobResult:
        """Await the result; the event loop keeps running (the wait is in a thread)."""
        try:
            return await asyncio.to_thread(self.result)
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Terminate the process (the tuned folder is written atomically: none, or whole)."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()


async def finetune_in_background(*args: Any, **kwargs: Any) -> JobResult:
    """Start a :class:`FinetuneJob` (same arguments) and await its result.

    >>> # in a Faust timer: result = await finetune_in_background(pairs, catalogue, "models/ft")
    """
    return await FinetuneJob(*args, **kwargs).start().wait()


class VectorModel(Protocol):
    """The part of :class:`recstream.recommender.Recommender` :func:`swap_vectors` uses."""

    def set_item_vectors(self, item_ids: Sequence[str], vectors: np.ndarray) -> None: ...


def swap_vectors(
    model: VectorModel,
    result: JobResult,
    current: Mapping[str, str] | None = None,
    *,
    align_to: np.ndarray | None = None,
) -> list[str]:
    """Install the job's vectors in **one** ``set_item_vectors`` call.

    Parameters
    ----------
    model
        The recommender (anything with ``set_item_vectors``).
    result
        :func:`run_job`'s result.
    current
        ``item_id → text hash`` of the catalogue now (``VectorSync.catalogue`` in a worker).
        Items whose text changed, or that left, since the job's snapshot are not installed;
        items of ``current`` the job did not encode are returned with the changed ones: the
        new encoder must encode them (their vectors are the old model's). ``None``: install all.
    align_to
        The vectors being replaced, rows as ``result.item_ids``: the new ones are rotated onto
        them first (:func:`align`).

    Returns
    -------
    list[str]
        Ids to (re-)encode with the tuned encoder.
    """
    ids, vectors = result.item_ids, np.asarray(result.vectors, dtype=np.float32)
    if align_to is not None:
        vectors = align(vectors, align_to)
    keep = list(range(len(ids)))
    todo: list[str] = []
    if current is not None:
        keep = [
            i
            for i, (item_id, h) in enumerate(zip(ids, result.text_hashes, strict=True))
            if current.get(item_id) == h
        ]
        done = {ids[i] for i in keep}
        todo = [item_id for item_id in current if item_id not in done]
    if keep:
        model.set_item_vectors([ids[i] for i in keep], vectors[keep])
    if hasattr(model, "set_encoder_version"):  # lists from now on name the tuned encoder
        model.set_encoder_version(result.model_version)
    return todo


def align(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new`` rotated by the orthogonal matrix that brings it closest to ``old`` (Procrustes).

    A rotation keeps every dot product between the new vectors (what the fine-tune learned),
    and their norms, while pointing the space the way the old one pointed: what was computed
    from the old vectors (users' content profiles, the index's PCA basis) stays meaningful.
    """
    new = np.asarray(new, dtype=np.float64)
    u, _, vt = np.linalg.svd(new.T @ np.asarray(old, dtype=np.float64))
    return (new @ (u @ vt)).astype(np.float32)


def pairs_from_recommender(
    recommender: Any,
    *,
    window: int = 1,
    min_count: int = 1,
    max_pairs: int | None = 20_000,
    max_per_item: int | None = 20,
) -> list[tuple[str, str, int]]:
    """Co-interaction pairs of a live recommender: consecutive items of each user's recent
    events (``UserState.recent``, the last ``recent_size`` of them), counted over users
    (:func:`~recstream.finetune_pairs.co_interaction_pairs`). Read it under the worker's lock;
    it is a pass over the users, no model work."""
    ids = recommender.index.ids
    sequences = []
    for user_id in list(recommender.users):
        state = recommender.users.get(user_id)
        if state is None:
            continue
        seq: list[str] = []
        for row, _type, _ts in state.recent:
            item_id = ids[row]
            if not seq or seq[-1] != item_id:
                seq.append(item_id)
        if len(seq) > 1:
            sequences.append(seq)
    return co_interaction_pairs(
        sequences,
        window=window,
        min_count=min_count,
        max_pairs=max_pairs,
        max_per_item=max_per_item,
    )
