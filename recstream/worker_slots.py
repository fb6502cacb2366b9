"""Per-worker files: several workers started from one clone (one ``RECSTREAM_MODELS_DIR``) never
write into the same folder.

A worker takes a *slot* of its app: an exclusive ``flock`` on ``<root>/slot-N.lock``, held by an
open file descriptor for as long as the process lives. The kernel releases it when the process
exits, however it exits (SIGKILL included), so there is never a stale lock to clean up, and the
next worker started takes the slot again (with its folder ``<root>/slot-N/``). The holder's pid is
written into the lock file, for the error message of a worker that finds it taken.

``RECSTREAM_WORKER_SLOT`` chooses: empty = the first free slot (0, 1, ...); ``N`` = exactly slot
N, and an error when another process holds it.

The local checkpoints (``RECSTREAM_STATE_STORE=local``: one worker owns the whole model) stay
where they always were, ``<models>/checkpoints/<app id>/``; two writers there would corrupt each
other (a save removes the other's half-written checkpoint), so that folder has a lock of its own
(``<app id>.lock`` next to it) and a second local worker is refused. With the ``kafka`` store each
worker checkpoints into its slot's own folder.

Pure: no Faust, no Kafka; ``streams/worker.py`` calls :func:`claim_worker_files` at start-up.

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> a, b = claim_slot(tmp.name), claim_slot(tmp.name)  # two fds: two workers, as flock sees it
>>> a.number, b.number, b.folder.name
(0, 1, 'slot-1')
>>> claim_slot(tmp.name, "1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
recstream.worker_slots.SlotTaken: RECSTREAM_WORKER_SLOT=1: slot 1 is taken by another worker ...
>>> a.release(); c = claim_slot(tmp.name); c.number  # released: the first free one again
0
>>> b.release(); c.release(); tmp.cleanup()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from recstream.config import Settings

__all__ = [
    "MAX_SLOTS",
    "FileLock",
    "SlotTaken",
    "WorkerFiles",
    "WorkerSlot",
    "claim_slot",
    "claim_worker_files",
    "lock_exclusive",
    "parse_slot",
    "try_lock",
]

MAX_SLOTS = 1024  # first-free search bound: far more workers than one machine runs


class SlotTaken(ValueError):
    """A slot or a checkpoint folder another process holds (a ValueError: a start-up error the
    worker reports in one line)."""


@dataclass
class FileLock:
    """An exclusive ``flock`` held through ``fd`` until :meth:`release` or the process ends."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the only descriptor releases the lock
            self.fd = -1

    @property
    def held(self) -> bool:
        return self.fd >= 0


def try_lock(path: Path) -> FileLock | None:
    """Take the exclusive lock on ``path`` (created if missing) without waiting; None when
    another open file holds it (another process, or another descriptor of this one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: a program this process executes does not inherit (and keep) the lock. A forked
    # child (the checkpoint writer) does share it, which is right: it writes into the folder.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for the message of whoever finds it taken.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FileLock(path, fd)


def holder(path: Path) -> str:
    """``" (pid N)"`` of the process that holds ``path``, as it wrote it; "" if unknown."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def lock_exclusive(path: Path, what: str, advice: str = "") -> FileLock:
    """:func:`try_lock`, or :class:`SlotTaken` naming ``what`` and the holder."""
    lock = try_lock(path)
    if lock is None:
        raise SlotTaken(f"{what} is in use by another worker{holder(path)} (lock {path}){advice}")
    return lock


def parse_slot(value: str) -> int | None:
    """``RECSTREAM_WORKER_SLOT``: "" = None (the first free one), else a slot number."""
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) >= MAX_SLOTS:
        raise ValueError(
            f"RECSTREAM_WORKER_SLOT: expected a slot number 0..{MAX_SLOTS - 1}, or empty for "
            f"the first free one, got {value!r}"
        )
    return int(value)


@dataclass
class WorkerSlot:
    """Slot ``number`` of ``root``: its own folder, locked while :attr:`lock` is held."""

    number: int
    root: Path
    lock: FileLock

    @property
    def folder(self) -> Path:
        return self.root / f"slot-{self.number}"

    def release(self) -> None:
        self.lock.release()


def claim_slot(root: str | Path, wanted: str = "") -> WorkerSlot:
    """Lock slot ``wanted`` of ``root`` (see :func:`parse_slot`), or the first free one."""
    root = Path(root)
    number = parse_slot(wanted)
    if number is not None:
        path = root / f"slot-{number}.lock"
        lock = try_lock(path)
        if lock is None:
            raise SlotTaken(
                f"RECSTREAM_WORKER_SLOT={number}: slot {number} is taken by another worker"
                f"{holder(path)} ({path}); choose another one, or leave the setting empty for "
                "the first free slot"
            )
        return WorkerSlot(number, root, lock)
    for number in range(MAX_SLOTS):
        lock = try_lock(root / f"slot-{number}.lock")
        if lock is not None:
            return WorkerSlot(number, root, lock)
    raise SlotTaken(f"all {MAX_SLOTS} worker slots of {root} are taken")


@dataclass
class WorkerFiles:
    """Where one worker writes, and the locks that make those places its own."""

    slot: WorkerSlot
    checkpoints: Path
    checkpoint_lock: FileLock | None  # local store only: the shared folder's own lock

    @property
    def datadir(self) -> Path:
        """Faust's data directory (empty with the in-memory store, but Faust writes there)."""
        return self.slot.folder / "faust"

    def release(self) -> None:
        if self.checkpoint_lock is not None:
            self.checkpoint_lock.release()
        self.slot.release()


def slots_root(settings: Settings) -> Path:
    """``<models>/cache/workers/<app id>``: the app's slots (locks and folders)."""
    return Path(settings.models_dir) / "cache" / "workers" / settings.app_id


def claim_worker_files(settings: Settings, local_checkpoints: Path) -> WorkerFiles:
    """Take this worker's slot and, with the local store, the checkpoint folder
    ``local_checkpoints``; with the kafka store, checkpoints go to ``<that>/slot-N``.
    Raises :class:`SlotTaken` (nothing held) when either is in use."""
    slot = claim_slot(slots_root(settings), settings.worker_slot)
    if settings.state_store != "local":
        return WorkerFiles(slot, local_checkpoints / f"slot-{slot.number}", None)
    try:
        lock = lock_exclusive(
            local_checkpoints.with_name(local_checkpoints.name + ".lock"),
            f"the checkpoint folder {local_checkpoints}",
            ": two workers writing one folder would corrupt it. Give this one its own "
            "RECSTREAM_MODELS_DIR or RECSTREAM_APP_ID, or run both with "
            "RECSTREAM_STATE_STORE=kafka (one consumer group, state per partition)",
        )
    except BaseException:
        slot.release()
        raise
    return WorkerFiles(slot, local_checkpoints, lock)
