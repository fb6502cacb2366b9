"""The offsets policy (recstream.offsets): a senseless position is reset loudly, never skipped."""

from __future__ import annotations

import pytest

from recstream.offsets import REASONS, decide
from recstream.online import Positions
from recstream.pipeline import KafkaMessage, StreamProcessor
from recstream.recommender import Recommender

TP = ("recstream.events", 3)


@pytest.mark.parametrize(
    ("position", "start", "end", "recreated", "reason", "lost"),
    [
        (500, 0, 120, True, "topic_recreated", 0),  # re-created and already refilled past 500
        (50, 0, 120, True, "topic_recreated", 0),
        (500, 0, 120, False, "beyond_log_end", 0),
        (10, 40, 120, False, "before_log_start", 30),
    ],
)
def test_senseless_positions_resume_at_the_log_start(
    position: int, start: int, end: int, recreated: bool, reason: str, lost: int
) -> None:
    reset = decide(TP, position=position, start=start, end=end, topic_recreated=recreated)
    assert reset is not None and reset.reason == reason and reason in REASONS
    assert reset.resume_at == start and reset.lost == lost and reset.position == position
    text = reset.message()
    assert "recstream.events[3]" in text and str(position) in text and f"{start}..{end}" in text


@pytest.mark.parametrize(
    ("position", "start", "end"), [(None, 0, 9), (0, 0, 0), (9, 0, 9), (5, 5, 9)]
)
def test_usable_positions_are_kept(position: int | None, start: int, end: int) -> None:
    assert decide(TP, position=position, start=start, end=end, topic_recreated=False) is None


def test_a_reset_position_reads_the_new_log_and_dedup_keeps_old_events_out() -> None:
    proc = StreamProcessor(Recommender(allow_unknown_items=True), dedup_window=100)
    body = b'{"event_id": "e%d", "user_id": "u", "item_id": "i", "type": "view"}'
    for n in range(10):
        proc.handle_events([KafkaMessage(body % n, "ev", 0, 100 + n, 1.0)])
    assert proc.positions.next_offset("ev", 0) == 110
    changes = proc.changes
    proc.reset_position("ev", 0, 0)  # the topic was re-created
    assert proc.changes > changes
    replayed = [proc.handle_events([KafkaMessage(body % n, "ev", 0, n, 1.0)])[0] for n in range(12)]
    # The same events produced again are duplicates; the new ones are learned.
    assert [o.status for o in replayed] == ["duplicate"] * 10 + ["ok"] * 2
    assert proc.events_processed == 12


def test_positions_reset_round_trips() -> None:
    positions = Positions({("t", 0): 50})
    positions.reset("t", 0, 7)
    assert positions.next_offset("t", 0) == 7 and not positions.accept("t", 0, 6)
    assert Positions.from_json(positions.to_json()).next_offset("t", 0) == 7


def test_a_jump_back_to_offset_0_is_a_new_log_read_from_its_start() -> None:
    proc = StreamProcessor(Recommender(allow_unknown_items=True), dedup_window=100)
    body = b'{"event_id": "%s", "user_id": "u", "item_id": "i", "type": "view"}'
    for n in range(5):
        proc.handle_events([KafkaMessage(body % f"old{n}".encode(), "ev", 0, n, 1.0)])
    # A redelivery below the position is skipped as before...
    assert proc.handle_events([KafkaMessage(body % b"old3", "ev", 0, 3, 1.0)])[0].status == (
        "replayed"
    )
    assert proc.rewinds == []
    # ... but offset 0 again is a new log (a re-created topic): read, not skipped.
    new = [proc.handle_events([KafkaMessage(body % f"new{n}".encode(), "ev", 0, n, 1.0)])[0]
           for n in range(3)]  # fmt: skip
    assert [o.status for o in new] == ["ok"] * 3 and proc.events_processed == 8
    assert proc.rewinds == [("ev", 0, 5)] and proc.positions.next_offset("ev", 0) == 3
