"""Dead-letter records: what the DLQ topic receives for a message the worker could not apply.

The record is the public interface's (README, "Topics"): the reason and its stable code, the raw
value (UTF-8 text, or base64 when it is not UTF-8) and where the message came from. A dead letter
must always be sendable, whatever the message was: the raw copy and the Kafka key are cut to
bounded sizes and flagged as cut.
"""

from __future__ import annotations

import base64
from typing import Any

from recstream.events import InvalidMessage

__all__ = [
    "MAX_DEAD_LETTER_KEY_BYTES",
    "MAX_DEAD_LETTER_RAW_BYTES",
    "dead_letter",
    "dead_letter_key",
]

# A dead letter must always be sendable: its raw copy and its Kafka key are cut to these sizes
# (flagged ``raw_truncated`` / ``key_truncated``). JSON-escaping can grow the raw copy 6-fold
# (``\u0000``), which keeps the record far below the broker's 1 MB default message size.
MAX_DEAD_LETTER_RAW_BYTES = 64 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 1024


def dead_letter(
    raw: bytes | None,
    error: InvalidMessage,
    *,
    topic: str,
    partition: int,
    offset: int,
    max_raw_bytes: int,
    now: float,
    key: bytes | None = None,
) -> dict[str, Any]:
    """The DLQ record of the public interface; ``raw`` is kept readable when it is UTF-8.

    The raw value is cut at ``max_raw_bytes`` (at most ``MAX_DEAD_LETTER_RAW_BYTES``;
    ``raw_truncated``): an oversized message must not produce a dead-letter record that the
    broker itself rejects as too large. The record is sent under :func:`dead_letter_key`.

    >>> rec = dead_letter(b"x" * 10, InvalidMessage("bad_json", "no"), topic="t", partition=0,
    ...                   offset=5, max_raw_bytes=4, now=1.0, key=b"k" * 5000)
    >>> rec["raw"], rec["raw_truncated"], rec["key_bytes"], rec["key_truncated"]
    ('xxxx', True, 5000, True)
    """
    max_raw_bytes = min(max_raw_bytes, MAX_DEAD_LETTER_RAW_BYTES)
    data = raw if isinstance(raw, bytes | bytearray) else b""
    size = len(data)
    data = bytes(data[:max_raw_bytes])
    try:
        # A cut can split a multi-byte character: the readable part up to it is still UTF-8.
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    key_bytes = len(key) if isinstance(key, bytes | bytearray) else 0
    return {
        "reason": error.reason,
        "code": error.code,
        "raw": text,
        "raw_encoding": encoding,
        "raw_bytes": size,
        "raw_truncated": size > max_raw_bytes,
        "key_bytes": key_bytes,
        "key_truncated": key_bytes > MAX_DEAD_LETTER_KEY_BYTES,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "dead_lettered_at": now,
    }


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a message's dead letter: its own key, cut to a sendable size."""
    if isinstance(key, bytes | bytearray) and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        return bytes(key[:MAX_DEAD_LETTER_KEY_BYTES])
    return key
