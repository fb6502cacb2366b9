"""The encoder cache folder shared by several workers of one clone (models/cache/encoder/<model>/).

Each ``put`` writes a new segment under a temporary name and renames it into place, and
compaction writes its merged segment the same way before it deletes anything, so writers in
several processes, compacting at the same time, can never leave a segment a reader would find
half-written or wrong. Here two processes write overlapping keys with a compaction threshold of
3 (one compaction every few puts, racing with the other process's), then a fresh reader checks
every file and every vector.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from recstream.embedding_cache import EmbeddingCache, text_key

ROOT = Path(__file__).resolve().parents[2]
DIM = 8

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from recstream.embedding_cache import EmbeddingCache, text_key

    def vector(text):
        rng = np.random.default_rng(int.from_bytes(text_key(text)[:4], "little"))
        return rng.standard_normal(8).astype(np.float32)

    folder, start = sys.argv[1], int(sys.argv[2])
    for round in range(40):
        # A fresh cache object now and then: it loads what the other process wrote meanwhile.
        if round % 10 == 0:
            cache = EmbeddingCache(folder, dim=8, max_segments=3)
        texts = [f"item {i}" for i in range(start + round * 5, start + round * 5 + 8)]
        cache.put([text_key(t) for t in texts], np.stack([vector(t) for t in texts]))
    print("done", flush=True)
    """
)


def _vector(text: str) -> np.ndarray:
    # The same as the writers'.
    rng = np.random.default_rng(int.from_bytes(text_key(text)[:4], "little"))
    return rng.standard_normal(DIM).astype(np.float32)


def test_two_processes_writing_and_compacting_one_folder(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for start in (0, 100)  # overlapping ranges: both write items 100..207
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    assert not list(folder.glob(".tmp-*")), "a finished writer left a temporary file"
    cache = EmbeddingCache(folder, dim=DIM, max_segments=1000)
    assert "unreadable segment" not in caplog.text  # every file on disk is a whole segment
    texts = [f"item {i}" for i in range(303)]  # every key either process wrote
    hit, vectors = cache.get([text_key(t) for t in texts])
    assert hit.sum() > 0
    for text, found, vec in zip(texts, hit, vectors, strict=True):
        if found:  # whatever survived is exactly what was written for that key
            np.testing.assert_array_equal(vec, _vector(text))
    # A miss only costs a re-encode; it never returns a wrong vector. Print how many survived.
    print(f"{int(hit.sum())} of {len(texts)} keys in the folder after concurrent compactions")
