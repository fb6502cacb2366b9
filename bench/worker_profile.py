"""Where a running worker's time goes: py-spy samples of its process, grouped by job.

:func:`spy` attaches ``py-spy record`` (the ``bench`` extra) to a worker's pid for the duration
of a block, sampling every thread including idle ones (``--idle``), in py-spy's raw format (one
line per distinct stack: ``frame;frame;... count``, root first). :func:`breakdown` sorts each
stack into one job by the frames it holds, the first rule that matches in :data:`GROUPS` order:
the event loop waiting for I/O, then the worker's own steps (decode, dedup, learn, recommend,
serialise), its outputs (Kafka publish, Redis), the metrics, checkpoints, the encoder, and
last Faust / aiokafka's input path and the asyncio loop itself.

Samples, not instrumentation: the worker runs at full speed (``--nonblocking`` never pauses it),
and the shares of the main thread's samples are the shares of its wall time.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# (group, pattern searched in the whole stack); the first that matches wins, so the more
# specific jobs come before the paths that contain them (learn runs inside Faust's task, ...).
GROUPS: tuple[tuple[str, str], ...] = (
    # The loop blocked in epoll: nothing to do (or waiting for the broker / Redis to answer).
    ("idle (waiting for I/O)", r"\b(select|poll) \(selectors\.py[^;]*$"),
    ("encoder thread (BERT)", r"_encode_sync|recstream/encoder\.py|torch/|transformers/"),
    ("checkpoint", r"checkpoint|fork"),
    ("decode (parse_event)", r"parse_event|_learn_message \(recstream/pipeline\.py[^;]*$"),
    ("dedup", r"DedupWindow|dedup|online\.py:\d+\)[^;]*;?[^;]*__contains__"),
    ("learn (Recommender.learn)", r"\blearn \(recstream/recommender"),
    ("recommend (Recommender.recommend, profile)", r"\b(recommend|user_profile) \(recstream/"),
    ("serialise the list (JSON)", r"to_json \(recstream/events"),
    (
        "publish to Kafka (producer)",
        r"_send \(streams/runtime|publish \(streams/worker|aiokafka/producer|Producer\.send",
    ),
    ("Redis (sink + client)", r"redis_sink\.py|redis/asyncio|redis/_parsers|hiredis"),
    ("metrics (Prometheus)", r"prometheus_client|observe_latency|recstream/adapters/metrics"),
    ("batch bookkeeping (runtime, outcomes)", r"streams/runtime\.py|recstream/pipeline"),
    ("Faust + aiokafka input (fetch, stream, agent)", r"faust/|mode/|aiokafka/"),
    ("asyncio loop (scheduling, callbacks)", r"asyncio/"),
)
OTHER = "other"


def available() -> bool:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) is not None or bool(
        shutil.which("py-spy")
    )


def _py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


@contextlib.contextmanager
def spy(pid: int, out: Path, rate: int = 250, idle: bool = True) -> Iterator[Path]:
    """Sample ``pid`` for the duration of the block into ``out`` (raw; ``idle``: the samples of
    waiting threads too, so shares are of wall time, else of CPU time)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [_py_spy(), "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)]
    cmd += ["--nonblocking", "--threads", *(["--idle"] if idle else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield out
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by pid
            proc.wait(timeout=10)


def read_raw(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack, int(count)))
    return out


def _thread(stack: str) -> str:
    # --threads puts "thread (0x...)" / "process ..." frames at the root.
    first = stack.split(";", 2)
    for frame in first[:2]:
        if frame.startswith("thread ("):
            return frame
    return "thread"


def breakdown(path: Path) -> dict[str, Any]:
    """Samples per job of the thread with the most samples (the event loop) and of the rest."""
    stacks = read_raw(path)
    if not stacks:
        return {"samples": 0}
    per_thread: Counter[str] = Counter()
    for stack, count in stacks:
        per_thread[_thread(stack)] += count
    # The event loop runs in the main thread (Faust's consumer thread, the encoder thread and
    # asyncio's executor are others).
    loop_thread = next(
        (t for t in per_thread if t.endswith(": MainThread")), per_thread.most_common(1)[0][0]
    )
    compiled = [(name, re.compile(pattern)) for name, pattern in GROUPS]
    groups: Counter[str] = Counter()
    others: Counter[str] = Counter()
    unmatched: Counter[str] = Counter()
    for stack, count in stacks:
        name = next((n for n, rx in compiled if rx.search(stack)), OTHER)
        if _thread(stack) == loop_thread:
            groups[name] += count
            if name == OTHER:
                unmatched[stack.rsplit(";", 1)[-1]] += count
        else:
            others[name] += count
    total = sum(groups.values())
    busy = total - groups.get(GROUPS[0][0], 0)
    return {
        "samples": total,
        "loop_thread": loop_thread,
        "share_of_wall": {n: round(c / total, 4) for n, c in groups.most_common()},
        # The same without the idle samples: where the loop's CPU time goes.
        "share_of_busy": {
            n: round(c / busy, 4) for n, c in groups.most_common() if n != GROUPS[0][0] and busy
        },
        "other_threads_samples": dict(others.most_common()),
        "unmatched_leaves": dict(unmatched.most_common(8)),
    }


def summary_text(result: dict[str, Any]) -> str:
    lines = [f"py-spy samples of the event loop thread: {result.get('samples', 0)}"]
    for name, share in result.get("share_of_wall", {}).items():
        busy = result.get("share_of_busy", {}).get(name)
        tail = f"  ({busy:6.1%} of busy)" if busy is not None else ""
        lines.append(f"  {share:6.1%}  {name}{tail}")
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    res = breakdown(Path(sys.argv[1]))
    print(summary_text(res))
    print(json.dumps(res, indent=1))
