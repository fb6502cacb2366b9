"""Start, watch and stop a real recstream worker (``python -m streams.worker``) for a benchmark.

Every run gets its own topic prefix, Faust app id (= consumer group), Redis key prefix, web port
and models directory, so benchmarks never read another run's data or restore its checkpoint.
The models directory links ``cache/encoder`` to the benchmark's persistent encoder cache
(:data:`bench.workload.MODELS_CACHE`), so a catalogue encoded once is not re-encoded by BERT;
everything else the worker writes there (checkpoints, Faust's data dir) is thrown away.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, settings
from bench.workload import MODELS_CACHE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """One worker subprocess; use as a context manager (always stopped, tmp dir removed)."""

    def __init__(
        self,
        prefix: str,
        partitions: int,
        extra_env: dict[str, str] | None = None,
        profile_to: Path | None = None,
        loglevel: str = "warning",
        gc_probe: bool = False,
        loop_probe: bool = False,
    ) -> None:
        self.prefix = prefix
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="recstream-bench-")
        models = Path(self._tmp.name) / "models"
        (models / "cache").mkdir(parents=True)
        (MODELS_CACHE / "cache" / "encoder").mkdir(parents=True, exist_ok=True)
        (models / "cache" / "encoder").symlink_to(MODELS_CACHE / "cache" / "encoder")
        self.env = {
            **os.environ,
            "RECSTREAM_TOPIC_PREFIX": prefix,
            "RECSTREAM_APP_ID": prefix,
            "RECSTREAM_REDIS_PREFIX": prefix,
            "RECSTREAM_WEB_PORT": str(self.port),
            "RECSTREAM_MODELS_DIR": str(models),
            "RECSTREAM_PARTITIONS": str(partitions),
            **(extra_env or {}),
        }
        self.settings = settings().replace(
            topic_prefix=prefix,
            app_id=prefix,
            redis_prefix=prefix,
            web_port=self.port,
            partitions=partitions,
        )
        self.log_path = Path(self._tmp.name) / "worker.log"
        self.profile_to = profile_to
        self.loglevel = loglevel
        # Records the worker's garbage-collector pauses (bench/gc_probe.py) for stall diagnosis.
        self.gc_log = Path(self._tmp.name) / "gc.json" if gc_probe else None
        # Records the worker's slow event-loop callbacks (bench/loop_probe.py), likewise.
        self.loop_log = Path(self._tmp.name) / "loop.json" if loop_probe else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        if self.profile_to is not None:
            # pyinstrument wraps the whole worker; SIGINT makes Faust stop cleanly and
            # pyinstrument write its report on the way out.
            cmd = [
                sys.executable,
                "-m",
                "pyinstrument",
                "--renderer",
                "text",
                "--no-color",
                "-o",
                str(self.profile_to),
                "-m",
                "streams.worker",
                "-l",
                self.loglevel,
            ]
        else:
            cmd = [sys.executable, "-m", "streams.worker", "-l", self.loglevel]
            # Each probe runs the command after it as a module (runpy): they nest.
            if self.gc_log is not None:
                cmd[1:1] = ["-m", "bench.gc_probe", str(self.gc_log)]
            if self.loop_log is not None:
                cmd[1:1] = ["-m", "bench.loop_probe", str(self.loop_log)]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def load_catalogue(self, items: list) -> None:
        """Create the topics, produce the catalogue and wait until the worker is ready with
        every item's vector (cached by ``bench.workload``), so what is timed next is events."""
        from bench.kafka_util import produce
        from recstream.adapters.kafka import ensure_topics

        ensure_topics(self.settings)
        produce(self.settings.topic("items"), ((i.item_id.encode(), i.to_json()) for i in items))
        self.wait_until(
            lambda h: h.get("ready") and (h.get("item_vectors") or 0) >= len(items),
            timeout_s=600,
            what="ready with the catalogue encoded",
        )

    def metric(self, name: str) -> float:
        """One sample from the worker's Prometheus /metrics (0.0 when absent)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        match = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while starting still carries the JSON
            with contextlib.suppress(ValueError):
                return json.loads(exc.read())
        except (OSError, ValueError):
            pass
        return None

    def wait_until(
        self, ok: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            health = self.health()
            if health is not None and ok(health):
                return health
            time.sleep(0.2)
        raise TimeoutError(
            f"worker not {what} after {timeout_s:.0f} s; last health "
            f"{self.health()}; log tail:\n{self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def checkpoints(self) -> list[tuple[float, float, float]]:
        """(wall time the event loop resumed, seconds it was paused, seconds until written) of
        each checkpoint the worker logged (needs loglevel info); logged when written."""
        out = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", line)
                took = re.search(
                    r"checkpoint \S+: \d+ events, paused the loop ([0-9.]+) s, "
                    r"written in ([0-9.]+) s",
                    line,
                )
                if stamp and took:
                    wall = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
                    done = wall + int(stamp.group(2)) / 1e3
                    pause, written = float(took.group(1)), float(took.group(2))
                    out.append((done - written + pause, pause, written))
        return out

    def gc_pauses(self) -> list[tuple[float, float, int]]:
        """(wall time at end, seconds, generation) of the worker's GC pauses of 5 ms or more."""
        if self.gc_log is None:
            return []
        with contextlib.suppress(OSError, ValueError):
            return [(end, took, gen) for end, took, gen, _ in json.loads(self.gc_log.read_text())]
        return []

    def slow_callbacks(self) -> list[tuple[float, float, float, str]]:
        """(wall time at end, seconds, the loop thread's CPU seconds, what) of each event-loop
        callback of the worker that ran 10 ms or more (``loop_probe``)."""
        if self.loop_log is None:
            return []
        with contextlib.suppress(OSError, ValueError):
            return [
                (end, took, cpu, what)
                for end, took, cpu, what in json.loads(self.loop_log.read_text())
            ]
        return []

    def cpu_seconds(self) -> float:
        """utime + stime of the worker process so far (every thread), from /proc."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGINT for the profiled run (pyinstrument reports on KeyboardInterrupt), else SIGTERM.
        sig = signal.SIGINT if self.profile_to is not None else signal.SIGTERM
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by pid
            self.proc.wait(timeout=10)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if getattr(self, "_log", None):
                self._log.close()
            self._tmp.cleanup()
