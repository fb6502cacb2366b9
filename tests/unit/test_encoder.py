"""ItemEncoder and its cache, on the real bundled all-MiniLM-L6-v2 (no mocks).

Loading the model takes ~0.3 s once torch is imported, so most tests share one cache-less
encoder (module fixture); cache tests build their own on a ``tmp_path`` cache.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from recstream.cli import main as cli_main
from recstream.embedding_cache import EmbeddingCache, text_key
from recstream.encoder import (
    ItemEncoder,
    bundled_model_path,
    resolve_device,
    resolve_num_threads,
)
from recstream.events import Item

torch = pytest.importorskip("torch")

# Deliberately varied lengths (1 to 100+ tokens) and not sorted by length, so length-sorted
# batching really reorders them and padding differs between batch and single encodes.
TEXTS = [
    "Toy Story (1995) Categories: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar.",
    "Heat",
    "Jumanji (1995) Categories: Adventure, Children, Fantasy. Tags: magic board game, game.",
    "A slow-burning Scandinavian noir about a detective who returns to the island where she "
    "grew up to investigate the disappearance of a fisherman, and finds that every neighbour "
    "has a reason to lie. Categories: Crime, Drama, Mystery, Thriller. Tags: atmospheric, "
    "bleak, island, winter, slow burn, great acting, twist ending, nordic noir.",
    "",
    "Grumpier Old Men (1995) Categories: Comedy, Romance.",
    "Amélie (2001) Categories: Comedy, Romance. Tags: paris, quirky, whimsical, Audrey Tautou.",
    "2001: A Space Odyssey (1968) Categories: Adventure, Drama, Sci-Fi.",
    "Wallace & Gromit: The Wrong Trousers (1993) Categories: Animation, Children, Comedy, Crime.",
    "Dune",
    "The Matrix (1999) Categories: Action, Sci-Fi, Thriller. Tags: cyberpunk, virtual reality, "
    "philosophy, martial arts, dystopia, hackers.",
    "Sabrina (1995) Categories: Comedy, Romance.",
    "Cowboy Bebop: The Movie (2001) Categories: Action, Animation, Sci-Fi, Thriller. Tags: anime, "
    "jazz, bounty hunters, space, noir, terrorism, Mars, Spike Spiegel, Faye Valentine, classic.",
    "Nixon (1995) Categories: Drama.",
    "Fargo",
    "千と千尋の神隠し Spirited Away (2001) Categories: Adventure, Animation, Fantasy.",
    "Heat (1995) Categories: Action, Crime, Thriller. Tags: Al Pacino, Robert De Niro.",
]


@pytest.fixture(scope="module")
def encoder() -> ItemEncoder:
    return ItemEncoder(device="cpu", cache=False, batch_size=4)


@pytest.fixture(scope="module")
def reference(encoder: ItemEncoder) -> np.ndarray:
    return encoder.encode(TEXTS)


def _save_tiny_bert(folder: Path, seed: int) -> Path:
    """A randomly initialised 2-layer, 32-d BERT folder with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)  # vectors are unit length


# --- output contract -------------------------------------------------------------------------
def test_shape_dtype_and_unit_norm(encoder: ItemEncoder, reference: np.ndarray) -> None:
    assert encoder.dim == 384
    assert reference.shape == (len(TEXTS), 384)
    assert reference.dtype == np.float32
    assert reference.flags.c_contiguous
    assert np.isfinite(reference).all()
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)


def test_batched_equals_one_by_one(encoder: ItemEncoder, reference: np.ndarray) -> None:
    singles = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(reference, singles, atol=1e-5, rtol=0)


def test_batch_size_does_not_change_vectors(reference: np.ndarray) -> None:
    wide = ItemEncoder(device="cpu", cache=False, batch_size=64).encode(TEXTS)
    np.testing.assert_allclose(reference, wide, atol=1e-5, rtol=0)


def test_input_order_is_restored(encoder: ItemEncoder, reference: np.ndarray) -> None:
    perm = list(range(len(TEXTS)))
    random.Random(7).shuffle(perm)
    shuffled = encoder.encode([TEXTS[i] for i in perm])
    np.testing.assert_allclose(shuffled, reference[perm], atol=1e-5, rtol=0)
    # Rows really differ, so a mix-up would have been caught above.
    assert np.abs(reference[perm] - reference).max() > 0.1


def test_empty_input(encoder: ItemEncoder) -> None:
    before = encoder.stats()
    for out in (encoder.encode([]), encoder.encode_items([])):
        assert out.shape == (0, 384)
        assert out.dtype == np.float32
    assert encoder.stats()["items_encoded"] == before["items_encoded"]


def test_a_single_string_is_rejected(encoder: ItemEncoder) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        encoder.encode("Heat (1995)")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text 1 is int"):
        encoder.encode(["Heat", 1995])  # type: ignore[list-item]


def test_duplicates_in_one_call_are_encoded_once(encoder: ItemEncoder) -> None:
    before = encoder.items_encoded
    out = encoder.encode(["Fargo (1996)", "Heat", "Fargo (1996)"])
    assert encoder.items_encoded - before == 2
    assert out.shape == (3, 384)
    np.testing.assert_array_equal(out[0], out[2])


def test_long_texts_are_truncated_at_max_length(encoder: ItemEncoder) -> None:
    long_text = " ".join(f"word{i}" for i in range(400))
    assert encoder.token_lengths([long_text, "Heat"]).tolist() == [encoder.max_length, 3]
    a, b = encoder.encode([long_text, long_text + " and an ending the model never sees"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_encode_items_uses_item_text(encoder: ItemEncoder) -> None:
    items = [
        Item("1", title="Heat (1995)", categories=("Action", "Crime"), tags=("De Niro",)),
        Item("2", title="Amélie (2001)", description="A shy waitress in Montmartre."),
    ]
    np.testing.assert_allclose(
        encoder.encode_items(items), encoder.encode([i.text for i in items]), atol=1e-6
    )


def test_semantic_sanity(encoder: ItemEncoder) -> None:
    query, scifi, romance = encoder.encode(
        [
            "science fiction space movie",
            "Star Wars: Episode IV - A New Hope (1977) Categories: Action, Adventure, Sci-Fi. "
            "Tags: space, galactic empire.",
            "Notting Hill (1999) Categories: Comedy, Romance. Tags: london, love story.",
        ]
    )
    assert _cos(query, scifi) > _cos(query, romance) + 0.1


def test_encode_from_a_worker_thread(encoder: ItemEncoder, reference: np.ndarray) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(encoder.encode, [TEXTS[:9], TEXTS[9:]]))
    np.testing.assert_allclose(np.vstack(results), reference, atol=1e-5, rtol=0)


def test_stats_do_not_wait_for_a_running_encode(encoder: ItemEncoder) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(encoder.encode, TEXTS * 10)
        deadline = time.monotonic() + 30
        while not encoder._lock.locked() and not running.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        t0 = time.perf_counter()
        stats = encoder.stats()
        waited = time.perf_counter() - t0
        busy = not running.done()
        running.result()
    assert busy, "encode finished before stats() was called: the test proved nothing"
    assert waited < 0.05
    assert set(stats) == {"items_requested", "items_encoded", "cache_hits", "encode_seconds"}


# --- cache -----------------------------------------------------------------------------------
def test_cache_second_call_encodes_nothing(tmp_path: Path) -> None:
    enc = ItemEncoder(device="cpu", cache_dir=tmp_path, batch_size=8)
    first = enc.encode(TEXTS)
    assert (enc.items_encoded, enc.cache_hits) == (len(TEXTS), 0)
    second = enc.encode(TEXTS)
    assert (enc.items_encoded, enc.cache_hits) == (len(TEXTS), len(TEXTS))
    np.testing.assert_array_equal(first, second)
    assert enc.stats()["items_requested"] == 2 * len(TEXTS)
    assert enc.encode_seconds > 0

    # A fresh encoder (a restarted worker) reads the vectors from disk.
    fresh = ItemEncoder(device="cpu", cache_dir=tmp_path)
    third = fresh.encode(list(reversed(TEXTS)))
    assert (fresh.items_encoded, fresh.cache_hits) == (0, len(TEXTS))
    np.testing.assert_array_equal(third, first[::-1])

    folder = tmp_path / fresh.model_id
    assert len(list(folder.glob("seg-*.npy"))) == 1
    assert not list(folder.glob(".tmp-*"))


def test_only_changed_items_are_re_encoded(tmp_path: Path) -> None:
    enc = ItemEncoder(device="cpu", cache_dir=tmp_path)
    items = [Item(str(i), title=t) for i, t in enumerate(TEXTS)]
    enc.encode_items(items)
    items[3] = Item("3", title=items[3].title, description="Now with a description.")
    enc.encode_items(items)
    assert enc.items_encoded == len(items) + 1
    assert enc.cache_hits == len(items) - 1


def test_different_model_gets_a_different_cache_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    default = ItemEncoder(device="cpu", cache_dir=tmp_path)
    tiny = ItemEncoder(tiny_model_dir, device="cpu", cache_dir=tmp_path)
    assert tiny.model_id != default.model_id
    assert tiny.model_name == tiny_model_dir.name
    assert tiny.dim == 32
    assert tiny.max_length == 64  # clamped to the model's max_position_embeddings
    vectors = tiny.encode(TEXTS[:5])
    assert vectors.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Texts cached for the tiny model are not hits for MiniLM.
    default.encode(TEXTS[:5])
    assert (default.items_encoded, default.cache_hits) == (5, 0)
    assert {p.name for p in tmp_path.iterdir()} == {default.model_id, tiny.model_id}


def test_cache_key_is_model_content_not_path(tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = tmp_path / "same-weights-elsewhere"
    copy.mkdir()
    for f in tiny_model_dir.iterdir():
        (copy / f.name).symlink_to(f)
    a = ItemEncoder(tiny_model_dir, device="cpu", cache=False)
    assert ItemEncoder(copy, device="cpu", cache=False).model_id == a.model_id
    # Same architecture, config and tokenizer, other weights (e.g. retrained): another key.
    retrained = _save_tiny_bert(tmp_path / "retrained", seed=1)
    assert ItemEncoder(retrained, device="cpu", cache=False).model_id != a.model_id
    # A different max_length can change vectors, so it is part of the key.
    shorter = ItemEncoder(tiny_model_dir, device="cpu", cache=False, max_length=16)
    assert shorter.model_id != a.model_id


def test_unusable_cache_dir_disables_the_cache(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    enc = ItemEncoder(device="cpu", cache_dir=not_a_dir)
    assert enc.cache is None
    assert enc.encode(["Heat"]).shape == (1, 384)


def test_cache_survives_debris_and_corrupt_segments(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, dim=4)
    cache.put([text_key("a")], np.ones((1, 4), np.float32))
    (tmp_path / ".tmp-seg-half-written.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "seg-00000000000000000000-1-junk.npy").write_bytes(b"not a numpy file")
    reopened = EmbeddingCache(tmp_path, dim=4)
    hit, vectors = reopened.get([text_key("a"), text_key("b")])
    assert hit.tolist() == [True, False]
    np.testing.assert_array_equal(vectors[0], np.ones(4))
    assert len(reopened) == 1


def test_cache_compaction_keeps_every_vector(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path, dim=8, max_segments=3)
    expected: dict[bytes, np.ndarray] = {}
    for batch in range(10):
        keys = [text_key(f"text {batch}-{i}") for i in range(batch + 1)]
        vectors = rng.standard_normal((len(keys), 8)).astype(np.float32)
        assert cache.put(keys, vectors) == len(keys)
        expected.update(zip(keys, vectors, strict=True))
        assert len(list(tmp_path.glob("seg-*.npy"))) <= 3
    assert cache.put(keys, vectors) == 0  # already stored
    cache.compact()
    assert len(list(tmp_path.glob("seg-*.npy"))) == 1
    for store in (cache, EmbeddingCache(tmp_path, dim=8)):
        hit, got = store.get(list(expected))
        assert hit.all()
        np.testing.assert_array_equal(got, np.vstack(list(expected.values())))


def test_process_dying_mid_write_leaves_no_visible_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that dies (no cleanup, like SIGKILL) half-way through a segment file."""
    writer = textwrap.dedent(
        f"""
        import os, numpy as np
        from recstream.embedding_cache import EmbeddingCache, text_key
        cache = EmbeddingCache({str(tmp_path)!r}, dim=4)
        cache.put([text_key("kept")], np.ones((1, 4), np.float32))
        real_save = np.save
        def save_then_die(fh, array, **kwargs):
            if array.dtype == np.float32:  # keys written; die half-way through the vectors
                fh.write(b"\\x93NUMPY half a header")
                fh.flush()
                os._exit(9)
            real_save(fh, array, **kwargs)
        np.save = save_then_die
        cache.put([text_key("lost")], np.zeros((1, 4), np.float32))
        """
    )
    proc = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert len(list(tmp_path.glob(".tmp-*"))) == 1  # the torn file exists, under a hidden name
    cache = EmbeddingCache(tmp_path, dim=4)
    assert "unreadable segment" not in caplog.text
    hit, vectors = cache.get([text_key("kept"), text_key("lost")])
    assert hit.tolist() == [True, False]
    np.testing.assert_array_equal(vectors[0], np.ones(4))


@pytest.mark.slow
def test_cache_is_consistent_after_kill_mid_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL writers at random moments; every segment left on disk must be whole and right."""
    writer = textwrap.dedent(
        f"""
        import numpy as np
        from recstream.embedding_cache import EmbeddingCache, text_key
        cache = EmbeddingCache({str(tmp_path)!r}, dim=384, max_segments=4)
        start = len(cache)  # resume after what earlier (killed) writers completed
        while True:  # 15 MB segments; vector of key str(i) is i everywhere
            keys = [text_key(str(i)) for i in range(start, start + 10_000)]
            rows = np.arange(start, start + 10_000, dtype=np.float32)[:, None]
            cache.put(keys, np.repeat(rows, 384, axis=1))
            start += 10_000
            print(start, flush=True)
        """
    )
    rng = random.Random(1)
    rounds = 4  # kills land in writes, fsyncs, compactions or between them
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline()  # one segment done
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    cache = EmbeddingCache(tmp_path, dim=384)
    # Every segment file is complete (a torn write would be skipped with this warning).
    assert "unreadable segment" not in caplog.text
    assert len(cache) >= rounds * 10_000
    keys = [text_key(str(i)) for i in range(len(cache) + 20_000)]
    hit, vectors = cache.get(keys)
    assert hit.sum() == len(cache)
    ids = np.flatnonzero(hit)
    np.testing.assert_array_equal(vectors[ids], np.repeat(ids[:, None], 384, axis=1))


# --- device, threads, model location ---------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_device_resolution_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        ItemEncoder(device="cuda:1", cache=False)


def test_bad_devices_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown encoder device"):
        resolve_device("gpu-please")
    with pytest.raises(ValueError, match="unsupported encoder device"):
        resolve_device("meta")


def test_encoder_runs_on_the_resolved_device(encoder: ItemEncoder) -> None:
    assert encoder.device == torch.device("cpu")
    assert next(encoder.model.parameters()).device == encoder.device
    assert encoder.precision == "fp32"


def test_fp16_autocast_path_runs_on_cpu(reference: np.ndarray) -> None:
    """The CUDA branch (fp16 autocast, float32 pooling), exercised on CPU."""
    enc = ItemEncoder(device="cpu", cache=False, batch_size=4)
    enc._autocast = True  # what a CUDA device sets; there is no GPU to set it here
    half = enc.encode(TEXTS)
    assert half.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    diff = np.abs(half - reference).max()
    assert 0 < diff < 2e-2  # really computed in fp16 (not identical), yet the same vectors


def test_threads(encoder: ItemEncoder) -> None:
    assert torch.get_num_threads() == encoder.num_threads >= 1
    assert resolve_num_threads(None, {"OMP_NUM_THREADS": "1"}) == 1
    assert resolve_num_threads(None, {}) >= 1
    with pytest.raises(ValueError):
        resolve_num_threads(0)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="offline"):
        ItemEncoder(tmp_path / "no-such-model", cache=False)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ItemEncoder(tmp_path, cache=False)


# --- `recstream encode` ----------------------------------------------------------------------
def test_cli_encode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text(
        "item_id,title,genres,tags,year\n"
        "1,Toy Story (1995),Adventure|Animation|Children,pixar|fun,1995\n"
        '2,"Heat, the remake",Action|Crime,,2031\n'
        "3,Untitled,(no genres listed),,\n",
        encoding="utf-8",
    )
    out = tmp_path / "vectors.npy"
    argv = ["encode", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert cli_main([*argv, "--device", "cpu", "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "items/s" in printed and "cache hits 0" in printed
    vectors = np.load(out)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert (tmp_path / "vectors.ids.txt").read_text().split() == ["1", "2", "3"]

    assert cli_main(argv) == 0
    assert "cache hits 3" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out), vectors)

    assert cli_main(["encode", str(tmp_path / "nothing-here")]) == 2
    assert "no items file" in capsys.readouterr().err
