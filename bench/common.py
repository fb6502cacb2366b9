"""Helpers shared by the benchmarks: machine facts, RSS, timing, profiles, service settings."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PROFILES_DIR = BENCH_DIR / "profiles"
PYTHON = sys.executable


def _default_redis_url() -> None:
    """Benchmarks write under key prefixes of their own (bench-*), which the worker's ACL user
    may not touch: unless RECSTREAM_REDIS_URL is given, they, and the workers they start (which
    inherit this environment), log in as the stack's admin, whose password deploy/redis/redis.sh
    generated (or REDIS_PASSWORD gave)."""
    if os.environ.get("RECSTREAM_REDIS_URL"):
        return
    password = os.environ.get("REDIS_PASSWORD", "")
    if not password:
        script = ROOT / "deploy" / "redis" / "redis.sh"
        found = subprocess.run(
            ["bash", str(script), "password-file"], capture_output=True, text=True, check=False
        )
        with contextlib.suppress(OSError):
            password = Path(found.stdout.strip()).read_text().strip()
    if password:
        port = os.environ.get("REDIS_PORT", "6379")
        os.environ["RECSTREAM_REDIS_URL"] = f"redis://:{password}@127.0.0.1:{port}/0"


_default_redis_url()


def _first_line_with(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError), open(path) as fh:
        for line in fh:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """1/5/15-min load: recorded with every figure because other work shares this machine."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    mem_kb = _first_line_with("/proc/meminfo", "MemTotal")
    ram_gb = round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None
    # Versions come from package metadata, not imports: importing torch costs ~2 s and memory.
    return {
        "cpu": _first_line_with("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "torch",
                "transformers",
                "sentence-transformers",
                "numpy",
                "river",
                "faust-streaming",
                "aiokafka",
                "kafka-python",
                "redis",
            )
        },
        "load_average": load_average(),
    }


def rss_mb() -> float:
    """Resident set size of this process in MiB (from /proc: psutil is not a dependency)."""
    kb = _first_line_with("/proc/self/status", "VmRSS")
    if kb is None:
        raise RuntimeError("VmRSS not available (needs Linux /proc)")
    return int(kb.split()[0]) / 1024


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds: the median shrugs off a neighbour's burst."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def unique_name(stem: str) -> str:
    """A fresh topic prefix / app id / key prefix, so runs never see each other's data."""
    return f"bench-{stem}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def profiled(name: str, enabled: bool = True) -> Iterator[None]:
    """Profile the block with pyinstrument and save the text summary to bench/profiles/NAME.txt."""
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        PROFILES_DIR.mkdir(exist_ok=True)
        text = profiler.output_text(unicode=False, color=False, show_all=False)
        (PROFILES_DIR / f"{name}.txt").write_text(text)


def settings() -> Any:
    """The project's Settings (broker, Redis URL, ...) from RECSTREAM_* env vars."""
    from recstream.config import Settings

    return Settings.from_env()


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(settings().redis_url)


def delete_redis_prefix(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix:`` (a benchmark's own, unique prefix)."""
    doomed = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for start in range(0, len(doomed), 5000):
        client.delete(*doomed[start : start + 5000])
    return len(doomed)
