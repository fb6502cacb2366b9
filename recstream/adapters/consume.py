"""``recstream consume``: tail ``<prefix>.recommendations``, one readable line per message.

    recstream consume --follow                  # new recommendations as they are published
    recstream consume --from-beginning --user u17
    recstream consume --from-beginning --json   # the raw JSON of the public interface

Without ``--follow`` it stops once it has read up to the end offsets it saw at start. It reads
without a consumer group (partitions assigned directly): tailing never moves anyone's offsets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from recstream.cli import positive_int
from recstream.config import Settings

__all__ = ["configure_parser", "format_line", "run"]


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


def format_line(rec: dict[str, Any], show: int = 5) -> str:
    """``12:00:01  u17 → i3 (viewed together with i9), i8 (...), i1 … 10 items · 4.2 ms``."""
    when = time.strftime("%H:%M:%S", time.localtime(rec.get("generated_at") or time.time()))
    parts = []
    for n, it in enumerate(rec.get("items", [])[:show]):
        reason = it.get("reason")
        parts.append(f"{it['item_id']} ({reason})" if reason and n < 3 else str(it["item_id"]))
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
        consumer.assign(tps)
        if args.from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        end = consumer.end_offsets(tps)
        user_key = args.user.encode() if args.user else None
        while True:
            batch = consumer.poll(timeout_ms=500, max_records=500)
            for records in batch.values():
                for r in records:
                    if user_key is not None and r.key != user_key:
                        continue
                    try:
                        rec = json.loads(r.value)
                        line = r.value.decode() if args.json else format_line(rec, args.show)
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
