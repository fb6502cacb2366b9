"""``recstream consume``: tail ``<prefix>.recommendations``, one readable line per message.

    recstream consume --follow                  # new recommendations as they are published
    recstream consume --from-beginning --user u17
    recstream consume --from-beginning --json   # the raw JSON of the public interface

Without ``--follow`` it stops once it has read up to the end offsets it saw at start. It reads
without a consumer group (partitions assigned directly): tailing never moves anyone's offsets.
Items are shown with a shortened title: the same consumer also reads ``<prefix>.items`` from the
beginning, so it knows the catalogue as the worker does (``--no-titles``: ids only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from recstream.cli import positive_int
from recstream.config import Settings

__all__ = ["configure_parser", "format_line", "run", "shorten"]

TITLE_CHARS = 24  # a line shows five items: room for a recognisable start of each title
MAX_TITLES = 200_000  # titles kept (oldest out): a catalogue topic is not read into memory whole


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", help="only this user's recommendations")
    parser.add_argument("--follow", "-f", action="store_true", help="keep waiting for new ones")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest message (default: now)"
    )
    parser.add_argument("--limit", type=positive_int, help="stop after this many lines")
    parser.add_argument("--json", action="store_true", help="print the raw JSON instead")
    parser.add_argument(
        "--show", type=int, default=5, help="items shown per line (default 5, reasons for 3)"
    )
    parser.add_argument(
        "--no-titles", action="store_true", help="item ids only (do not read the items topic)"
    )


def shorten(text: str, width: int = TITLE_CHARS) -> str:
    """One line of at most ``width`` characters, cut with an ellipsis.

    >>> shorten("Ultralight tent, two person, green", 16)
    'Ultralight tent…'
    """
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1].rstrip(" ,;:-") + "…"


def format_line(rec: dict[str, Any], show: int = 5, titles: Mapping[str, str] | None = None) -> str:
    """``12:00:01  u17 → i3 "Trail shoes" (viewed together with i9), i8 "…", i1 … 10 items``.

    >>> rec = {"user_id": "u1", "generated_at": 0, "latency_ms": 4.2, "trigger_event_id": "e1",
    ...        "items": [{"item_id": "i3", "reason": "popular"}, {"item_id": "i8"}]}
    >>> format_line(rec, titles={"i3": "Trail running shoes, waterproof"}).split("  ", 1)[1]
    'u1 → i3 "Trail running shoes, wa…" (popular), i8  [2 items · 4.2 ms · after e1]'
    """
    when = time.strftime("%H:%M:%S", time.localtime(rec.get("generated_at") or time.time()))
    titles = titles or {}
    parts = []
    for n, it in enumerate(rec.get("items", [])[:show]):
        reason, item_id = it.get("reason"), str(it["item_id"])
        title = titles.get(item_id)
        name = f'{item_id} "{shorten(title)}"' if title else item_id
        parts.append(f"{name} ({reason})" if reason and n < 3 else name)
    items = ", ".join(parts) or "(nothing to recommend)"
    more = " …" if len(rec.get("items", [])) > show else ""
    latency = rec.get("latency_ms")
    lat = f" · {latency:.1f} ms" if isinstance(latency, int | float) else ""
    trigger = rec.get("trigger_event_id") or "-"
    return (
        f"{when}  {rec.get('user_id')} → {items}{more}  "
        f"[{len(rec.get('items', []))} items{lat} · after {trigger}]"
    )


def run(args: argparse.Namespace) -> int:
    from recstream.adapters.kafka import ensure_topics, make_consumer

    settings = Settings.from_env()
    topic = settings.topic("recommendations")
    try:
        # Creating it here (with the configured partitions) lets `consume --follow` start
        # before the worker; the broker's auto-create would pick its own partition count.
        ensure_topics(settings, [topic])
        consumer = make_consumer(settings, consumer_timeout_ms=1000)
    except (ConnectionError, KafkaError) as exc:
        print(f"recstream consume: error: {exc}", file=sys.stderr)
        return 1
    printed = 0
    try:
        deadline = time.monotonic() + 15
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        while not partitions and time.monotonic() < deadline:  # metadata of a new topic
            time.sleep(0.2)
            partitions = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in partitions]
        # The catalogue, from its beginning, on the same consumer: titles for the lines.
        items_topic = settings.topic("items")
        with_titles = not (args.json or args.no_titles)
        item_parts = (consumer.partitions_for_topic(items_topic) or set()) if with_titles else set()
        item_tps = [TopicPartition(items_topic, p) for p in sorted(item_parts)]
        consumer.assign(tps + item_tps)
        if args.from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        if item_tps:
            consumer.seek_to_beginning(*item_tps)
        end = consumer.end_offsets(tps)
        user_key = args.user.encode() if args.user else None
        titles: dict[str, str] = {}
        if item_tps:  # the catalogue so far first, so the first lines have their titles too
            read_catalogue(consumer, item_tps, titles)
        while True:
            batch = consumer.poll(timeout_ms=500, max_records=500)
            for tp, records in batch.items():
                if tp.topic == items_topic:
                    for r in records:
                        remember_title(titles, r.key, r.value)
                    continue
                for r in records:
                    if user_key is not None and r.key != user_key:
                        continue
                    try:
                        rec = json.loads(r.value)
                        line = (
                            r.value.decode() if args.json else format_line(rec, args.show, titles)
                        )
                    except (ValueError, KeyError, TypeError):
                        line = f"(unreadable message at {r.topic}[{r.partition}]@{r.offset})"
                    print(line, flush=True)
                    printed += 1
                    if args.limit and printed >= args.limit:
                        return 0
            if not args.follow and all(consumer.position(tp) >= end[tp] for tp in tps):
                return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `recstream consume | head`
        return 0
    finally:
        consumer.close()


def remember_title(titles: dict[str, str], key: bytes | None, value: bytes | None) -> None:
    """Keep an item's title from its items-topic record (a tombstone or a deletion forgets it);
    anything unreadable is ignored: the worker dead-letters it, this only prints."""
    try:
        item = json.loads(value) if value is not None else None
        item_id = item.get("item_id") if isinstance(item, dict) else None
        item_id = item_id if isinstance(item_id, str) else (key or b"").decode()
    except (ValueError, UnicodeDecodeError):
        return
    title = item.get("title") if isinstance(item, dict) else None
    titles.pop(item_id, None)  # re-inserted last: the newest titles are kept longest
    if isinstance(title, str) and title.strip() and not item.get("deleted"):
        titles[item_id] = title
        if len(titles) > MAX_TITLES:
            titles.pop(next(iter(titles)))


def read_catalogue(consumer: Any, item_tps: list[TopicPartition], titles: dict[str, str]) -> None:
    """Read the items topic up to its current end (10 s at most), the recommendations paused."""
    others = [tp for tp in consumer.assignment() if tp not in item_tps]
    consumer.pause(*others)
    try:
        end = consumer.end_offsets(item_tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end[tp] for tp in item_tps
        ):
            for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                for r in records:
                    remember_title(titles, r.key, r.value)
    finally:
        consumer.resume(*others)
