"""Redis security as deploy/redis/redis.sh sets it up: an admin with a generated password, a
worker ACL user that may run only the worker's commands on its own keys, secrets in 0600 files,
and an optional TLS port. Dangerous commands are only ever *run* against a private server; the
session's shared Redis is only asked (ACL DRYRUN). The worker end to end as an ACL user:
test_worker_stream.py and test_worker_redis.py (tests/integration/conftest.py: worker_redis)."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable

import pytest
import redis
from conftest import TEST_KEY_PATTERNS, RedisUser
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry
from redis_server import WORKER_USER, RedisServer

from recstream.adapters.redis_sink import RedisSink

# What the worker user must never run (each would be a disaster, or a key listing, in production).
FORBIDDEN = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "appendonly", "no"),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"),
    ("ACL", "LIST"),
    ("EVAL", "return 1", "0"),
]


def test_the_worker_user_runs_only_the_worker_commands_on_its_keys(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis()
    worker, admin = server.client(WORKER_USER), server.admin()
    try:
        # Everything the sink does, on recstream:* keys.
        assert worker.ping()
        assert worker.set("recstream:recs:u1", b"{}", ex=60)
        assert worker.get("recstream:recs:u1") == b"{}"
        assert worker.hset("recstream:item:i1", mapping={"vec": b"\0" * 8, "dim": 2}) == 2
        assert worker.hgetall("recstream:item:i1")[b"dim"] == b"2"
        assert worker.expire("recstream:item:i1", 60)
        assert worker.delete("recstream:item:i1") == 1
        for command in FORBIDDEN:
            # (DEBUG is also disabled for everyone: the ACL's verdict is asked separately.)
            with pytest.raises(ResponseError):
                worker.execute_command(*command)
            assert admin.acl_dryrun(WORKER_USER, *command) != b"OK", command
        # Keys outside recstream:* are refused, for reads and writes alike.
        admin.set("other:secret", b"x")
        outside = (("SET", "other:key", "1"), ("GET", "other:secret"), ("DEL", "other:secret"))
        for command in outside:
            with pytest.raises(NoPermissionError, match="keys"):
                worker.execute_command(*command)
        assert admin.get("other:secret") == b"x" and admin.exists("recstream:recs:u1")
        assert admin.ping()  # the SHUTDOWN above was refused
    finally:
        worker.close()
        admin.close()


def test_wrong_or_missing_credentials_are_refused_and_secrets_stay_in_0600_files(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis()
    once = {"retry": Retry(NoBackoff(), 0)}  # redis-py retries a refused login for seconds
    for client in (
        redis.Redis(port=server.port, **once),  # no password at all
        server.client(WORKER_USER, password="recstream", **once),  # the old published default
        server.client("default", password=server.password(WORKER_USER), **once),
    ):
        with pytest.raises(AuthenticationError):
            client.ping()
        client.close()
    admin_pw, worker_pw = server.password(), server.password(WORKER_USER)
    assert len(admin_pw) == len(worker_pw) == 48 and admin_pw != worker_pw  # random, hex
    for name in ("admin.password", f"{WORKER_USER}.password", "redis.conf"):
        mode = stat.S_IMODE((server.state / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    config = (server.state / "redis.conf").read_text()
    assert admin_pw not in config and worker_pw not in config  # SHA-256 hashes only


def test_passwords_given_in_the_environment_are_used(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis(REDIS_PASSWORD="admin-from-env", REDIS_WORKER_PASSWORD="worker-from-env")
    assert server.password() == "admin-from-env"
    for client in (server.admin(), server.client(WORKER_USER, password="worker-from-env")):
        assert client.ping()
        client.close()


def test_the_sink_writes_over_tls_as_the_worker_user(
    make_redis: Callable[..., RedisServer],
) -> None:
    server = make_redis(tls=True)
    tls_url = f"redis://127.0.0.1:{server.tls_port}/0"
    ca = str(server.state / "tls" / "ca.crt")

    async def write(url: str, **changes: str) -> RedisSink:
        sink = RedisSink(server.worker_settings(redis_url=url, **changes))
        writer = asyncio.create_task(sink.run_writer())
        await sink.put_recommendation("u-tls", b'{"tls": true}', None)
        await asyncio.wait_for(sink.flush(), 10)
        writer.cancel()
        await sink.close()
        return sink

    sink = asyncio.run(write(tls_url, redis_tls_ca=ca))
    assert sink.errors == 0 and sink.writes == 1
    admin = server.admin()
    assert admin.get("recstream:recs:u-tls") == b'{"tls": true}'
    admin.close()
    # Without the CA the server's certificate is not trusted: nothing is sent.
    untrusted = asyncio.run(write(tls_url.replace("redis:", "rediss:")))
    assert untrusted.writes == 0 and "CERTIFICATE_VERIFY_FAILED" in (untrusted.last_error or "")


def test_the_session_redis_has_the_worker_users(redis_url: str, worker_redis: RedisUser) -> None:
    """The shared server, started by redis.sh: asked, never made to run anything dangerous."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for user, key in ((WORKER_USER, "recstream:recs:u1"), (worker_redis.username, "it.x:1")):
            assert admin.acl_dryrun(user, "SET", key, "1") == "OK", user
            assert admin.acl_dryrun(user, "GET", "elsewhere:1") != "OK", user
            for command in FORBIDDEN:
                assert admin.acl_dryrun(user, *command) != "OK", (user, command)
        keys = admin.acl_getuser(worker_redis.username)["keys"]
        assert keys == [f"~{p}" for p in TEST_KEY_PATTERNS]
    finally:
        admin.close()
