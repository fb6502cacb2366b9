"""HTTP on the Faust web server (``Settings.web_port``, 6066): recommendations, health, metrics,
event intake, and the live page (``GET /``, streams/static/) with its JSON and server-sent
events. Every route is behind streams/http_guard.py (token, errors without traces)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web as aiohttp_web
from faust import web as faust_web

from recstream.adapters.metrics import CONTENT_TYPE
from recstream.events import InvalidMessage, check_id
from recstream.intake import MAX_BODY_BYTES, IntakeError, parse_intake
from streams import runtime
from streams.app import app, settings
from streams.live import TooManySubscribers, sse

MAX_K = 1000
MAX_TOP_USERS = 100
STATIC = Path(__file__).resolve().parent / "static"
# The page's files, by the name in its URL: a fixed list, so no path ever reaches the disk.
PAGE_FILES = {"live.js": "text/javascript", "live.css": "text/css"}
# Nothing but this worker: no CDN, no inline script, no frame (the page needs none of them).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEARTBEAT_S = 15.0  # a comment line this often: a closed browser is noticed at the next write
WRITE_TIMEOUT_S = 30.0  # a stream whose client stopped reading is ended, not kept forever


@app.page("/recommendations/{user_id}")
async def recommendations(web: Any, request: Any, user_id: str) -> Any:
    """``GET /recommendations/{user_id}?k=10``: a fresh top-K from the in-memory model."""
    raw_k = request.query.get("k", str(settings.k))
    try:
        k = int(raw_k)
        if not 1 <= k <= MAX_K:
            raise ValueError
    except ValueError:
        return web.json({"error": f"k must be an integer in 1..{MAX_K}, got {raw_k!r}"}, status=400)
    return web.json(runtime.current().recommend(user_id, k))


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    """200 once partitions are assigned and the state is resumed; 503 before."""
    health = runtime.current().health()
    return web.json(health, status=200 if health["ready"] else 503)


@app.page("/metrics")
async def metrics(web: Any, request: Any) -> Any:
    """Prometheus text format (the scrape target of deploy/prometheus)."""
    body = runtime.current().metrics.exposition()
    # As a header: aiohttp refuses a content_type argument that carries a charset.
    return web.bytes(body, headers={"Content-Type": CONTENT_TYPE})


@app.page("/events")
class Events(faust_web.View):
    """``POST /events``: one event or a JSON array, validated as on the Kafka path
    (:mod:`recstream.intake`), produced to ``<prefix>.events`` keyed by ``user_id``. 202 once
    Kafka has them all; 400 with the reason codes of the DLQ; 413 beyond 1 MiB."""

    async def post(self, request: Any) -> Any:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return self.json({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
        body = await request.content.read(MAX_BODY_BYTES + 1)
        try:
            batch = parse_intake(body, max_event_bytes=settings.max_event_bytes)
        except IntakeError as exc:
            return self.json(
                {"error": str(exc), "code": exc.code, "errors": exc.errors}, status=400
            )
        sent = await runtime.current().intake(batch)
        if sent < len(batch):
            return self.json({"error": "Kafka refused some events", "accepted": sent}, status=503)
        return self.json({"accepted": sent}, status=202)


def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()  # read per request: tiny, and edits show on reload


@app.page("/")
async def live_page(web: Any, request: Any) -> Any:
    """The live page: plain HTML and JS from streams/static/, no build step, nothing external."""
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
    return web.html(_static("index.html").decode(), headers=headers)


@app.page("/static/{name}")
async def page_file(web: Any, request: Any, name: str) -> Any:
    if name not in PAGE_FILES:
        return web.json({"error": "not found"}, status=404)
    return web.bytes(
        _static(name),
        headers={"Content-Type": PAGE_FILES[name], "Cache-Control": "no-store"},
    )


@app.page("/users/top")
async def top_users(web: Any, request: Any) -> Any:
    """``GET /users/top?n=20``: the users with the most learned events, for the page's picker."""
    raw_n = request.query.get("n", "20")
    try:
        n = int(raw_n)
        if not 1 <= n <= MAX_TOP_USERS:
            raise ValueError
    except ValueError:
        return web.json({"error": f"n must be in 1..{MAX_TOP_USERS}, got {raw_n!r}"}, status=400)
    return web.json({"users": runtime.current().top_users(n)})


@app.page("/stats")
async def stats(web: Any, request: Any) -> Any:
    """The page's strip: counters and latency percentiles, read without side effects."""
    return web.json(runtime.current().live_stats())


@app.page("/stream/recommendations")
async def stream_recommendations(web: Any, request: Any) -> Any:
    """``GET /stream/recommendations?user=ID&k=10``: server-sent events, the user's current
    list first, then every list the worker publishes for them, with titles and categories.

    The batch task only puts into this stream's bounded queue (streams/live.py); this
    coroutine alone waits on the socket, so a slow browser delays nobody else."""
    try:
        user = check_id(request.query.get("user", ""), "user")
        k = int(request.query.get("k", str(settings.k)))
        if not 1 <= k <= MAX_K:
            raise ValueError
    except (InvalidMessage, ValueError) as exc:
        return web.json({"error": f"need ?user=ID and k in 1..{MAX_K}: {exc}"}, status=400)
    rt = runtime.current()
    try:
        queue = rt.subscribers.subscribe(user)
    except TooManySubscribers as exc:
        return web.json({"error": str(exc)}, status=503)
    response = aiohttp_web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    try:
        await response.prepare(request)
        first = rt.recommend(user, k)
        await response.write(sse(rt.catalogue.enrich(first), "current"))
        while True:
            try:
                body = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await asyncio.wait_for(response.write(b": keep-alive\n\n"), WRITE_TIMEOUT_S)
                continue
            rec = json.loads(body)
            rec["items"] = rec.get("items", [])[:k]
            payload = sse(rt.catalogue.enrich(rec), "published")
            await asyncio.wait_for(response.write(payload), WRITE_TIMEOUT_S)
    except (ConnectionResetError, TimeoutError):
        pass  # the browser went away or stopped reading: the stream ends, its slot frees
    finally:  # however it ends, cancelled included
        rt.subscribers.unsubscribe(user, queue)
    return response  # aiohttp finishes it
