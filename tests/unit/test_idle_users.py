"""Idle users leave memory and come back unchanged (recstream.idle_users)."""

from __future__ import annotations

from pathlib import Path

from recstream.events import Event, Item
from recstream.idle_users import IdleUserStore, bring_back, evict_idle
from recstream.online import DedupWindow, id_hash
from recstream.recommender import Recommender
from recstream.user_partitions import PartitionBook


def _learn(rec: Recommender, book: PartitionBook, n: int, user: str, item: str, ts: float):
    rec.learn(Event(f"e{n}", user, item, "purchase", ts))
    book.learned(0, user, id_hash(f"e{n}"), "purchase")


def _setup() -> tuple[Recommender, PartitionBook]:
    rec = Recommender(seed=3)
    for i in "abcdef":
        rec.upsert_item(Item(i))
    book = PartitionBook()
    book.own(0)
    _learn(rec, book, 0, "old", "a", 10.0)
    _learn(rec, book, 1, "old", "b", 11.0)
    _learn(rec, book, 2, "new", "c", 500.0)
    _learn(rec, book, 3, "new", "a", 501.0)
    return rec, book


def test_idle_users_are_parked_and_come_back_exactly(tmp_path: Path) -> None:
    rec, book = _setup()
    store = IdleUserStore(tmp_path / "idle.sqlite")
    before = [r.item_id for r in rec.recommend("old", 4)]
    exported = rec.export_user("old")
    assert evict_idle(rec, book, 0, store, before_ts=100.0) == 0  # changed since the last flush
    book.flushed(0)
    assert evict_idle(rec, book, 0, store, before_ts=100.0) == 1
    assert rec.export_user("old") is None and "old" not in book.ledger(0).users
    assert rec.export_user("new") is not None  # active: stays
    assert store.users(0) == {"old"} and len(store) == 1

    dedup = DedupWindow(100)
    back = bring_back(rec, book, 0, ["old", "new", "nobody"], store, lambda ids: [
        dedup.add_hash(h) for h in ids])  # fmt: skip
    assert back == 1 and len(store) == 0
    assert [r.item_id for r in rec.recommend("old", 4)] == before
    assert rec.export_user("old")["user"] == exported["user"]
    assert "e0" in dedup and "e1" in dedup  # a retried old event is still a duplicate
    assert book.ledger(0).users == {"old", "new"} and not book.dirty(0)


def test_a_partition_that_moves_takes_its_parked_users_with_it(tmp_path: Path) -> None:
    rec, book = _setup()
    book.flushed(0)
    store = IdleUserStore(tmp_path / "idle.sqlite")
    evict_idle(rec, book, 0, store, before_ts=1000.0)
    assert store.users(0) == {"old", "new"}
    assert store.drop_partition(0) == 2 and len(store) == 0


def test_a_new_store_starts_empty(tmp_path: Path) -> None:
    """Kafka holds the truth after a restart: a previous run's parked copies are stale."""
    path = tmp_path / "idle.sqlite"
    first = IdleUserStore(path)
    first.put(1, "u", b"x")
    first.close()
    again = IdleUserStore(path)
    assert len(again) == 0 and again.take(1, "u") is None
