"""Run the real worker (``python -m streams.worker``) as a subprocess against the session's
Kafka and Redis, with its own topic prefix, app id, Redis prefix, web port and models dir.

Used by ``test_worker_*.py``; kafka-python produces and consumes from outside, as a client would.
:class:`WorkerGroup` runs several of them in one consumer group (same prefix and app id, each
with its own web port and models dir), for the scale-out tests (``test_cluster.py``);
``Worker(..., command=FAUST_WORKER)`` starts one with Faust's own command instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from recstream.adapters.kafka import kafka_client_options
from recstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PYTHON_WORKER = (sys.executable, "-m", "streams.worker", "--loglevel", "info")
# Faust's command, from the same virtualenv (the script next to its python).
FAUST_WORKER = (
    str(Path(sys.executable).parent / "faust"),
    "-A",
    "streams.app",
    "worker",
    "-l",
    "info",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25
) -> Any:
    """Poll ``condition`` until truthy; fail with ``what`` (and the last value) on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Worker:
    """One worker process and everything it is configured with. ``redis_url`` is the tests'
    own (admin) client; the worker logs in as ``worker_redis_env`` says (an ACL user), or with
    ``redis_url`` when none is given."""

    def __init__(
        self,
        bootstrap: str,
        redis_url: str,
        name: str,
        models_dir: Path,
        worker_redis_env: Mapping[str, str] | None = None,
        *,
        namespace: str = "it",
        prefix: str | None = None,
        command: Sequence[str] = PYTHON_WORKER,
        **env: str,
    ):
        # Dashes, not underscores: Kafka warns that "." and "_" collide in its metric names.
        name = "".join(c if c.isalnum() else "-" for c in name)[:40]
        # The namespace starts the topic prefix and app id (a broker's ACLs may allow only one).
        # A given prefix (WorkerGroup) puts this worker in that group: same topics, same app id.
        self.prefix = prefix or f"{namespace}.{name}.{uuid.uuid4().hex[:10]}"
        self.command = list(command)
        self.port = free_port()
        self.bootstrap = bootstrap
        self.models_dir = models_dir
        self.log_path = models_dir.parent / f"worker-{self.prefix}-{models_dir.name}.log"
        self.env = {
            **os.environ,
            "RECSTREAM_BROKER": f"kafka://{bootstrap}",
            **(worker_redis_env or {"RECSTREAM_REDIS_URL": redis_url}),
            "RECSTREAM_TOPIC_PREFIX": self.prefix,
            "RECSTREAM_APP_ID": self.prefix,
            "RECSTREAM_REDIS_PREFIX": self.prefix,
            "RECSTREAM_WEB_PORT": str(self.port),
            "RECSTREAM_MODELS_DIR": str(models_dir),
            "RECSTREAM_PARTITIONS": "2",
            # The broker's minimum (group.min.session.timeout.ms): a SIGKILLed worker's
            # partitions are free again after ~6 s instead of the default 30.
            "RECSTREAM_SESSION_TIMEOUT_S": "6",
            "RECSTREAM_CHECKPOINT_INTERVAL_S": "2",
            "RECSTREAM_METRICS_INTERVAL_S": "1",
            "RECSTREAM_ENCODER_INTERVAL_S": "0.5",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.redis = redis.Redis.from_url(redis_url)

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- process -----------------------------------------------------------------------------
    def start(self) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 120) -> dict:
        def ready() -> dict | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            health = self.health()
            return health if health and health.get("ready") else None

        return wait_for(ready, timeout, "the worker's /healthz to say ready")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> None:
        """SIGTERM (a clean stop: final checkpoint or flush), SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> Worker:
        """Start it again (same settings, port and models dir) after a stop or a kill."""
        self.stop()
        return self.start()

    def cleanup(self, admin: Any) -> None:
        """Delete this worker's topics and Redis keys (names are unique: nobody else's)."""
        with contextlib.suppress(Exception):
            mine = [t for t in admin.list_topics() if t.startswith(self.prefix + ".")]
            if mine:
                admin.delete_topics(mine)
        with contextlib.suppress(Exception):
            keys = list(self.redis.scan_iter(match=self.prefix + ":*", count=1000))
            for i in range(0, len(keys), 500):
                self.redis.delete(*keys[i : i + 500])
        self.redis.close()

    def log_tail(self, n: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    # -- HTTP --------------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, bytes, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def health(self) -> dict | None:
        try:
            status, body, _ = self.get("/healthz")
        except OSError:
            return None
        return json.loads(body) if status in (200, 503) else None

    def wait_events(self, n: int, timeout: float = 120) -> dict:
        return wait_for(
            lambda: (h := self.health()) and h["events_processed"] >= n and h,
            timeout,
            f"{n} events processed",
        )

    # -- Kafka -------------------------------------------------------------------------------
    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recstream.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kafka_options(self) -> dict[str, Any]:
        """The worker's own bootstrap servers, TLS and SASL settings (``RECSTREAM_KAFKA_*``), for
        the kafka-python clients of the test: they connect as the worker does."""
        return kafka_client_options(Settings.from_env(self.env))

    def producer(self) -> KafkaProducer:
        return KafkaProducer(**self.kafka_options(), linger_ms=2)

    def send(self, name: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
        producer = self.producer()
        for key, value in messages:
            producer.send(self.topic(name), key=key, value=value)
        producer.flush(timeout=30)
        producer.close()

    def read(self, name: str, timeout: float = 30.0) -> list[Any]:
        """Every record currently in ``<prefix>.<name>``, from the beginning."""
        topic = self.topic(name)
        consumer = KafkaConsumer(**self.kafka_options(), enable_auto_commit=False)
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
                if time.monotonic() > deadline:
                    break
            return records
        finally:
            consumer.close()

    def read_json(self, name: str) -> list[dict]:
        return [json.loads(r.value) for r in self.read(name)]


def worker_factory(
    bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    name: str,
    admin: Any,
    worker_redis_env: Mapping[str, str] | None = None,
):
    """``(make, finish)``: ``make(**env)`` creates a Worker (``prefix=`` joins another's group,
    ``command=`` replaces ``python -m streams.worker``); ``finish()`` stops and cleans all.

    The worker logs are printed at the end: pytest shows them when the test fails.
    """
    workers: list[Worker] = []

    def make(
        *, prefix: str | None = None, command: Sequence[str] = PYTHON_WORKER, **env: str
    ) -> Worker:
        models = tmp_path / f"models-{len(workers)}"
        w = Worker(
            bootstrap,
            redis_url,
            name,
            models,
            worker_redis_env,
            prefix=prefix,
            command=command,
            **env,
        )
        w.models_dir.mkdir(parents=True, exist_ok=True)
        workers.append(w)
        return w

    def finish() -> None:
        for w in workers:
            w.stop()
            print(f"----- {w.log_path.name} (last lines) -----\n{w.log_tail(80)}")
            w.cleanup(admin)

    return make, finish


class WorkerGroup:
    """``n`` workers in ONE consumer group: the same topic prefix, app id and Redis prefix, each
    with its own web port and models dir (``<tmp>/models-<i>``). ``env`` goes to every worker.

    ``group[i]`` is a :class:`Worker`: ``kill()`` (SIGKILL), ``stop()`` (SIGTERM), ``restart()``.
    Topics and keys are the group's (``group.topic(...)``, ``group.key(...)``); ``send`` and
    ``read`` go through the first worker's Kafka settings.
    """

    def __init__(
        self,
        make: Callable[..., Worker],
        n: int,
        **env: str,
    ) -> None:
        first = make(**env)
        self.workers = [first] + [make(prefix=first.prefix, **env) for _ in range(n - 1)]
        self.prefix = first.prefix

    def __getitem__(self, i: int) -> Worker:
        return self.workers[i]

    def __iter__(self):
        return iter(self.workers)

    def __len__(self) -> int:
        return len(self.workers)

    def topic(self, name: str) -> str:
        return self.workers[0].topic(name)

    def key(self, *parts: str) -> str:
        return self.workers[0].key(*parts)

    def start(self, timeout: float = 180) -> list[dict]:
        """Start every worker at once, then wait until each says ready."""
        for w in self.workers:
            w.start()
        return [w.wait_ready(timeout) for w in self.workers]

    def running(self) -> list[Worker]:
        return [w for w in self.workers if w.running]

    def healths(self) -> dict[int, dict | None]:
        """/healthz of each running worker, by index."""
        return {i: w.health() for i, w in enumerate(self.workers) if w.running}

    def send(self, name: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
        self.workers[0].send(name, messages)

    def read(self, name: str, timeout: float = 30.0) -> list[Any]:
        return self.workers[0].read(name, timeout)
