"""The HTTP server's door: an optional bearer token, and errors answered without tracebacks.

An aiohttp middleware, given to Faust's web server through ``web_application_options`` (see
:mod:`streams.app`), so it guards every route: ours and any Faust adds.

* With a token (``RECSTREAM_WEB_TOKEN`` / ``_FILE``) every request needs
  ``Authorization: Bearer <token>``, compared in constant time; without one the server is open,
  which is why it binds 127.0.0.1 unless told otherwise. Two exceptions, both for the live page:
  the page's own files (``GET /``, ``/static/...``: HTML and JS with no data in them, which a
  browser fetches before it has the token) are served to anyone, and the server-sent-event
  stream also takes the token as ``?token=`` (``EventSource`` cannot send headers), on that
  route only, compared in constant time too.
* A client error (4xx) is answered as JSON and logged as one line, never with a traceback; a
  server error (an exception in a view) is logged as one line with its type and answered with a
  generic 500 that leaks nothing of the worker's internals.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("recstream.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientErrorsWithoutTracebacks(logging.Filter):
    """aiohttp logs a request it cannot parse (a TLS hello on a plain port, a bad header) as an
    ERROR with a traceback, before any middleware sees it: anyone who can connect could fill
    the log. Such client errors become one INFO line; server errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            lines = (exc.message or "").strip().splitlines()
            message = record.getMessage()
            record.msg, record.args = (
                "%s: HTTP %d %s",
                (message, exc.code or 400, lines[0] if lines else ""),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    """Install :class:`ClientErrorsWithoutTracebacks` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorsWithoutTracebacks) for f in server_log.filters):
        server_log.addFilter(ClientErrorsWithoutTracebacks())


# The live page's files: served without the token (they hold no data; see the docstring).
PUBLIC_PATHS = frozenset({"/", "/static/live.js", "/static/live.css"})
# The one route that also takes ``?token=``: EventSource cannot send an Authorization header.
QUERY_TOKEN_PATHS = frozenset({"/stream/recommendations"})


def authorized(request: web.Request, token: str) -> bool:
    """Does ``request`` carry ``token`` (as its route allows)? Constant-time comparisons."""
    if request.method in ("GET", "HEAD") and request.path in PUBLIC_PATHS:
        return True
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    if hmac.compare_digest(given, f"Bearer {token}".encode()):
        return True
    if request.path in QUERY_TOKEN_PATHS:
        query = request.query.get("token", "").encode("utf-8", "replace")
        return hmac.compare_digest(query, token.encode())
    return False


def guard(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware; ``token`` "" = no authentication."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and not authorized(request, token):
            log.info("HTTP 401 %s %s from %s", request.method, request.path, request.remote)
            return web.json_response(
                {"error": "unauthorized: send Authorization: Bearer <token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="recstream"'},
            )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                log.info("HTTP %d %s %s", exc.status, request.method, request.path)
                return web.json_response({"error": exc.reason}, status=exc.status)
            raise  # redirects and the like are responses, not errors
        except Exception as exc:
            log.error(
                "HTTP 500 %s %s: %s: %.200s", request.method, request.path, type(exc).__name__, exc
            )
            return web.json_response({"error": "internal error"}, status=500)

    return middleware
