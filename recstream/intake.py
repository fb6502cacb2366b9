"""HTTP event intake (``POST /events``): the Kafka path's validation, for shops without a client.

A body is one event object or a JSON array of them. Every event is checked with
:func:`recstream.events.parse_event`, the same rules (and the same reason codes) the worker
applies to ``recstream.events``; a request is all-or-nothing, so a client that gets a 400 can fix
and resend the whole body without sending anything twice. What goes to Kafka is each event as
the client wrote it (re-encoded compactly), keyed by its ``user_id`` like any producer's.

>>> batch = parse_intake(b'[{"user_id": "u1", "item_id": "i9", "type": "click"}]')
>>> batch[0]
(b'u1', b'{"user_id":"u1","item_id":"i9","type":"click"}')
>>> parse_intake(b'{"user_id": "u1", "type": "click"}')
Traceback (most recent call last):
...
recstream.intake.IntakeError: event 0: missing_field: missing required field 'item_id'
"""

from __future__ import annotations

import json

from recstream.events import DEFAULT_MAX_BYTES, InvalidMessage, decode_json_value, parse_event

__all__ = ["MAX_BODY_BYTES", "MAX_EVENTS", "IntakeError", "parse_intake"]

MAX_BODY_BYTES = 1024 * 1024  # a request body; each event is also held to max_event_bytes
MAX_EVENTS = 1000  # events in one request


class IntakeError(ValueError):
    """A refused request: ``errors`` lists ``{"index", "code", "reason"}`` (index None for the
    body as a whole); ``code`` is the first one's, as in the dead-letter topic."""

    def __init__(self, errors: list[dict]) -> None:
        first = errors[0]
        where = "body" if first["index"] is None else f"event {first['index']}"
        super().__init__(f"{where}: {first['code']}: {first['reason']}")
        self.errors = errors
        self.code = first["code"]


def parse_intake(
    body: bytes, *, max_body_bytes: int = MAX_BODY_BYTES, max_event_bytes: int = DEFAULT_MAX_BYTES
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` per event, in order, or :class:`IntakeError` with every problem."""
    try:
        value = decode_json_value(body, max_body_bytes)
    except InvalidMessage as exc:
        raise IntakeError([{"index": None, "code": exc.code, "reason": exc.reason}]) from None
    events = value if isinstance(value, list) else [value]
    if not events:
        raise IntakeError([{"index": None, "code": "bad_json", "reason": "no events"}])
    if len(events) > MAX_EVENTS:
        reason = f"{len(events)} events in one request, at most {MAX_EVENTS}"
        raise IntakeError([{"index": None, "code": "oversized", "reason": reason}])
    out: list[tuple[bytes, bytes]] = []
    errors: list[dict] = []
    for index, obj in enumerate(events):
        try:
            raw = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()
            # The broker time stands in for a missing "ts", as on the Kafka path.
            event = parse_event(raw, default_ts=0.0, max_bytes=max_event_bytes)
        except InvalidMessage as exc:
            errors.append({"index": index, "code": exc.code, "reason": exc.reason})
            continue
        except (ValueError, RecursionError) as exc:  # json.dumps of a hostile value
            errors.append({"index": index, "code": "bad_json", "reason": f"{exc!s:.120}"})
            continue
        out.append((event.user_id.encode(), raw))
    if errors:
        raise IntakeError(errors)
    return out
