"""Services, workers and event streams for the reliability experiments (``bench/chaos.py``).

* The worker is the real one (``python -m streams.worker``) started by the integration tests'
  harness (``tests/integration/worker_harness.py``): its own topic prefix, app id (= consumer
  group), Redis key prefix, web port and models folder, all starting with ``chaos.``.
* On the shared Redis the worker logs in as an ACL user of its own, ``recstream-chaos``, allowed
  the worker's commands on ``chaos.*`` keys only (``deploy/redis/redis.sh user``), like the tests'
  ``recstream-it``. The experiments read and clean up as the admin.
* Faults never touch the shared services: a private Redis (``tests/integration/redis_server.py``:
  redis.sh on a free port, state in the experiment's folder) and a private broker
  (:class:`PrivateKafka`) are started for the experiments that stop them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from redis_server import RedisServer  # noqa: E402  (tests/integration, put on the path above)
from worker_harness import Worker, free_port  # noqa: E402

REDIS_SH = ROOT / "deploy" / "redis" / "redis.sh"
NAMESPACE = "chaos"
CHAOS_USER = "recstream-chaos"
KEY_PATTERN = "chaos.*"
T0 = time.monotonic()

__all__ = ["EventStream", "PrivateKafka", "Progress", "RedisServer", "Worker", "free_port"]


def say(message: str) -> None:
    print(f"[chaos +{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> str:
    """``bash SCRIPT ARGS``: its stdout, or RuntimeError with the tail of its stderr."""
    result = subprocess.run(
        ["bash", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({result.returncode}):\n{tail}")
    return result.stdout.strip()


def time_until(condition: Callable[[], Any], timeout: float, interval: float = 0.2) -> float | None:
    """The monotonic time at which ``condition()`` first held, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():
                return time.monotonic()
        time.sleep(interval)
    return None


# --- Redis --------------------------------------------------------------------------------------


def shared_redis() -> tuple[str, dict[str, str]]:
    """(admin URL, the worker's RECSTREAM_REDIS_* for the chaos ACL user) on the stack's Redis."""
    port = os.environ.get("REDIS_PORT", "6379")
    password = os.environ.get("REDIS_PASSWORD", "")
    if not password:
        password = Path(run_script(REDIS_SH, "password-file")).read_text().rstrip("\r\n")
    password_file = run_script(REDIS_SH, "user", CHAOS_USER, KEY_PATTERN)
    worker_env = {
        "RECSTREAM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "RECSTREAM_REDIS_USERNAME": CHAOS_USER,
        "RECSTREAM_REDIS_PASSWORD_FILE": password_file,
    }
    return f"redis://:{password}@127.0.0.1:{port}/0", worker_env


def private_redis(state: Path) -> tuple[RedisServer, str, dict[str, str]]:
    """A Redis of the experiment's own (stopped and restarted by it): the server, its admin URL,
    and the worker's login (redis.sh's worker user, allowed ``chaos.*``)."""
    server = RedisServer(state, REDIS_WORKER_KEYS=KEY_PATTERN).start()
    settings = server.worker_settings()
    worker_env = {
        "RECSTREAM_REDIS_URL": settings.redis_url,
        "RECSTREAM_REDIS_USERNAME": settings.redis_username,
        "RECSTREAM_REDIS_PASSWORD_FILE": settings.redis_password_file,
    }
    return server, f"redis://:{server.password()}@127.0.0.1:{server.port}/0", worker_env


# --- Kafka --------------------------------------------------------------------------------------


class PrivateKafka:
    """A single-node broker of the experiment's own, started and stopped by ``kafka.sh``.

    ``KAFKA_STATE`` gives it a state folder (and lock) of its own under ``$TMPDIR``, so it never
    shares, or wipes, the stack's ``.stack/kafka``; the jars are the checkout's
    (``.cache/kafka-libs``, resolved by ``make up``).
    """

    def __init__(self, port: int = 9492) -> None:
        self.port = port if _free(port) and _free(port + 100) else free_port()
        self.state = Path(os.environ.get("TMPDIR", "/tmp")) / f"recstream-chaos-kafka-{self.port}"
        shutil.rmtree(self.state, ignore_errors=True)
        if not any((ROOT / ".cache" / "kafka-libs").glob("*.jar")):
            raise RuntimeError("no Kafka jars in .cache/kafka-libs: run `make up` first")
        self.script = ROOT / "deploy" / "kafka" / "kafka.sh"
        base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        cport = self.port + 100 if _free(self.port + 100) else free_port()
        self.env = {
            **base,
            "SECURE": "0",
            "BROKERS": "1",
            "KAFKA_STATE": str(self.state),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(cport),
        }
        self.log = self.state / "node-1" / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        t0 = time.monotonic()
        run_script(self.script, "start", env=self.env, timeout=180)
        return time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        run_script(self.script, "stop", env=self.env, timeout=120)
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(f"{self.state}.lock").unlink()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def delete_kafka_leftovers(bootstrap: str, prefix: str) -> None:
    """The worker's topics (``prefix.*``, and Faust's ``prefix-*`` if any) and its group."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="recstream-chaos")
    try:
        mine = [t for t in admin.list_topics() if t.startswith((prefix + ".", prefix + "-"))]
        if mine:
            admin.delete_topics(mine)
        # kafka-python 3 names it delete_groups, 2.x delete_consumer_groups
        delete_groups = getattr(admin, "delete_groups", None) or admin.delete_consumer_groups
        delete_groups([prefix])
    finally:
        admin.close()


# --- the event stream ---------------------------------------------------------------------------


class EventStream:
    """Valid events (distinct ``event_id``, key = ``user_id``) produced at ``rate`` per second by
    a thread (``limit`` events at most), with kafka-python's producer (idempotent, acks=all,
    retrying, reconnecting at least every second) given five minutes to deliver each one, so a
    broker outage is waited out, not dropped. Every event's hand-over time and delivery
    (partition, offset, or the error) is recorded."""

    def __init__(
        self,
        worker: Worker,
        tag: str,
        rate: float,
        users: int,
        items: int,
        seed: int = 0,
        limit: int | None = None,
    ) -> None:
        from kafka import KafkaProducer

        self.worker, self.tag, self.rate = worker, tag, rate
        self.users, self.items, self.limit = users, items, limit
        self.topic = worker.topic("events")
        self.producer = KafkaProducer(
            **worker.kafka_options(),
            linger_ms=5,
            delivery_timeout_ms=300_000,
            max_block_ms=300_000,
            request_timeout_ms=10_000,
            # kafka-python backs off reconnecting up to 30 s by default: after an outage the
            # *producer* would then decide when the stream resumes, not the broker or the worker.
            reconnect_backoff_max_ms=1_000,
        )
        self.handed: list[float] = []  # monotonic time of send(), by event number
        self.user_of: list[str] = []
        self.delivered: dict[int, tuple[int, int]] = {}
        self.acked_at: dict[int, float] = {}  # monotonic time of the broker's acknowledgement
        self.failed: dict[int, str] = {}
        self._stop = threading.Event()
        self._seed = seed
        self._thread = threading.Thread(target=self._run, name=f"stream-{tag}", daemon=True)
        self.send_error: str | None = None
        self._closed = False

    def event_id(self, n: int) -> str:
        return f"{self.tag}-{n}"

    def _run(self) -> None:
        import random

        rng = random.Random(self._seed)
        t0 = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set() and (self.limit is None or n < self.limit):
                wait = t0 + n / self.rate - time.monotonic()
                if wait > 0:
                    self._stop.wait(wait)
                    continue
                user = f"u{rng.randrange(self.users)}"
                kind = rng.choice(("view", "view", "view", "click", "purchase"))
                body = {"event_id": self.event_id(n), "user_id": user, "type": kind}
                body["item_id"] = f"i{rng.randrange(self.items)}"
                self.handed.append(time.monotonic())
                self.user_of.append(user)
                future = self.producer.send(self.topic, key=user.encode(), value=_json(body))
                future.add_callback(self._ok, n)
                future.add_errback(self._error, n)
                n += 1
        except Exception as exc:  # reported by stop(): the stream is part of the measurement
            self.send_error = f"{type(exc).__name__}: {exc}"

    def _ok(self, n: int, meta: Any) -> None:
        self.acked_at[n] = time.monotonic()
        self.delivered[n] = (meta.partition, meta.offset)

    def _error(self, n: int, exc: BaseException) -> None:
        self.failed[n] = f"{type(exc).__name__}: {exc}"

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def stop(self, flush_timeout: float = 320) -> EventStream:
        """Stop handing events over, wait for every delivery (or failure), close. Idempotent."""
        if self._closed:
            return self
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=flush_timeout)
        with contextlib.suppress(Exception):
            self.producer.flush(timeout=flush_timeout)
        self.producer.close(timeout=10)
        return self

    @property
    def handed_count(self) -> int:
        return len(self.handed)

    @property
    def sent(self) -> int:
        """Events the broker acknowledged: the ones the worker can learn."""
        return len(self.delivered)

    def before(self, t: float) -> int:
        """Events handed to the producer before monotonic time ``t``."""
        import bisect

        return bisect.bisect_left(self.handed, t)

    def first_ack_after(self, t: float) -> float | None:
        return min((a for a in self.acked_at.values() if a >= t), default=None)

    def all_acked_at(self, n: int) -> float | None:
        """When the broker had acknowledged all of the first ``n`` events (None: not all were)."""
        times = [self.acked_at.get(i) for i in range(n)]
        return None if None in times else max(times, default=0.0)  # type: ignore[type-var]


class Progress:
    """``events_processed`` of the worker's /healthz every ``interval`` seconds, in a thread:
    ``series(t0)`` is [[seconds since t0, events_processed], ...] (whole seconds)."""

    def __init__(self, w: Worker, interval: float = 0.5) -> None:
        self.w, self.interval = w, interval
        self.samples: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            h = self.w.health() if self.w.proc and self.w.proc.poll() is None else None
            self.samples.append((time.monotonic(), (h or {}).get("events_processed")))
            self._stop.wait(self.interval)

    def start(self) -> Progress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def first_gain_after(self, t0: float) -> float | None:
        """When the count first rose above its value at ``t0`` (monotonic), or None."""
        base = next((n for t, n in reversed(self.samples) if t <= t0 and n is not None), None)
        for t, n in self.samples:
            if t > t0 and n is not None and base is not None and n > base:
                return t
        return None

    def series(self, t0: float, every: float = 2.0) -> list[list[Any]]:
        out: list[list[Any]] = []
        for t, n in self.samples:
            if not out or t - t0 >= out[-1][0] + every:
                out.append([round(t - t0), n])
        return out


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
