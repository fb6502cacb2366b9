"""Atomic, self-consistent checkpoints: model state, stream state and the offsets they reflect.

One checkpoint is one directory ``<root>/ckpt-<seq>/`` holding whatever files the caller
writes (the worker writes ``recommender.pkl`` via ``Recommender.save`` and ``stream.pkl``) plus
``offsets.json``. Everything is written into a temporary sibling directory first and published
with a single ``rename``, which is atomic on POSIX: a crash at any moment leaves either the
previous checkpoint or the new one, never a mix of a new model with old offsets. The newest
directory that loads is the checkpoint; the last ``keep`` are kept so a damaged newest one falls
back to its predecessor (whose offsets match its own state, so nothing is lost or doubled).

>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> store.latest() is None
True
>>> d = store.save({"a.txt": lambda p: p.write_text("hello")}, {"offsets": {"t": {"0": 5}}})
>>> d.name, (d / "a.txt").read_text(), store.latest().meta["offsets"]
('ckpt-000000001', 'hello', {'t': {'0': 5}})
>>> store.save({"a.txt": lambda p: p.write_text("again")}, {}).name
'ckpt-000000002'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointStore"]

_NAME = re.compile(r"^ckpt-(\d{9})$")
META_FILE = "offsets.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    seq: int
    meta: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def _complete(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir() and (p / META_FILE).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found, reverse=True)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint whose ``offsets.json`` parses, or ``None``."""
        for seq, path in self._complete():
            try:
                meta = json.loads((path / META_FILE).read_text())
            except (OSError, ValueError):
                continue  # damaged: fall back to the previous one
            return Checkpoint(path, seq, meta)
        return None

    def candidates(self) -> list[Checkpoint]:
        """Every complete checkpoint, newest first (for callers that validate the payload)."""
        out = []
        for seq, path in self._complete():
            try:
                out.append(Checkpoint(path, seq, json.loads((path / META_FILE).read_text())))
            except (OSError, ValueError):
                continue
        return out

    def save(self, writers: Mapping[str, Callable[[Path], None]], meta: Mapping[str, Any]) -> Path:
        """Write a new checkpoint: ``writers[name](path)`` writes each file; returns its dir."""
        # Only the worker's user reads them: 0700 folders, 0600 files (users' histories inside).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        existing = self._complete()
        seq = existing[0][0] + 1 if existing else 1
        final = self.root / f"ckpt-{seq:09d}"
        tmp = self.root / f".tmp-ckpt-{seq:09d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            for name, write in writers.items():
                write(tmp / name)
            body = dict(meta)
            body.setdefault("seq", seq)
            body.setdefault("created_at", time.time())
            (tmp / META_FILE).write_text(json.dumps(body, indent=1, sort_keys=True))
            for p in tmp.iterdir():
                if p.is_file():
                    p.chmod(0o600)
                    with p.open("rb") as f:
                        os.fsync(f.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, final)  # the commit point
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in self._complete()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        for p in self.root.glob(".tmp-ckpt-*"):  # left by a crash mid-save
            if p != tmp:
                shutil.rmtree(p, ignore_errors=True)
        return final

    def keep_only_latest(self) -> int:
        """Remove every complete checkpoint but the newest (after a user was forgotten, the
        older ones still hold them); returns how many were removed."""
        older = self._complete()[1:]
        for _, path in older:
            shutil.rmtree(path, ignore_errors=True)
        return len(older)

    def discard(self) -> int:
        """Remove every checkpoint when it no longer applies; returns how many. They hold the
        users' histories: a copy kept "for inspection" would be one nobody ever removes (nor
        reaches with `recstream forget`). The caller logs why."""
        found = self._complete()
        for _, path in found:
            shutil.rmtree(path, ignore_errors=True)
        return len(found)
