"""A private Kafka cluster for the scale-out tests: ``deploy/kafka/kafka.sh`` with a state folder
(``KAFKA_STATE``) and ports of its own, so it runs next to the session's shared broker on 9092
and a test may stop, kill and restart its nodes without touching anyone else's.

Three nodes get what ``make up BROKERS=3`` gets: combined broker + controller nodes, replication
factor 3 and ``min.insync.replicas=2`` for every topic (so one node may be down without losing an
acknowledged write). The state lives under the clone's ignored ``.stack/`` folder
(``.stack/test-kafka-<port>/``) and is removed when the cluster is closed; a folder left by a
session that died (its owner pid is gone) is stopped and removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
STATE_PARENT = ROOT / ".stack"
STATE_GLOB = "test-kafka-*"
OWNER_FILE = "owner.pid"


def _ports_free(first: int, n: int) -> bool:
    for port in range(first, first + n):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_blocks(n: int) -> tuple[int, int]:
    """Two runs of ``n`` consecutive free ports (clients, controllers), away from the defaults."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 40_000, 10)
        if _ports_free(base, n) and _ports_free(base + 100, n):
            return base, base + 100
    raise RuntimeError(f"no two blocks of {n} free ports found")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KafkaCluster:
    """``brokers`` nodes on 127.0.0.1:port..port+brokers-1 (node i on port+i-1)."""

    def __init__(self, brokers: int = 3, state: Path | None = None) -> None:
        self.brokers = brokers
        self.port, self.controller_port = free_port_blocks(brokers)
        self.state = state or STATE_PARENT / f"test-kafka-{self.port}"
        self.start_seconds: float | None = None  # the first start's (a report for the tests)
        # The caller's KAFKA_* and cluster settings (e.g. `make test`'s) must not leak in.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KAFKA_") and k not in ("BROKERS", "SECURE")
        }
        self.env = {
            **base,
            "SECURE": "0",
            "BROKERS": str(brokers),
            "KAFKA_STATE": str(self.state),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }

    # -- addresses ---------------------------------------------------------------------------
    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{self.port + i}" for i in range(self.brokers)]

    @property
    def bootstrap(self) -> str:
        """Every node, comma-separated: a client still connects while one node is down."""
        return ",".join(self.addresses)

    def log(self, node: int) -> Path:
        return self.state / f"node-{node}" / "kafka.log"

    # -- kafka.sh ----------------------------------------------------------------------------
    def sh(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", str(KAFKA_SH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
            raise RuntimeError(f"kafka.sh {' '.join(args)}: {lines[-1]}\n" + "\n".join(lines))
        return result

    def start(self) -> float:
        """Start every node that is down (all of them, the first time); seconds taken."""
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / OWNER_FILE).write_text(f"{os.getpid()}\n")
        t0 = time.monotonic()
        self.sh("start", "--brokers", str(self.brokers))
        seconds = time.monotonic() - t0
        if self.start_seconds is None:
            self.start_seconds = seconds
        return seconds

    def stop_node(self, node: int) -> float:
        """Clean shutdown of one node (``kafka.sh stop --node``); seconds taken."""
        t0 = time.monotonic()
        self.sh("stop", "--node", str(node))
        return time.monotonic() - t0

    def kill_node(self, node: int) -> None:
        """SIGKILL one node (a crash); ``start()`` brings it back."""
        pid = int((self.state / f"node-{node}" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    def status(self) -> str:
        result = subprocess.run(
            ["bash", str(KAFKA_SH), "status"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        self.sh("stop", timeout=300)

    def close(self) -> None:
        """Stop every node and remove the state."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(f"{self.state}.lock").unlink()

    # -- clients -----------------------------------------------------------------------------
    def admin(self):
        from kafka import KafkaAdminClient

        return KafkaAdminClient(
            bootstrap_servers=self.addresses, client_id="recstream-tests-cluster"
        )


def reap_stale_clusters() -> list[Path]:
    """Stop and remove the test clusters of sessions that died without closing theirs."""
    reaped = []
    for state in sorted(STATE_PARENT.glob(STATE_GLOB)):
        if not state.is_dir():
            continue
        try:
            owner = int((state / OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and _alive(owner):
            continue  # another session's, still running
        env = {**os.environ, "SECURE": "0", "KAFKA_STATE": str(state)}
        subprocess.run(
            ["bash", str(KAFKA_SH), "stop"],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        shutil.rmtree(state, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(f"{state}.lock").unlink()
        reaped.append(state)
    return reaped
