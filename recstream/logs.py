"""Repeated log lines, rate-limited: an outage should write a few lines, not a flood.

When the broker goes away, aiokafka and Faust log the same WARNING or ERROR for every connection
attempt, fetch and send: 100,000 lines in 45 s in one outage, which buries what matters and can
fill a disk. :class:`RateLimitFilter` lets the first record of each kind through, then at most one
per ``interval_s``, and that one says how many like it were dropped. A record's kind is its
logger, level and message template (not its arguments: "Unable to connect to node 1" and "... 2"
are one kind). INFO and DEBUG are never limited; the worker's own one-off lines pass too.

>>> import logging
>>> clock = [0.0]
>>> f = RateLimitFilter(interval_s=10, clock=lambda: clock[0])
>>> def rec(msg, *args):
...     return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, args, None)
>>> [f.filter(rec("Unable connect to node %d", n)) for n in range(3)]
[True, False, False]
>>> clock[0] = 11.0
>>> r = rec("Unable connect to node %d", 9)
>>> f.filter(r), r.getMessage()
(True, 'Unable connect to node 9 [2 more like this in the last 11 s]')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitFilter", "install_rate_limit"]


@dataclass
class _Seen:
    last_emitted: float
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """See the module docstring. ``max_kinds`` bounds the memory of kinds seen."""

    def __init__(
        self,
        interval_s: float = 30.0,
        *,
        min_level: int = logging.WARNING,
        max_kinds: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.min_level = min_level
        self.max_kinds = max_kinds
        self.clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_kinds:
                self._seen.clear()  # a rare reset beats unbounded memory
            self._seen[key] = _Seen(now)
            return True
        if now - seen.last_emitted < self.interval_s:
            seen.suppressed += 1
            return False
        if seen.suppressed:
            record.msg = f"{record.getMessage()} [{seen.suppressed} more like this in the last "
            record.msg += f"{now - seen.last_emitted:.0f} s]"
            record.args = ()  # not None: mode's formatter would make it (None,)
        seen.last_emitted, seen.suppressed = now, 0
        return True


def install_rate_limit(logger: logging.Logger, interval_s: float = 30.0) -> list[RateLimitFilter]:
    """Attach a filter to every handler of ``logger`` (the root: every record of every library
    reaches those handlers, whichever logger it was logged to). One per handler: a shared one
    would let the first record of a kind reach only the first handler."""
    limiters = []
    for handler in logger.handlers:
        limiter = RateLimitFilter(interval_s)
        handler.addFilter(limiter)
        limiters.append(limiter)
    return limiters
