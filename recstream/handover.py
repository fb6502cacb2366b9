"""When a batch's lists go out: each as soon as it is scored, with the event loop given a turn
every slice of scoring (``RECSTREAM_HANDOVER_SLICE_MS``, 2 ms).

A worker learns a whole batch of events and then scores one list per user
(:meth:`recstream.pipeline.StreamProcessor.learn_events`, ``recommend_after``). Handing the
lists to Kafka and Redis only after the last one is scored made every list of a batch wait for
all of them: the first user's list waited for the batch's whole scoring time, and at the
latency benchmark's load (batches of a few to 32 events, ~0.7 ms per list) that wait was most
of an event's latency. Each list is now queued for its outputs as soon as it is scored, and the
loop gets a turn (the Redis writer and the Kafka producer send what is queued) whenever
scoring has held it for a slice: lists reach readers sooner, and the outputs of a fast batch
still go out together. The lists themselves, and the state they reflect, are the same.

In a group (``RECSTREAM_STATE_STORE=kafka``) the same holds since 2026-12-02: the owned
partitions' events are learned first, partition by partition (each partition's item delta taken
after its events), and the lists are scored after all of them. Before, each partition's lists
were scored right after its own events and handed over at the batch's end, so a list reflected
only the batch's earlier partitions; now it reflects the whole batch, as without a group.

>>> slices = TimeSlices(0.5, clock=iter([0.0, 0.2, 0.6, 0.7, 1.2]).__next__)
>>> [slices.due() for _ in range(4)]
[False, True, False, True]
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TimeSlices"]


class TimeSlices:
    """``due()`` is True once ``slice_s`` has passed since the start or the last True.

    The worker's default slice, 2 ms, is about three lists of a 2,000-item catalogue
    (bench/latency.py's): a turn costs microseconds, while a Redis pipeline per list would
    cost a round trip each."""

    def __init__(self, slice_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.slice_s = slice_s
        self._clock = clock
        self._since = clock()

    def due(self) -> bool:
        now = self._clock()
        if now - self._since < self.slice_s:
            return False
        self._since = now
        return True
