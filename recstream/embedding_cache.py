"""The encoder's on-disk vector cache: text key → float32 vector, append-only and crash-safe.

:class:`EmbeddingCache` holds the vectors of one model identity (``recstream.encoder`` picks the
folder from the model's fingerprint), so an unchanged item text is never encoded twice, across
calls and across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEY_BYTES = 20  # sha1 digest of the UTF-8 text, the same hash as Item.text_hash


def text_key(text: str) -> bytes:
    """Cache key of one text: sha1 of its UTF-8 bytes (``Item.text_hash`` is its hex form)."""
    return hashlib.sha1(text.encode("utf-8")).digest()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a power cut; a killed process needs only the rename.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class EmbeddingCache:
    """Append-only, crash-safe store of ``text key → vector`` for one model identity.

    Design (for 10k–100k items per model): the folder holds immutable *segment* files, each one
    ``.npy`` array of keys (``uint8``, n×20) immediately followed by one ``.npy`` array of
    vectors (``float32``, n×d) in the same file. Every ``put`` writes one new segment to a
    hidden temporary name, fsyncs it and ``os.replace``-s it into place, so a reader sees a
    segment completely or not at all; a process killed mid-write leaves only a ``.tmp-*`` file,
    ignored (and removed once stale) by later opens. On open, only the key arrays are read
    (20 bytes/item: ~2 MB for 100k) into a dict; vector blocks are memory-mapped, so a lookup is
    one dict probe per text plus one vectorised gather per segment, and the OS page cache, not
    the Python heap, holds the vectors.

    Segments are never modified, so several processes can share a folder without locks: each
    writes uniquely named segments; the worst case of a race is an item encoded twice and stored
    twice (same vector, harmless, merged away by compaction). When more than ``max_segments``
    exist, all segments but the largest are merged into one (written the same atomic way, then
    the merged files are deleted), so a worker appending small batches does not grow the folder
    without bound and rarely rewrites the bulk of the cache.

    Why not sqlite: one row per vector means per-row Python work for 100k inserts and fetches;
    why not one growing matrix: appending in place is not atomic and a kill mid-write corrupts it.

    Parameters
    ----------
    directory
        Folder of this model identity's segments (created if needed).
    dim
        Vector dimension; segments with another dimension are ignored.
    max_segments
        Compaction threshold.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> cache = EmbeddingCache(tmp.name, dim=3)
    >>> cache.put([text_key("a"), text_key("b")], np.eye(3, dtype=np.float32)[:2])
    2
    >>> hit, vectors = EmbeddingCache(tmp.name, dim=3).get([text_key("b"), text_key("c")])
    >>> hit.tolist(), vectors[0].tolist()
    ([True, False], [0.0, 1.0, 0.0])
    >>> tmp.cleanup()
    """

    STALE_TMP_SECONDS = 3600.0

    def __init__(self, directory: str | Path, dim: int, *, max_segments: int = 8) -> None:
        self.directory = Path(directory)
        self.dim = int(dim)
        self.max_segments = max(2, int(max_segments))
        self.directory.mkdir(parents=True, exist_ok=True)
        # key → slot << 32 | row: one int per key keeps 100k entries small and lets lookups
        # become one int64 array that numpy splits into (slot, row) without a Python loop.
        self._index: dict[bytes, int] = {}
        self._segments: dict[int, tuple[Path, np.ndarray]] = {}  # slot → (file, vectors)
        self._next_slot = 0
        self._lock = threading.Lock()
        self._load()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def segment_files(self) -> list[Path]:
        return sorted(path for path, _ in self._segments.values())

    # -- reading ---------------------------------------------------------------------------
    def _load(self) -> None:
        now = time.time()
        for tmp in self.directory.glob(".tmp-*"):
            # A live writer's temp file is young; an old one is the debris of a killed process.
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > self.STALE_TMP_SECONDS:
                    tmp.unlink()
        for path in sorted(self.directory.glob("seg-*.npy")):
            self._add_segment(path)

    def _read_segment(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        with path.open("rb") as fh:
            keys = np.load(fh, allow_pickle=False)  # leaves fh right after the key array
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
            raise ValueError(f"bad key array {keys.dtype} {keys.shape}")
        if fortran or dtype != np.float32 or shape != (keys.shape[0], self.dim):
            raise ValueError(f"bad vector array {dtype} {shape}, expected (n, {self.dim}) float32")
        if shape[0] == 0:
            return keys, np.zeros(shape, np.float32)
        if path.stat().st_size < offset + shape[0] * self.dim * 4:
            raise ValueError("truncated vector array")
        vectors = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=shape)
        return keys, vectors

    def _add_segment(self, path: Path) -> None:
        try:
            keys, vectors = self._read_segment(path)
        except FileNotFoundError:
            return  # compacted away by another process between glob and open
        except (OSError, ValueError, EOFError) as exc:
            # Cannot come from our own writer (atomic rename); skip it rather than fail the worker.
            log.warning("encoder cache: ignoring unreadable segment %s (%s)", path, exc)
            return
        slot = self._next_slot
        self._next_slot += 1
        self._segments[slot] = (path, vectors)
        raw = keys.tobytes()
        for row in range(keys.shape[0]):
            self._index.setdefault(raw[row * KEY_BYTES : (row + 1) * KEY_BYTES], slot << 32 | row)

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Look keys up.

        Returns
        -------
        hit : np.ndarray of bool, shape (n,)
        vectors : np.ndarray of float32, shape (n, dim); rows of misses are zero.
        """
        n = len(keys)
        hit = np.zeros(n, dtype=bool)
        out = np.zeros((n, self.dim), dtype=np.float32)
        with self._lock:
            index = self._index
            found = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=n)
            hit[:] = found >= 0
            positions = np.flatnonzero(hit)
            slots, rows = found[positions] >> 32, found[positions] & 0xFFFFFFFF
            for slot in np.unique(slots).tolist():  # one vectorised gather per segment
                sel = slots == slot
                out[positions[sel]] = self._segments[slot][1][rows[sel]]
        return hit, out

    # -- writing ---------------------------------------------------------------------------
    def _write_segment(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
        final = self.directory / name
        tmp = self.directory / f".tmp-{name}"
        try:
            with tmp.open("wb") as fh:
                np.save(fh, np.ascontiguousarray(keys, dtype=np.uint8), allow_pickle=False)
                np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.directory)
        return final

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> int:
        """Store new vectors (keys already present are skipped); returns how many were written."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"vectors shape {vectors.shape} != ({len(keys)}, {self.dim})")
        with self._lock:
            fresh: dict[bytes, int] = {}
            for i, key in enumerate(keys):
                if len(key) != KEY_BYTES:
                    raise ValueError(f"cache keys are {KEY_BYTES}-byte digests, got {len(key)}")
                if key not in self._index:
                    fresh.setdefault(key, i)
            if not fresh:
                return 0
            rows = list(fresh.values())
            key_array = np.frombuffer(b"".join(fresh), dtype=np.uint8).reshape(-1, KEY_BYTES)
            path = self._write_segment(key_array, vectors[rows])
            self._add_segment(path)
            if len(self._segments) > self.max_segments:
                self._compact(keep_largest=True)
            return len(rows)

    def compact(self) -> None:
        """Merge every segment into one (e.g. after a bulk encode)."""
        with self._lock:
            self._compact(keep_largest=False)

    def _compact(self, *, keep_largest: bool) -> None:
        slots = sorted(self._segments, key=lambda s: len(self._segments[s][1]))
        if keep_largest:
            slots = slots[:-1]
        if len(slots) < 2:
            return
        merge = set(slots)
        entries = [(k, loc) for k, loc in self._index.items() if loc >> 32 in merge]
        if entries:
            key_array = np.frombuffer(b"".join(k for k, _ in entries), dtype=np.uint8)
            locs = np.fromiter((loc for _, loc in entries), dtype=np.int64, count=len(entries))
            vectors = np.empty((len(entries), self.dim), dtype=np.float32)
            for slot in merge:  # one vectorised gather per merged segment
                sel = np.flatnonzero(locs >> 32 == slot)
                vectors[sel] = self._segments[slot][1][locs[sel] & 0xFFFFFFFF]
            merged = self._write_segment(key_array.reshape(-1, KEY_BYTES), vectors)
        old = [self._segments.pop(s)[0] for s in slots]
        for key, _ in entries:
            del self._index[key]
        if entries:
            self._add_segment(merged)
        # Only now, with the merged segment durable, may the originals go; a kill before this
        # loop leaves duplicates, which are harmless.
        for path in old:
            with contextlib.suppress(OSError):
                path.unlink()
