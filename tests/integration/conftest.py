"""Real Kafka and Redis for ``tests/integration``: one broker and one Redis per test session.

Services that already run (``make up``, or ``make test`` which starts them first) are reused and
left running; otherwise the session starts them with ``deploy/*/*.sh start`` and stops them at the
end, unless another test session in the same clone still uses them (a shared lock on
``.stack/test-sessions.lock`` counts the sessions). When a service cannot start, every
integration test fails with the script's reason: these tests are never skipped. Ports and password
come from the same environment variables as the Makefile: KAFKA_PORT, REDIS_PORT, REDIS_PASSWORD
(and BROKERS for a cluster); without REDIS_PASSWORD, the admin password is the file redis.sh
generated.

Redis has two kinds of clients here, like in production: the tests' own (``redis_url``: the admin,
to inspect and clean up) and the worker's (``worker_redis``: an ACL user with exactly the worker
user's rules, ``deploy/redis/redis.sh user``, on the tests' key prefixes ``it.*`` and ``it-*``).

Fixtures: ``bootstrap_servers``, ``redis_url``, ``worker_redis`` / ``worker_redis_url``,
``make_redis`` (a private Redis server a test may stop and restart), ``unique_topic`` (name
factory), ``kafka_admin`` (kafka-python admin client) and ``create_topics`` (creates topics,
deletes them after the test).

Scale-out (issue 10): ``kafka_cluster``, a private 3-node cluster (replication factor 3, min ISR
2) on free ports with its own state folder (tests/integration/cluster.py), started once per
session by the first test that asks for it, and stopped at the end; ``make_group(n, **env)``,
``n`` workers in one consumer group on that cluster (worker_harness.WorkerGroup). Tests that use
them are marked ``slow`` (``make test`` runs them too).
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cluster import KafkaCluster, reap_stale_clusters
from kafka import KafkaAdminClient
from redis_server import RedisServer
from worker_harness import WorkerGroup, worker_factory

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SESSIONS_LOCK = ROOT / ".stack" / "test-sessions.lock"
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
REDIS_SH = ROOT / "deploy" / "redis" / "redis.sh"
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
BROKERS = os.environ.get("BROKERS") or "1"  # `make test` exports it empty: 1
# The worker's ACL user in the tests: the worker's rules on the tests' key prefixes.
TEST_WORKER_USER = "recstream-it"
TEST_KEY_PATTERNS = ("it.*", "it-*")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only the ones under this folder.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def _script(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _ensure_running(script: Path, *start_args: str) -> bool:
    """Start the service unless it runs already; True when this session started it."""
    if _script(script, "status", timeout=30).returncode == 0:
        return False
    result = _script(script, "start", *start_args, timeout=300)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        # The reason first (the scripts' last line), then the log tail they printed.
        pytest.fail(
            f"{script.relative_to(ROOT)} start failed: {lines[-1]}\n" + "\n".join(lines[-25:-1]),
            pytrace=False,
        )
    return True


@pytest.fixture(scope="session", autouse=True)
def stack() -> Iterator[None]:
    """Kafka and Redis up for the whole session; stops only what it started, and only when no
    other session (or ``make test``) uses them."""
    SESSIONS_LOCK.parent.mkdir(exist_ok=True)
    with SESSIONS_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # released when the file closes, also on a crash
        started: list[Path] = []
        try:
            if _ensure_running(KAFKA_SH, "--brokers", BROKERS):
                started.append(KAFKA_SH)
            if _ensure_running(REDIS_SH):
                started.append(REDIS_SH)
            yield
        finally:
            if started and _last_session(lock):
                for script in reversed(started):
                    _script(script, "stop", timeout=120)


def _last_session(lock) -> bool:
    """Upgrade to an exclusive lock: possible only when no other session holds its shared one."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("\nintegration: Kafka/Redis left running: another test session uses them")
        return False
    return True


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """``host:port`` of the first broker (enough to bootstrap, whatever the cluster size)."""
    return f"127.0.0.1:{KAFKA_PORT}"


def redis_sh(*args: str) -> str:
    """``deploy/redis/redis.sh ARGS`` (for REDIS_PORT): its output, or the test fails."""
    result = _script(REDIS_SH, *args, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"redis.sh {' '.join(args)}: {result.stderr.strip()}", pytrace=False)
    return result.stdout.strip()


def read_secret(path: str | Path) -> str:
    return Path(path).read_text().rstrip("\r\n")


@pytest.fixture(scope="session")
def redis_url(stack: None) -> str:
    """The admin's URL: for the tests' own clients (inspection, clean-up), never the worker."""
    password = os.environ.get("REDIS_PASSWORD")
    if not password:
        path = Path(redis_sh("password-file"))
        if not path.is_file():
            pytest.fail(
                f"no {path}: this Redis was started by an older deploy/redis/redis.sh "
                "(no generated passwords): stop it and start it again",
                pytrace=False,
            )
        password = read_secret(path)
    return f"redis://:{password}@127.0.0.1:{REDIS_PORT}/0"


@dataclass(frozen=True)
class RedisUser:
    """An ACL user of the session's Redis, and how the worker is told to log in as it."""

    username: str
    password_file: str
    port: int = REDIS_PORT

    @property
    def url(self) -> str:
        """With the password in it: for a sink built in the test process."""
        password = read_secret(self.password_file)
        return f"redis://{self.username}:{password}@127.0.0.1:{self.port}/0"

    def env(self) -> dict[str, str]:
        """What deploy/run.sh gives the worker: URL, user, password *file*."""
        return {
            "RECSTREAM_REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
            "RECSTREAM_REDIS_USERNAME": self.username,
            "RECSTREAM_REDIS_PASSWORD_FILE": self.password_file,
        }


@pytest.fixture(scope="session")
def worker_redis(stack: None) -> RedisUser:
    """The worker's ACL user for the tests' keys (created, or reset, once per session)."""
    return RedisUser(TEST_WORKER_USER, redis_sh("user", TEST_WORKER_USER, *TEST_KEY_PATTERNS))


@pytest.fixture(scope="session")
def worker_redis_url(worker_redis: RedisUser) -> str:
    return worker_redis.url


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_topic("events")`` -> ``it.<test-name>.events.<uuid>``: no test sees another's data.

    Underscores become dashes: Kafka warns that '.' and '_' collide in metric names.
    """
    test = re.sub(r"[^a-zA-Z0-9-]", "-", request.node.name.removeprefix("test_"))[:60]

    def make(name: str = "t") -> str:
        return f"it.{test}.{name}.{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture(scope="session")
def kafka_admin(bootstrap_servers: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="recstream-tests")
    yield admin
    admin.close()


@pytest.fixture
def create_topics(kafka_admin: KafkaAdminClient) -> Iterator[Callable[..., list[str]]]:
    """``create_topics("a", "b", partitions=2)``: created with the broker's default replication
    factor, returned once every partition has a leader, deleted after the test."""
    created: list[str] = []

    def create(*names: str, partitions: int = 1) -> list[str]:
        spec = {name: {"num_partitions": partitions, "replication_factor": -1} for name in names}
        kafka_admin.create_topics(spec, wait_for_metadata=True)
        created.extend(names)
        return list(names)

    yield create
    if created:
        kafka_admin.delete_topics(created, raise_errors=False)


# A recstream worker subprocess per test (unique prefix, app id, Redis prefix, web port, models
# dir), stopped at the end of the test: tests/integration/worker_harness.py.
@pytest.fixture
def make_worker(
    bootstrap_servers: str,
    redis_url: str,
    worker_redis: RedisUser,
    tmp_path: Path,
    request: Any,
    kafka_admin: Any,
) -> Iterator[Any]:
    make, finish = worker_factory(
        bootstrap_servers,
        redis_url,
        tmp_path,
        request.node.name.removeprefix("test_"),
        kafka_admin,
        worker_redis_env=worker_redis.env(),
    )
    yield make
    finish()


@pytest.fixture(scope="session")
def kafka_cluster(stack: None) -> Iterator[KafkaCluster]:
    """A private 3-node KRaft cluster (RF 3, min ISR 2) next to the shared broker: started when
    the first test asks for it (~15-25 s on 2 cores), stopped and removed at the session's end.
    Tests may stop (``stop_node``), kill (``kill_node``) and restart (``start``) its nodes."""
    for state in reap_stale_clusters():
        print(f"\nintegration: removed the test cluster a dead session left in {state}")
    cluster = KafkaCluster(brokers=3)
    try:
        try:
            seconds = cluster.start()
        except RuntimeError as exc:
            pytest.fail(f"the test cluster did not start: {exc}", pytrace=False)
        print(f"\nintegration: 3-node test cluster up on {cluster.bootstrap} in {seconds:.1f} s")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def make_group(
    kafka_cluster: KafkaCluster,
    redis_url: str,
    worker_redis: RedisUser,
    tmp_path: Path,
    request: Any,
) -> Iterator[Callable[..., WorkerGroup]]:
    """``make_group(n, **env)``: ``n`` workers in one consumer group on ``kafka_cluster`` (same
    topic prefix and app id, own web ports and models dirs), with replication factor 3; not
    started (``group.start()``). Stopped, and their topics and keys deleted, after the test."""
    admin = kafka_cluster.admin()
    make, finish = worker_factory(
        kafka_cluster.bootstrap,
        redis_url,
        tmp_path,
        request.node.name.removeprefix("test_"),
        admin,
        worker_redis_env=worker_redis.env(),
    )

    def group(n: int, **env: str) -> WorkerGroup:
        return WorkerGroup(make, n, **{"RECSTREAM_REPLICATION_FACTOR": "3", **env})

    yield group
    finish()
    admin.close()


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_redis(tls=False, **REDIS_env)``: a private Redis started by deploy/redis/redis.sh
    (tests/integration/redis_server.py), stopped after the test."""
    servers: list[RedisServer] = []

    def make(*, tls: bool = False, **env: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", tls=tls, **env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()
