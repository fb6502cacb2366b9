"""Forgetting a user on request (``recstream forget USER_ID``).

A request is a message on ``<prefix>.forget`` keyed by the user id, ``{"user_id": "u1"}`` (an
optional ``"ts"``), so the worker that owns the user's events applies it. Applying it removes the
user from every per-user state (model, online evaluation, Redis) and records a
:class:`ForgottenUsers` entry: a hash of the id and the request's time, never the id itself.

The entry matters on a replay. After a crash the worker resumes from its last checkpoint and
reads the events topic and the forget topic again; Kafka does not order two topics, so the
user's older events could be re-learned after the request. Events of a forgotten user whose
record time is not after the request are skipped (``forgotten``); the user's later events are
learned as those of a new user.

>>> ledger = ForgottenUsers()
>>> ledger.add("u1", 100.0)
>>> ledger.covers("u1", 99.0), ledger.covers("u1", 101.0), ledger.covers("u2", 1.0)
(True, False, False)
>>> parse_forget(b'{"user_id": "u1"}', default_ts=5.0)
ForgetRequest(user_id='u1', ts=5.0)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recstream.events import InvalidMessage, _ts, check_id, decode_json_object

__all__ = ["ForgetRequest", "ForgottenUsers", "parse_forget"]


@dataclass(frozen=True, slots=True)
class ForgetRequest:
    user_id: str
    # when it was asked for: the body's "ts", else the record's time (the processor never lets
    # it be later than the record's time)
    ts: float

    def to_json(self) -> bytes:
        import json

        return json.dumps({"user_id": self.user_id, "ts": self.ts}).encode()


def parse_forget(raw: bytes | str | dict | None, *, default_ts: float | None) -> ForgetRequest:
    """Validate one forget request (the same id rules as events)."""
    if raw is None:
        raise InvalidMessage("tombstone", "null value (tombstone) on the forget topic")
    obj = decode_json_object(raw)
    user_id = obj.get("user_id")
    if not isinstance(user_id, str):
        raise InvalidMessage("missing_field", "missing required field 'user_id' (a string)")
    return ForgetRequest(check_id(user_id, "user_id"), _ts(obj, default_ts))


def _user_hash(user_id: str) -> int:
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, person=b"recstream-forget")
    return int.from_bytes(digest.digest(), "little")


class ForgottenUsers:
    """Hashes of forgotten user ids and when each was forgotten (see the module docstring).

    One entry per request, kept for good (requests are rare; 16 bytes each): a checkpoint older
    than the request can come back only through a replay, and the replay is what this guards.
    """

    def __init__(self) -> None:
        self._at: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._at)

    def add(self, user_id: str, ts: float) -> None:
        h = _user_hash(user_id)
        self._at[h] = max(ts, self._at.get(h, ts))

    @staticmethod
    def key(user_id: str) -> str:
        """The entry's key for ``user_id`` (a hash, not the id): what travels between workers."""
        return format(_user_hash(user_id), "016x")

    def when(self, user_id: str) -> float | None:
        """When ``user_id`` was forgotten (None: never)."""
        return self._at.get(_user_hash(user_id))

    def add_key(self, key: str, ts: float) -> None:
        """:meth:`add` by :meth:`key` (a forgotten user's entry restored from Kafka)."""
        h = int(key, 16)
        self._at[h] = max(ts, self._at.get(h, ts))

    def covers(self, user_id: str, ts: float | None) -> bool:
        """Is an event of ``user_id`` recorded at ``ts`` from before the user was forgotten?"""
        if not self._at:
            return False
        at = self._at.get(_user_hash(user_id))
        return at is not None and ts is not None and ts <= at
