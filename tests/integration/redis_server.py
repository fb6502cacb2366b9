"""A private Redis for one test, started by ``deploy/redis/redis.sh`` exactly as the stack's (same
config, users, persistence), on a free port with its state in the test's tmp folder: a test can
stop, kill or restart it without touching the session's Redis on 6379 that other tests share.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import redis

from recstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
REDIS_SH = ROOT / "deploy" / "redis" / "redis.sh"
WORKER_USER = "recstream-worker"  # redis.sh's default REDIS_WORKER_USER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, state: Path, *, tls: bool = False, **env: str) -> None:
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.state = state
        # The caller's REDIS_* (e.g. a REDIS_PASSWORD for the shared server) must not leak in.
        base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
        self.env = {
            **base,
            "REDIS_PORT": str(self.port),
            "REDIS_STATE": str(state),
            **({"REDIS_TLS_PORT": str(self.tls_port)} if self.tls_port else {}),
            **env,
        }

    def sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", str(REDIS_SH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"redis.sh {' '.join(args)} failed:\n{result.stderr}")
        return result

    def start(self) -> RedisServer:
        self.sh("start")
        return self

    def stop(self) -> None:
        self.sh("stop")

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown fsync."""
        os.kill(int((self.state / "redis.pid").read_text()), signal.SIGKILL)

    def password(self, user: str = "default") -> str:
        path = self.sh("password-file", user).stdout.strip()
        return Path(path).read_text().rstrip("\n")

    def admin(self, **kw: Any) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password(), **kw)

    def client(self, user: str, password: str | None = None, **kw: Any) -> redis.Redis:
        if password is None:
            password = self.password(user)
        return redis.Redis(port=self.port, username=user, password=password, **kw)

    def worker_settings(self, **changes: Any) -> Settings:
        """The worker's settings for this server: its ACL user, the password *file*."""
        return Settings(
            redis_url=f"redis://127.0.0.1:{self.port}/0",
            redis_username=WORKER_USER,
            redis_password_file=self.sh("password-file", WORKER_USER).stdout.strip(),
        ).replace(**changes)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sh("stop", check=False)
