"""Redis as the worker uses it: password-protected, keys with a TTL."""

from __future__ import annotations

import uuid

import pytest
import redis


def test_redis_round_trip_with_password(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"recstream:test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, b'{"items": []}', ex=60)
        assert client.get(key) == b'{"items": []}'
        assert 0 < client.ttl(key) <= 60
    finally:
        client.delete(key)
        client.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_redis_refuses_wrong_or_missing_password(redis_url: str, password: str | None) -> None:
    host_part = redis_url.split("@", 1)[1]
    url = f"redis://:{password}@{host_part}" if password else f"redis://{host_part}"
    client = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()
    client.close()
