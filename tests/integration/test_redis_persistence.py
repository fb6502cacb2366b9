"""Redis persists: the config redis.sh writes keeps an append-only file fsynced every second, so a
key survives a clean restart and a crash (SIGKILL) a second after it was written. A private server
(its own port and state folder), never the session's shared Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis_server import RedisServer


def test_the_config_is_append_only_fsynced_every_second(
    make_redis: Callable[..., RedisServer],
) -> None:
    admin = make_redis().admin(decode_responses=True)
    try:
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
        assert admin.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert admin.config_get("save") == {"save": ""}  # no RDB snapshots besides the AOF
    finally:
        admin.close()


def test_a_key_survives_a_restart_and_a_crash(make_redis: Callable[..., RedisServer]) -> None:
    server = make_redis()
    admin = server.admin()
    admin.set("it.persist:clean", b"kept", ex=3600)
    admin.close()
    server.stop()
    server.start()

    admin = server.admin()
    assert admin.get("it.persist:clean") == b"kept"
    assert 0 < admin.ttl("it.persist:clean") <= 3600
    admin.set("it.persist:crash", b"fsynced")
    admin.close()
    time.sleep(1.5)  # appendfsync everysec: on disk within a second
    server.kill()
    server.start()

    admin = server.admin()
    try:
        assert admin.get("it.persist:crash") == b"fsynced"
        assert admin.get("it.persist:clean") == b"kept"
    finally:
        admin.close()
    assert (server.state / "appendonlydir").is_dir()
