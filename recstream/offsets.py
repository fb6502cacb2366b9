"""What to do when the state's offsets make no sense for the log they point into.

The state's positions (:class:`recstream.online.Positions`) say where each input partition's
next message is. Two things can make that position meaningless, and Kafka's consumer would hide
both: it resets an out-of-range position to the log's start, after which every message below the
old position is skipped as "already reflected", silently.

* **The topic was re-created** (deleted and created again, e.g. by ``make clean`` or an operator):
  its Kafka topic id changed, and the positions are offsets into a log that no longer exists. It
  may already hold more messages than the old position, so the offsets alone cannot tell.
* **The position is beyond the log's end** (a topic re-created and not yet refilled, or a log
  truncated by an unclean leader election): the same, seen from the offsets.
* **The position is before the log's start**: retention deleted messages the state never read.
  They are gone; nothing can bring them back.

The policy, for each case: read the partition **from the log's start**, keep everything the model
learned (it is still true), and say so loudly: a WARNING naming the partition, the old position
and the log's range, and ``recstream_offset_resets_total{reason}``; for retention, the number of
messages lost as well. Re-reading a re-created topic that holds the same events again learns
nothing twice: their ids are in the dedup window.

>>> d = decide(("events", 0), position=900, start=0, end=40, topic_recreated=False)
>>> d.reason, d.resume_at
('beyond_log_end', 0)
>>> decide(("events", 0), position=10, start=25, end=40, topic_recreated=False).lost
15
>>> decide(("events", 0), position=30, start=25, end=40, topic_recreated=False) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Reason = Literal["topic_recreated", "beyond_log_end", "before_log_start"]
REASONS: tuple[Reason, ...] = ("topic_recreated", "beyond_log_end", "before_log_start")


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """A partition whose position is replaced by ``resume_at``, and why."""

    partition: tuple[str, int]
    reason: Reason
    position: int
    resume_at: int
    start: int
    end: int
    lost: int = 0  # messages deleted by retention before the state read them

    def message(self) -> str:
        topic, partition = self.partition
        where = f"{topic}[{partition}]: the state's position {self.position}"
        log_range = f"the log holds offsets {self.start}..{self.end}"
        if self.reason == "topic_recreated":
            why = f"points into a deleted topic (the topic was re-created; {log_range})"
        elif self.reason == "beyond_log_end":
            why = f"is beyond the log's end ({log_range}: re-created or truncated?)"
        else:
            why = f"is before the log's start ({log_range}): {self.lost} messages were deleted "
            why += "by retention before they were read and are lost"
        return f"{where} {why}; reading from offset {self.resume_at}"


def decide(
    partition: tuple[str, int],
    *,
    position: int | None,
    start: int,
    end: int,
    topic_recreated: bool,
) -> OffsetReset | None:
    """The reset for one partition, or None when its position is usable (or it has none: a
    partition never read starts from the log's start anyway)."""
    if position is None:
        return None
    if topic_recreated:
        return OffsetReset(partition, "topic_recreated", position, start, start, end)
    if position > end:
        return OffsetReset(partition, "beyond_log_end", position, start, start, end)
    if position < start:
        return OffsetReset(
            partition, "before_log_start", position, start, start, end, lost=start - position
        )
    return None
