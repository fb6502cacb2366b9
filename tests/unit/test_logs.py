"""Repeated log lines rate-limited (recstream.logs): a broker outage once wrote ~100,000 ERROR
lines in 45 s; the same records through the worker's handler now make a handful."""

from __future__ import annotations

import io
import logging

from mode.utils.logging import DefaultFormatter, ExtensionFormatter

from recstream.logs import install_rate_limit


def _handler(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger("test-rate-limit-root")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG)
    return root, out


def test_an_outage_flood_becomes_a_few_lines_through_modes_formatter() -> None:
    # mode's formatter (what Faust's worker installs) rewrites record.args: a summary line must
    # still format (it once printed a "--- Logging error ---" traceback instead).
    root, out = _handler(ExtensionFormatter(stream=io.StringIO(), fmt="%(levelname)s %(message)s"))
    (limiter,) = install_rate_limit(root, interval_s=30)
    clock = [0.0]
    limiter.clock = lambda: clock[0]
    child = root.getChild("aiokafka.conn")  # records of any library reach the root's handlers
    for n in range(100_000):
        clock[0] = n * 45 / 100_000  # 100,000 failures in 45 s, as in the reported outage
        child.error("Unable connect to node with id %d: %s", n % 3, "Connect call failed")
    child.info("Reconnected")  # INFO is never limited
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "more like this in the last 30 s" in lines[1] and "Logging error" not in out.getvalue()
    assert lines[2] == "INFO Reconnected"


def test_each_handler_gets_the_first_record_of_a_kind() -> None:
    root, first = _handler(DefaultFormatter("%(message)s"))
    second = io.StringIO()
    extra = logging.StreamHandler(second)
    root.addHandler(extra)
    install_rate_limit(root)
    for _ in range(5):
        root.warning("disk almost full")
    assert first.getvalue() == second.getvalue() == "disk almost full\n"
