"""HTTP on the Faust web server (``Settings.web_port``, 6066): recommendations, health, metrics,
and event intake. Every route is behind streams/http_guard.py (token, errors without traces)."""

from __future__ import annotations

from typing import Any

from faust import web as faust_web

from recstream.adapters.metrics import CONTENT_TYPE
from recstream.intake import MAX_BODY_BYTES, IntakeError, parse_intake
from streams import runtime
from streams.app import app, settings

MAX_K = 1000


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
