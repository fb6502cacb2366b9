"""The worker's HTTP server as an outsider meets it: loopback only, a bearer token when one is set,
none of Faust's debugging views, and client errors answered without a traceback in the log."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from worker_harness import Worker, wait_for

TOKEN = "s3cret-token-for-tests"


def request(w: Worker, path: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_loopback_only_token_required_no_debug_views_no_tracebacks(
    make_worker: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "web.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    w: Worker = make_worker(RECSTREAM_WEB_TOKEN_FILE=str(token_file)).start()

    # The harness polls /healthz without a token: poll with one here.
    def ready() -> bool:
        assert w.proc is not None and w.proc.poll() is None, w.log_tail()
        try:
            return request(w, "/healthz", TOKEN)[1].get("ready") is True
        except OSError:  # not listening yet
            return False

    wait_for(ready, 120, "the worker to be ready")

    # Bound to 127.0.0.1 only (0100007F in /proc/net/tcp), never 0.0.0.0.
    assert listening_addresses(w.port) == {"0100007F"}

    status, body = request(w, "/healthz")
    assert status == 401 and "Bearer" in body["error"]
    assert request(w, "/healthz", "wrong-token")[0] == 401
    assert request(w, "/metrics")[0] == 401
    status, body = request(w, "/recommendations/u1?k=3", TOKEN)
    assert status == 200 and body["user_id"] == "u1"
    assert request(w, "/recommendations/u1?k=zero", TOKEN)[0] == 400
    for debug_view in ("/router/", "/table/", "/graph/", "/stats/", "/performance/"):
        assert request(w, debug_view, TOKEN)[0] == 404, debug_view

    # Client errors: a malformed request line, a bad header, a path that is not UTF-8.
    for junk in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello to a plain port\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /recommendations/%ff%fe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
            s.sendall(junk)
            s.recv(4096)
    assert request(w, "/healthz", TOKEN)[0] == 200  # still serving
    log = w.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert TOKEN not in log
