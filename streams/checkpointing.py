"""The worker's checkpoints: model + stream state + offsets, written by a forked child.

A mixin of :class:`streams.runtime.Runtime` (it reads the runtime's processor, store, sinks and
lock): the one place that decides when a checkpoint is taken, what it waits for, and which older
ones go. The files themselves are :class:`recstream.checkpoint.CheckpointStore`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from recstream.adapters.metrics import Metrics
from recstream.adapters.redis_sink import RedisSink
from recstream.checkpoint import CheckpointStore
from recstream.pipeline import StreamProcessor

log = logging.getLogger("recstream.worker")


class Checkpointing:
    """``checkpoint()``: see its docstring. Expects the attributes below (set by Runtime)."""

    processor: StreamProcessor
    store: CheckpointStore | None
    redis: RedisSink | None
    metrics: Metrics
    lock: asyncio.Lock
    topic_ids: dict[str, str]
    last_checkpoint: dict[str, Any] | None
    _saved_changes: int
    _checkpoint_child: asyncio.Future | None
    _prune_checkpoints: bool

    async def checkpoint(
        self, flush: Callable[[], Awaitable[Any]] | None = None, *, background: bool = True
    ) -> Path | None:
        """Save model + stream state + offsets atomically (models/README.md).

        The state is pickled in a forked child process where the OS allows it (POSIX): fork is
        a copy-on-write snapshot of the whole process, taken with the lock held, so the child
        writes exactly the state the offsets describe while the event loop goes on at once.
        The loop pauses for the fork alone (milliseconds) instead of the whole pickling, which
        grows with the state (160 ms at the latency benchmark's size, a second and more for a
        large model). ``background=False`` (the final checkpoint at shutdown) or no ``fork``
        writes in this process, with the loop paused.
        """
        if self.store is None or self.processor.changes == self._saved_changes:
            return None  # nothing new since the last one (or since the restore)
        if self._checkpoint_child is not None:
            if background:
                return None  # the previous one is still being written: next time
            await self._checkpoint_child  # shutdown: let it finish, then write the last one
        # The outputs queued so far go out first, while events keep flowing: the flush under
        # the lock below then waits only for what the batches of the meantime added (a round
        # trip), not for a whole interval's worth of profiles and lists, with events held up.
        await self._flush_outputs(flush, log_pending=False)
        async with self.lock:
            # Every recommendation of a reflected event is in Kafka (and, never waiting long,
            # Redis) before the offsets that skip its event are saved: a crash right after
            # cannot lose its output.
            await self._flush_outputs(flush, log_pending=True)
            changes, events = self.processor.changes, self.processor.events_processed
            # Taken with the snapshot: a forget applied while this one is written asks for a
            # prune after the *next* checkpoint, which will be the first without the user.
            prune, self._prune_checkpoints = self._prune_checkpoints, False
            t0 = time.perf_counter()
            if background and hasattr(os, "fork"):
                pid = self._fork_checkpoint_writer()
                path = None
            else:
                pid = None
                path = self.processor.save_checkpoint(self.store, topic_ids=self.topic_ids)
            pause = time.perf_counter() - t0
        if pid is not None:
            self._checkpoint_child = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
            )
            try:
                _, status = await self._checkpoint_child
            except ChildProcessError:  # reaped by someone else: the store tells the outcome
                latest = self.store.latest()
                done = latest is not None and latest.meta.get("events_processed") == events
                status = 0 if done else 1
            finally:
                self._checkpoint_child = None
            if os.waitstatus_to_exitcode(status) != 0:
                self.metrics.checkpoint_errors.inc()
                log.error("checkpoint writer %d failed (status %d); retried next time", pid, status)
                self._prune_checkpoints |= prune
                return None
            latest = self.store.latest()
            assert latest is not None
            path = latest.path
        assert path is not None
        seconds = time.perf_counter() - t0
        self._saved_changes = changes
        if prune and self.store is not None:
            removed = self.store.keep_only_latest()
            log.info("checkpoint: %d older checkpoint(s) removed after a forget request", removed)
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(seconds)
        self.metrics.checkpoint_pause_seconds.observe(pause)
        self.metrics.last_checkpoint.set(time.time())
        self.last_checkpoint = {
            "path": str(path),
            "events_processed": events,
            "seconds": round(seconds, 3),
            "pause_s": round(pause, 4),
            "at": round(time.time(), 3),
        }
        log.info(
            "checkpoint %s: %d events, paused the loop %.4f s, written in %.3f s",
            path.name,
            events,
            pause,
            seconds,
        )
        return path

    async def _flush_outputs(
        self, flush: Callable[[], Awaitable[Any]] | None, *, log_pending: bool
    ) -> None:
        if flush is not None:
            await flush()
        if self.redis is not None:
            # Redis is a cache, not the state: never wait long for it.
            try:
                await asyncio.wait_for(self.redis.flush(), timeout=10)
            except TimeoutError:
                if log_pending:
                    log.warning("checkpoint: %d Redis writes still queued", self.redis.pending)

    def _fork_checkpoint_writer(self) -> int:
        """Fork; the child writes the checkpoint and exits. Returns the child's pid."""
        pid = os.fork()
        if pid:
            return pid
        # The child: only the forking thread exists here. Pickle, write, rename, and leave with
        # os._exit, never running the parent's atexit hooks, Faust's shutdown or torch.
        code = 1
        try:
            _die_with_parent()
            # The writer yields the cores to the worker (and the broker beside it): pickling
            # at normal priority took a core from the event loop for the whole write, and on
            # a busy 2-core machine held events up for seconds after each checkpoint.
            with contextlib.suppress(OSError):
                os.nice(19)
            self.processor.save_checkpoint(self.store, topic_ids=self.topic_ids)
            code = 0
        except BaseException:  # reported by the exit code; the parent logs it
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)


def _die_with_parent() -> None:
    """Linux: a checkpoint writer whose worker was killed dies too, so it cannot finish a
    checkpoint after a restarted worker has started from an older one."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
