"""The worker/produce/consume commands' argument handling (no broker needed: every case fails
before connecting) and the consume line format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recstream.adapters.consume import format_line

ROOT = Path(__file__).resolve().parents[2]


def recstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstream.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["produce"], "exactly one"),
        (["produce", "x", "--synthetic"], "exactly one"),
        (["produce", "--synthetic", "--rate", "-5"], "positive"),
        (["produce", "--synthetic", "--limit", "0"], "positive"),
        (["produce", "/nonexistent-folder"], "missing"),
        (["worker", "--web-port", "http"], "expected a positive integer"),
        (["worker", "--web-port", "70000"], "1..65535"),
        (["worker", "--loglevel", "loud"], "invalid choice"),
        (["consume", "--limit", "many"], "expected a positive integer"),
    ],
)
def test_bad_arguments_get_one_line_and_status_2(args: list[str], message: str) -> None:
    result = recstream(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_consume_line_is_readable() -> None:
    rec = {
        "user_id": "u7",
        "items": [
            {"item_id": f"i{n}", "score": 1.0 - n / 10, "reason": f"reason {n}"} for n in range(7)
        ],
        "trigger_event_id": "e-1",
        "model_version": "v",
        "generated_at": 0.0,
        "latency_ms": 4.25,
    }
    line = format_line(rec, show=5)
    assert "\n" not in line
    assert "u7 → i0 (reason 0), i1 (reason 1), i2 (reason 2), i3, i4 …" in line
    assert "[7 items · 4.2 ms · after e-1]" in line
    empty = format_line({"user_id": "u1", "items": []})
    assert "(nothing to recommend)" in empty


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "RECSTREAM_KAFKA_USERNAME"),
        ({"RECSTREAM_WEB_TOKEN_FILE": "/nonexistent/token"}, "RECSTREAM_WEB_TOKEN_FILE"),
        ({"RECSTREAM_ALLOW_UNKNOWN_ITEMS": "perhaps"}, "RECSTREAM_ALLOW_UNKNOWN_ITEMS"),
        (["forget"], "USER_ID"),
        (["forget", "bad\tid"], "unprintable"),
    ],
)
def test_settings_that_cannot_work_get_one_line(env: dict | list, message: str) -> None:
    import os

    if isinstance(env, list):  # a command line, not settings
        result = recstream(*env)
    else:
        result = subprocess.run(
            [sys.executable, "-m", "recstream.cli", "worker"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, **env},
        )  # fmt: skip
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
