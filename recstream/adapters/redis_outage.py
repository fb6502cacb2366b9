"""Whether Redis is reachable as the sink sees it, when to try again, and a few lines per outage.

An outage runs from the first failed command to the next one that succeeds. During it the sink
keeps its writes for a retry (:mod:`recstream.adapters.redis_sink`) and tries again after a
back-off that doubles from ``MIN_BACKOFF_S`` up to ``MAX_BACKOFF_S``, so a dead Redis costs one
connection attempt per interval instead of one per event.

It logs three kinds of lines, never one per failed write (a 30 s outage at 1,000 events/s would
otherwise be 30,000 lines): the first failure, then at most one "still unreachable" line per
``LOG_EVERY_S`` with the counts, and one "recovered" line with the outage's length and how many
writes it left to retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LOG_EVERY_S", "MAX_BACKOFF_S", "MIN_BACKOFF_S", "Outage"]

log = logging.getLogger("recstream.adapters.redis_sink")

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
LOG_EVERY_S = 30.0


class Outage:
    """The sink's view of Redis: ``up``, the back-off, and the outage's rate-limited log."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        log_every_s: float = LOG_EVERY_S,
        logger: logging.Logger = log,
    ) -> None:
        self.clock = clock
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.log_every_s = log_every_s
        self.log = logger
        self.up = True  # as of the last command; True until one fails
        self.down_until = 0.0  # clock() before which no command is tried
        self.backoff = 0.0
        self.since: float | None = None  # clock() of the outage's first failure
        self.failures = 0  # failed tries in this outage
        self._dropped_before = 0  # the sink's drop count when the outage began
        self._next_log = 0.0

    def backing_off(self) -> bool:
        return self.clock() < self.down_until

    def failed(self, error: str, *, pending: int, dropped: int) -> None:
        """A command failed: back off, and log if this is the outage's first line or the
        previous one is ``log_every_s`` old."""
        now = self.clock()
        self.backoff = min(self.max_backoff_s, max(self.min_backoff_s, self.backoff * 2))
        self.down_until = now + self.backoff
        self.failures += 1
        if self.up:
            self.up = False
            self.since = now
            self._dropped_before = dropped
            self._next_log = now + self.log_every_s
            self.log.warning(
                "redis: unreachable (%s); keeping the latest writes for a retry in %.1f s",
                error,
                self.backoff,
            )
        elif now >= self._next_log:
            self._next_log = now + self.log_every_s
            self.log.warning(
                "redis: still unreachable after %.0f s: %d failed tries, %d writes kept, "
                "%d dropped; last error: %s",
                now - (self.since or now),
                self.failures,
                pending,
                dropped - self._dropped_before,
                error,
            )

    def succeeded(self, *, retried: int, dropped: int) -> None:
        """A command succeeded; ends the outage (``retried``: the writes it left to write)."""
        self.backoff = 0.0
        self.down_until = 0.0
        if self.up:
            return
        self.up = True
        self.log.info(
            "redis: recovered after %.1f s (%d failed tries); %d writes kept meanwhile are "
            "retried now, %d dropped",
            self.clock() - (self.since or self.clock()),
            self.failures,
            retried,
            dropped - self._dropped_before,
        )
        self.since = None
        self.failures = 0
