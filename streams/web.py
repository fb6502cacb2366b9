"""HTTP on the Faust web server (``Settings.web_port``, 6066): recommendations, health, metrics."""

from __future__ import annotations

from typing import Any

from recstream.adapters.metrics import CONTENT_TYPE
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
