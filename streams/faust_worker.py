"""The Faust worker class of the app (``faust.App(Worker=...)`` in streams/app.py).

Both ways of starting a worker run it:

* ``recstream worker`` / ``python -m streams.worker`` do the start-up (:func:`streams.worker.
  start_up`) *before* the event loop runs, so a missing broker or a taken slot ends the command
  with one line and an exit status, then hand over to this class;
* ``faust -A streams.app worker -l info`` (Faust's own command: it builds the worker from
  ``app.conf.Worker``) gets here with nothing installed, and :meth:`RecstreamWorker.on_first_start`
  does the same start-up, once Faust has set up logging and before the app (consumer, agents,
  web server) starts.

Only public Faust/mode APIs: the ``Worker`` setting, and the ``on_first_start`` and
``on_setup_root_logger`` hooks of :class:`faust.Worker`.
"""

from __future__ import annotations

import logging
import os
import sys

import faust

from recstream.logs import install_rate_limit

log = logging.getLogger("recstream.worker")


def quiet_kafka_python(level: int) -> None:
    """kafka-python (the topic admin at start-up) logs every connection at INFO."""
    logging.getLogger("kafka").setLevel(max(logging.WARNING, level))


class RecstreamWorker(faust.Worker):
    """Faust's worker, with the recstream start-up when nothing installed it, and repeated
    WARNING/ERROR lines rate-limited (recstream.logs): a broker outage otherwise writes one
    line per connection attempt and fetch."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        install_rate_limit(logger)
        quiet_kafka_python(level)

    async def on_first_start(self) -> None:
        await super().on_first_start()  # logging, signal handlers, autodiscovery (the agents)
        from streams import runtime

        try:
            runtime.current()
            return  # `recstream worker` did the start-up already
        except RuntimeError:
            pass
        from streams.app import settings
        from streams.worker import start_up

        # Blocking (the topic admin, torch and the encoder: seconds), like `recstream worker`'s
        # start-up before its event loop runs: nothing else runs on this loop yet.
        try:
            start_up(settings)
        except (ConnectionError, ValueError) as exc:  # no broker, a setting, a taken slot
            log.critical("worker: cannot start: %s", exc)
            # Leave at once, with the one line: Faust's shutdown would stop an app that never
            # started (its shutdown hooks expect a Runtime). Nothing else is running yet.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
