"""RECSTREAM_REDIS_* credentials and TLS settings mapped to redis-py's options (no server: the
real ACL user and TLS port are in tests/integration/test_redis_security.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.connection import Connection, SSLConnection

from recstream.adapters.redis_client import client_options, make_client, redis_password
from recstream.config import Settings


def test_no_credentials_by_default() -> None:
    assert client_options(Settings()) == ("redis://127.0.0.1:6379/0", {})


def test_user_and_password_from_the_settings_or_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "worker.password"
    secret.write_text("s3cret\n")
    env = {
        "RECSTREAM_REDIS_USERNAME": "recstream-worker",
        "RECSTREAM_REDIS_PASSWORD_FILE": str(secret),
    }
    url, opts = client_options(Settings.from_env(env))
    assert url == "redis://127.0.0.1:6379/0"
    assert opts == {"username": "recstream-worker", "password": "s3cret"}
    url, opts = client_options(Settings(redis_password="pw"))
    assert opts == {"password": "pw"}
    # Credentials in the URL alone are redis-py's to read.
    assert client_options(Settings(redis_url="redis://u:p@h:1/2")) == ("redis://u:p@h:1/2", {})
    # The same user in both places is no conflict.
    assert client_options(Settings(redis_url="redis://u@h/0", redis_username="u"))[1] == {
        "username": "u"
    }


def test_the_password_never_shows_in_repr() -> None:
    assert "hunter2" not in repr(Settings(redis_password="hunter2"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(redis_url="redis://:a@h/0", redis_password="b"), "give it once"),
        (Settings(redis_url="redis://x@h/0", redis_username="y"), "names user 'x'"),
        (Settings(redis_password="a", redis_password_file="/f"), "both set"),
        (Settings(redis_password_file="/nonexistent/pw"), "cannot read /nonexistent/pw"),
        (Settings(redis_tls_ca="/ca", redis_tls_verify="maybe"), "expected one of required"),
        (Settings(redis_tls_key="/k"), "needs RECSTREAM_REDIS_TLS_CERT"),
        (Settings(redis_url="unix:///tmp/r.sock", redis_tls_ca="/ca"), "TLS needs a redis://"),
    ],
)
def test_conflicting_or_broken_settings_are_refused(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client_options(settings)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        redis_password(Settings(redis_password_file=str(tmp_path / "pw")))


def test_tls_options_map_to_redis_py_ssl_options() -> None:
    url, opts = client_options(
        Settings(
            redis_url="redis://127.0.0.1:6380/0",
            redis_tls_ca="/tls/ca.crt",
            redis_tls_cert="/tls/client.crt",
            redis_tls_key="/tls/client.key",
        )
    )
    assert url == "rediss://127.0.0.1:6380/0"
    assert opts == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/tls/ca.crt",
        "ssl_certfile": "/tls/client.crt",
        "ssl_keyfile": "/tls/client.key",
    }
    # rediss:// alone: TLS against the system's CAs; "none" checks nothing (tests only).
    url, opts = client_options(Settings(redis_url="rediss://h/0", redis_tls_verify="none"))
    assert url == "rediss://h/0"
    assert opts == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}


def test_make_client_builds_the_tls_connection_with_credentials() -> None:
    client = make_client(
        Settings(redis_username="w", redis_password="pw", redis_tls_ca="/tls/ca.crt")
    )
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("w", "pw")
    assert kwargs["ssl_ca_certs"] == "/tls/ca.crt" and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 2.0
    plain = make_client(Settings(), socket_timeout=5.0)
    assert plain.connection_pool.connection_class is Connection
    assert plain.connection_pool.connection_kwargs["socket_timeout"] == 5.0
