"""One experiment's resources and bookkeeping (``bench/chaos.py``): its folder, its worker(s)
and services, undone in reverse order whatever happens; and the accounting every experiment
shares (sent, learned, dead-lettered, lost, duplicated), and reading what the worker did
(/metrics, its log, the events topic)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.chaos_stack import (
    NAMESPACE,
    ROOT,
    EventStream,
    Progress,
    Worker,
    delete_kafka_leftovers,
    say,
    time_until,
)

LOGS = ROOT / ".cache" / "chaos"
# Every worker: 2 partitions per topic, a checkpoint every 10 s (the default is 30: shorter, so
# the SIGKILL lands after one within the time budget), a metrics snapshot every second. Session
# timeout (30 s) and metadata refresh (30 s) are the defaults, as in production.
WORKER_ENV = {
    "RECSTREAM_PARTITIONS": "2",
    "RECSTREAM_CHECKPOINT_INTERVAL_S": "10",
    "RECSTREAM_METRICS_INTERVAL_S": "1",
    "RECSTREAM_SESSION_TIMEOUT_S": "30",
    "RECSTREAM_METADATA_MAX_AGE_S": "30",
    "RECSTREAM_ENCODER_INTERVAL_S": "0.5",
}
N_ITEMS = 50


class Lab:
    """``with Lab("redis-outage") as lab:`` ... every ``lab.on_exit(fn)`` runs at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = LOGS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._undo: list[tuple[str, Callable[[], Any]]] = []
        self.cleanup_errors: list[str] = []
        self.checks: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        for what, undo in reversed(self._undo):
            try:
                undo()
            except Exception as e:  # every other undo still runs
                self.cleanup_errors.append(f"{what}: {type(e).__name__}: {e}")
        if self.cleanup_errors:
            say(f"{self.name}: clean-up problems: {self.cleanup_errors}")

    def on_exit(self, what: str, undo: Callable[[], Any]) -> None:
        self._undo.append((what, undo))

    def worker(
        self, bootstrap: str, admin_redis: str, worker_redis: dict[str, str], **env: str
    ) -> Worker:
        models = self.folder / "models"
        models.mkdir(exist_ok=True)
        w = Worker(
            bootstrap,
            admin_redis,
            self.name,
            models,
            worker_redis,
            namespace=NAMESPACE,
            **{**WORKER_ENV, **env},
        )
        self.on_exit("worker", lambda: self._finish(w))
        return w

    def _finish(self, w: Worker) -> None:
        w.stop()
        shutil.rmtree(w.models_dir, ignore_errors=True)  # checkpoints, Faust's data dir
        with contextlib.suppress(OSError):
            w.log_path.rename(self.folder / "worker.log")
        delete_kafka_leftovers(w.bootstrap, w.prefix)
        keys = list(w.redis.scan_iter(match=w.prefix + ":*", count=1000))
        for i in range(0, len(keys), 500):
            w.redis.delete(*keys[i : i + 500])
        w.redis.close()

    def check(self, what: str, passed: bool, detail: Any = "") -> bool:
        self.checks.append({"check": what, "passed": bool(passed), "detail": detail})
        say(f"{self.name}: {'ok  ' if passed else 'FAIL'} {what}{f' ({detail})' if detail else ''}")
        return bool(passed)


def start_worker(w: Worker) -> float:
    """Start the worker, produce the catalogue, wait until every item has its vector (so BERT
    does not compete with what is measured next); seconds to ready."""
    t0 = time.monotonic()
    w.start()
    w.wait_ready(timeout=180)
    ready = time.monotonic() - t0
    items = [
        (f"i{n}".encode(), json.dumps({"item_id": f"i{n}", "title": f"Item {n}"}).encode())
        for n in range(N_ITEMS)
    ]
    w.send("items", items)
    encoded = time_until(lambda: health(w).get("item_vectors", 0) >= N_ITEMS, 180)
    state = "encoded" if encoded else "NOT encoded after 180 s"
    say(f"worker {w.prefix} ready in {ready:.1f} s, catalogue {state}")
    return ready


def health(w: Worker) -> dict[str, Any]:
    return w.health() or {}


def settle(
    w: Worker, sent: int, timeout: float, idle: float = 20.0
) -> tuple[dict[str, Any], float | None]:
    """Wait until the worker has learned ``sent`` events, or ``timeout``, or ``idle`` seconds
    without it learning anything (what is missing then is not coming), then 2 s more so a late
    extra count shows: (health, monotonic time it reached ``sent`` or None)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < idle:
        n = health(w).get("events_processed", -1)
        if n >= sent:
            time.sleep(2)
            return health(w), time.monotonic() - 2
        if n != last:
            last, last_change = n, time.monotonic()
        time.sleep(0.2)
    return health(w), None


def accounting(
    lab: Lab, w: Worker, sent: int, final: dict[str, Any], dlq: list[dict] | None = None
) -> dict[str, Any]:
    """The table's numbers from the worker's /healthz and its DLQ topic."""
    alive = w.proc is not None and w.proc.poll() is None
    lab.check("the worker is running at the end", alive, "" if alive else w.log_tail(20))
    broken, sample = logging_errors(w)
    lab.check(
        "no log record the worker failed to format",
        broken == 0,
        f"{broken} '--- Logging error ---' tracebacks in its log, the first: {sample}"
        if broken
        else "",
    )
    learned = final.get("events_processed")
    model = final.get("model_events")
    if dlq is None:
        dlq = w.read_json("events.dlq")
    out: dict[str, Any] = {
        "sent": sent,
        "learned": learned,
        "model_events": model,
        "dead_lettered": len(dlq),
        "dlq_total_healthz": final.get("dlq_total"),
        "dedup_caught": final.get("duplicates"),
        "replayed_skipped": final.get("replayed_skipped"),
        "worker_status": final.get("status"),
        "worker_alive": alive,
        "logging_errors": broken,
    }
    if learned is None:
        out.update(lost=None, duplicated=None)
        lab.check("/healthz answers at the end", False)
        return out
    out["lost"] = max(0, sent - learned)
    out["duplicated"] = max(0, learned - sent, (model or 0) - sent)
    lab.check("lost 0: every valid event learned", out["lost"] == 0, f"{learned} of {sent}")
    lab.check(
        "duplicated 0: none learned twice",
        out["duplicated"] == 0,
        f"events_processed {learned}, model_events {model}, sent {sent}",
    )
    return out


# --- reading what the worker did ----------------------------------------------------------------


def metric(w: Worker, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric family from the worker's /metrics ({} if unreachable)."""
    try:
        _, body, _ = w.get("/metrics")
    except OSError:
        return {}
    pattern = rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$"
    return {m.group(1) or "": float(m.group(2)) for m in re.finditer(pattern, body.decode(), re.M)}


def log_lines(w: Worker) -> int:
    with contextlib.suppress(OSError), w.log_path.open("rb") as fh:
        return sum(1 for _ in fh)
    return 0


LINE = re.compile(r"^\[[\d\- :,]+\] \[\d+\] \[(\w+)\] (.*)$")


def log_window(w: Worker, first: int, last: int, top: int = 5) -> dict[str, Any]:
    """Lines ``first``..``last`` (0-based, end excluded) of the worker's log: how many, by level,
    and the most frequent messages (digits folded, so 'node 1' and 'node 2' are one kind)."""
    with w.log_path.open("rb") as fh:
        lines = [ln.decode(errors="replace").rstrip("\n") for ln in fh][first:last]
    lines = [ln.replace(w.prefix, "<prefix>") for ln in lines]
    levels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for line in lines:
        m = LINE.match(line)
        if m is None:  # a traceback's or a multi-line message's next line
            levels["continuation"] += 1
            continue
        level, text = m.groups()
        levels[level] += 1
        if level in ("WARNING", "ERROR", "CRITICAL"):
            kinds[f"{level} {re.sub(r'[0-9]+', 'N', text)[:160]}"] += 1
    return {
        "lines": len(lines),
        "by_level": dict(levels),
        "top": [{"count": c, "line": k} for k, c in kinds.most_common(top)],
    }


def logging_errors(w: Worker) -> tuple[int, str]:
    """'--- Logging error ---' blocks in the worker's log (records the logging machinery failed
    to format: it prints a traceback and the call stack instead of the line): how many, and the
    first one's error and message."""
    try:
        text = w.log_path.read_text(errors="replace")
    except OSError:
        return 0, ""
    count = text.count("--- Logging error ---")
    if not count:
        return 0, ""
    block = text[text.index("--- Logging error ---") :].splitlines()
    error = next((ln for ln in block if ln.startswith(("TypeError", "ValueError"))), "")
    message = next((ln for ln in block if ln.startswith("Message: ")), "")
    return count, f"{error}; {message}"[:300]


def repeated_ids(w: Worker) -> int:
    """Records on the events topic whose event_id appeared before (the producer's redelivery)."""
    ids: Counter[str] = Counter()
    for record in w.read("events", timeout=60):
        with contextlib.suppress(Exception):
            ids[json.loads(record.value)["event_id"]] += 1
    return sum(c - 1 for c in ids.values() if c > 1)


# --- what every experiment shares --------------------------------------------------------------

RATE = 100.0  # valid events per second, during every fault
USERS = 200
PRE_S, OUTAGE_S, POST_S = 10.0, 25.0, 10.0


@dataclass(frozen=True)
class Shared:
    """The stack's broker, and the stack's Redis: admin URL and the worker's ACL login."""

    bootstrap: str
    admin_redis: str
    worker_redis: dict[str, str]


def since(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 2)


def new_stream(
    lab: Lab,
    w: Worker,
    tag: str,
    users: int = USERS,
    seed: int = 1,
    rate: float = RATE,
    limit: int | None = None,
) -> EventStream:
    stream = EventStream(w, tag, rate, users, N_ITEMS, seed, limit)
    lab.on_exit(f"stream {tag}", lambda: stream.stop(flush_timeout=30))
    return stream.start()


def new_progress(lab: Lab, w: Worker) -> Progress:
    progress = Progress(w).start()
    lab.on_exit("progress sampler", progress.stop)
    return progress


def stream_report(lab: Lab, stream: EventStream) -> dict[str, Any]:
    lab.check(
        f"the producer delivered every event of stream {stream.tag}",
        not stream.failed and stream.send_error is None,
        f"{len(stream.failed)} failed of {stream.handed_count}; {stream.send_error or ''}",
    )
    return {
        "handed": stream.handed_count,
        "acked": stream.sent,
        "failed": len(stream.failed),
        "first_failures": list(stream.failed.values())[:3],
        "send_error": stream.send_error,
    }
