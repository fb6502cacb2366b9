"""Faust's monitor sensor, without its per-message bookkeeping.

Faust calls its ``Monitor`` four times per message (in, stream in, stream out, out): counters
by topic, stream and task, a deque of event run times, a timestamp on the message. Nothing of
recstream reads them (Faust's statistics views are off, the worker has its own Prometheus
metrics), and on the events path they were a measurable share of Faust's per-message cost
(BENCHMARKS.md, the worker profile). This subclass keeps the one thing Faust itself reads on
that path, the time each partition last delivered an event (``stream_inbound_time``, for the
"stream is not processing" warnings of the aiokafka driver), and the per-commit, per-send and
rebalance statistics, which are rare.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors.monitor import Monitor


class LeanMonitor(Monitor):
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass
