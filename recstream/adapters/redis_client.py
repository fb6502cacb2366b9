"""The worker's Redis connection: URL, ACL credentials and TLS from :class:`Settings`.

``RECSTREAM_REDIS_URL`` names the server; the credentials come from it *or* from
``RECSTREAM_REDIS_USERNAME`` / ``RECSTREAM_REDIS_PASSWORD`` / ``RECSTREAM_REDIS_PASSWORD_FILE``,
never both (two sources of one secret is how a rotated password ends up half-applied); TLS is on
for a ``rediss://`` URL or when ``RECSTREAM_REDIS_TLS_CA`` is set, with redis-py's ``ssl_*``
options. :func:`client_options` is the mapping (unit-tested), :func:`make_client` uses it.

>>> from recstream.config import Settings
>>> url, opts = client_options(Settings(redis_username="w", redis_password="pw"))
>>> url, opts["username"], opts["password"]
('redis://127.0.0.1:6379/0', 'w', 'pw')
>>> client_options(Settings(redis_tls_ca="/ca.pem"))[0]
'rediss://127.0.0.1:6379/0'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from recstream.config import Settings, read_secret

__all__ = ["TLS_VERIFY_MODES", "client_options", "make_client", "redis_password"]

# RECSTREAM_REDIS_TLS_VERIFY -> redis-py's ssl_cert_reqs (the names of ssl.CERT_*).
TLS_VERIFY_MODES = ("required", "optional", "none")

# Short timeouts: a stalled Redis must not hold the event loop for long.
SOCKET_TIMEOUT_S = 2.0


def redis_password(settings: Settings) -> str:
    """``redis_password``, or the content of ``redis_password_file`` without its trailing
    newline, read at each call (a client built after a rotation gets the new one)."""
    if settings.redis_password and settings.redis_password_file:
        raise ValueError(
            "RECSTREAM_REDIS_PASSWORD and RECSTREAM_REDIS_PASSWORD_FILE are both set: give one"
        )
    return read_secret(settings.redis_password, settings.redis_password_file, "REDIS_PASSWORD_FILE")


def client_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """``(url, options)`` for ``redis.Redis.from_url(url, **options)`` (sync or asyncio).

    The URL is ``RECSTREAM_REDIS_URL``, switched to ``rediss://`` when a TLS setting is given
    (redis-py picks its TLS connection class from the scheme); the options carry what the URL
    does not. redis-py lets the URL win over keyword options, so a conflict is refused here
    rather than resolved silently.
    """
    url = urlsplit(settings.redis_url)
    opts: dict[str, Any] = {}
    password = redis_password(settings)
    if password:
        if url.password:
            raise ValueError(
                "RECSTREAM_REDIS_URL has a password and RECSTREAM_REDIS_PASSWORD(_FILE) is set: "
                "give it once"
            )
        opts["password"] = password
    if settings.redis_username:
        if url.username and url.username != settings.redis_username:
            raise ValueError(
                f"RECSTREAM_REDIS_URL names user {url.username!r} and RECSTREAM_REDIS_USERNAME "
                f"{settings.redis_username!r}: give it once"
            )
        opts["username"] = settings.redis_username

    tls_files = (settings.redis_tls_ca, settings.redis_tls_cert, settings.redis_tls_key)
    if url.scheme == "rediss" or any(tls_files):
        if url.scheme not in ("redis", "rediss"):
            raise ValueError(f"RECSTREAM_REDIS_TLS_*: TLS needs a redis:// URL, not {url.scheme}")
        verify = settings.redis_tls_verify
        if verify not in TLS_VERIFY_MODES:
            raise ValueError(
                f"RECSTREAM_REDIS_TLS_VERIFY: expected one of {', '.join(TLS_VERIFY_MODES)}, "
                f"got {verify!r}"
            )
        if settings.redis_tls_key and not settings.redis_tls_cert:
            raise ValueError("RECSTREAM_REDIS_TLS_KEY needs RECSTREAM_REDIS_TLS_CERT")
        url = url._replace(scheme="rediss")
        opts["ssl_cert_reqs"] = verify
        # The certificate must name the host dialled, unless nothing is checked at all.
        opts["ssl_check_hostname"] = verify == "required"
        if settings.redis_tls_ca:
            opts["ssl_ca_certs"] = settings.redis_tls_ca
        if settings.redis_tls_cert:
            opts["ssl_certfile"] = settings.redis_tls_cert
        if settings.redis_tls_key:
            opts["ssl_keyfile"] = settings.redis_tls_key
    return urlunsplit(url), opts


def make_client(settings: Settings, **extra: Any) -> aioredis.Redis:
    """The worker's asyncio client (``extra``: more redis-py options, e.g. timeouts)."""
    url, opts = client_options(settings)
    timeouts = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S}
    return aioredis.Redis.from_url(url, **{**timeouts, **opts, **extra})
