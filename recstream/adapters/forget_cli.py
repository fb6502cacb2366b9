"""``recstream forget USER_ID...``: ask the workers to forget users (recstream/forget.py).

Each request goes to ``<prefix>.forget`` keyed by the user id, so the worker that owns the user's
events applies it: the user leaves the model, the online evaluation and Redis at once, and every
checkpoint written from then on (older checkpoints are removed after the next one). What Kafka
itself keeps (the events topic, the DLQ) expires with its retention: see README, "Forgetting a
user".

    recstream forget u42 u43
"""

from __future__ import annotations

import argparse
import sys
import time

from kafka.errors import KafkaError

from recstream.adapters.kafka import ensure_topics, make_producer
from recstream.config import Settings
from recstream.events import InvalidMessage, check_id
from recstream.forget import ForgetRequest

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_ids", nargs="+", metavar="USER_ID", help="the users to forget")


def run(args: argparse.Namespace) -> int:
    try:
        users = [check_id(u, "USER_ID") for u in args.user_ids]
    except InvalidMessage as exc:
        print(f"recstream forget: error: {exc.reason}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    topic = settings.topic("forget")
    ensure_topics(settings, [topic])
    producer = make_producer(settings, acks="all")
    try:
        now = time.time()
        for user in users:
            request = ForgetRequest(user, now)
            producer.send(topic, key=user.encode(), value=request.to_json()).get(timeout=30)
    except KafkaError as exc:
        print(f"recstream forget: error: Kafka refused the request: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.close()
    print(f"recstream forget: {len(users)} request(s) sent to {topic}", file=sys.stderr)
    return 0
