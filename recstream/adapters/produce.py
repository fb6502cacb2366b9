"""``recstream produce``: send a catalogue, then an event stream, to Kafka (kafka-python).

The catalogue goes to ``<prefix>.items`` (key ``item_id``) first, so the worker knows every item
and can start encoding before the first event; then the events go to ``<prefix>.events`` in
stream order, keyed by ``user_id`` (one user's events land in one partition, in order). Each
record's Kafka timestamp is its send time: the worker measures event→recommendation latency
from it (the event's own ``ts`` is kept as business time, possibly years old in a replay).

    recstream produce /work/shared/data/ml-latest-small --rate 200
    recstream produce --synthetic --users 200 --items 500 --events 20000 --limit 5000
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from kafka.errors import KafkaError
from tqdm import tqdm

from recstream.cli import positive_float, positive_int
from recstream.config import Settings
from recstream.datasets import iter_events, read_items, synthetic_stream
from recstream.events import Event, Item

__all__ = ["configure_parser", "run", "send_stream"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        help="dataset folder with items.csv and events.csv (the standard format)",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="generate a seeded synthetic stream instead"
    )
    parser.add_argument(
        "--rate", type=positive_float, help="events per second (default: as fast as possible)"
    )
    parser.add_argument("--limit", type=positive_int, help="send at most this many events")
    parser.add_argument("--users", type=positive_int, default=200, help="synthetic users")
    parser.add_argument("--items", type=positive_int, default=500, help="synthetic items")
    parser.add_argument("--events", type=positive_int, default=20_000, help="synthetic events")
    parser.add_argument("--seed", type=int, default=42, help="synthetic stream seed")
    parser.add_argument(
        "--skip-items", action="store_true", help="send only the events (catalogue already sent)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: on a terminal)"
    )


class _Throttle:
    """Paces sends to ``rate`` per second against the start time, so sleeps do not drift."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()

    def wait(self, i: int) -> None:
        if self.rate:
            delay = self.t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def send_stream(
    settings: Settings,
    items: Sequence[Item],
    events: Iterable[Event],
    *,
    n_events: int | None = None,
    rate: float | None = None,
    progress: bool = False,
) -> tuple[int, int]:
    """Send ``items`` then ``events``; returns ``(items_sent, events_sent)``. Raises on failures."""
    from recstream.adapters.kafka import ensure_topics, make_producer

    ensure_topics(settings)
    producer = make_producer(settings)
    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)

    try:
        items_topic, events_topic = settings.topic("items"), settings.topic("events")
        for item in tqdm(items, desc="items", unit="item", file=sys.stderr, disable=not progress):
            producer.send(items_topic, key=item.item_id.encode(), value=item.to_json()).add_errback(
                failed
            )
        # Every item is in Kafka before the first event, so the worker sees the catalogue first.
        producer.flush()
        throttle = _Throttle(rate)
        sent = 0
        bar = tqdm(
            total=n_events,
            desc="events",
            unit="ev",
            file=sys.stderr,
            disable=not progress,
            smoothing=0.1,
        )
        with bar:
            for i, event in enumerate(events):
                throttle.wait(i)
                producer.send(
                    events_topic, key=event.user_id.encode(), value=event.to_json()
                ).add_errback(failed)
                sent += 1
                bar.update(1)
                if failures:
                    break
        producer.flush()
    finally:
        producer.close(timeout=10)
    if failures:
        raise ConnectionError(f"{len(failures)} message(s) not delivered: {failures[0]!r}")
    return len(items), sent


def run(args: argparse.Namespace) -> int:
    if args.synthetic == (args.data_dir is not None):
        raise ValueError("give either a dataset folder or --synthetic (exactly one)")
    settings = Settings.from_env()
    if args.synthetic:
        items, all_events = synthetic_stream(args.users, args.items, args.events, args.seed)
        events: Iterable[Event] = all_events[: args.limit] if args.limit else all_events
        n_events: int | None = len(events)  # type: ignore[arg-type]
    else:
        folder = args.data_dir
        for name in ("items.csv", "events.csv"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: missing (need items.csv and events.csv)")
        items = read_items(folder / "items.csv")
        events = iter_events(folder / "events.csv")  # streamed: no need to hold 100k in memory
        if args.limit:
            events = itertools.islice(events, args.limit)
        n_events = args.limit
    if args.skip_items:
        items = []
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.monotonic()
    try:
        n_items, n_sent = send_stream(
            settings, items, events, n_events=n_events, rate=args.rate, progress=progress
        )
    except (ConnectionError, KafkaError) as exc:
        print(f"recstream produce: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - t0
    rate = n_sent / max(elapsed, 1e-9)
    print(
        f"sent {n_items} items to {settings.topic('items')} and {n_sent} events to "
        f"{settings.topic('events')} in {elapsed:.1f} s ({rate:.0f} events/s)",
        file=sys.stderr,
    )
    return 0
