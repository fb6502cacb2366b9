"""Run a module with a recorder of slow event-loop callbacks (stall diagnosis for benchmarks).

    python -m bench.loop_probe OUT.json -m streams.worker [args...]

Every asyncio callback (a task step, a timer, an I/O callback) of the main thread that runs for
at least ``MIN_S`` is appended to OUT.json as ``[wall_time_at_end, seconds, thread_cpu_seconds,
what]``: ``what`` names the task's coroutine (``event_batches``, ``redis_writer``, a timer...)
or the callback. Wall time far above the thread's CPU time means the loop thread was not
running: waiting for the GIL (another thread of the worker held it) or for a core (another
process had it). Nothing else runs on the loop while a callback does, so every event waiting
at that moment waits for it. Two clock reads per callback: cheap enough to leave the worker's
rates unchanged. The file is rewritten at most twice a second and at exit.
"""

from __future__ import annotations

import asyncio.events
import atexit
import json
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIN_S = 0.010
_WRAPPERS = {"Service._execute_task", "App._task.<locals>._wrapped", "Agent._execute_actor"}


def _what(handle: Any) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        # Faust wraps every task and agent (Service._execute_task, App._task's _wrapped): name
        # the first coroutine of ours down the await chain (where the step left it).
        names, coro = [], owner.get_coro()
        while coro is not None and len(names) < 8:
            name = getattr(coro, "__qualname__", None)
            if name is None:
                break
            if name not in _WRAPPERS:
                names.append(name)
            coro = getattr(coro, "cr_await", None)
        return "task " + (" > ".join(names[:2]) or repr(owner.get_coro())[:80])
    name = getattr(callback, "__qualname__", None) or repr(callback)
    return str(name)[:120]


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.loop_probe OUT.json -m MODULE [args...]")
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    slow: list[list[Any]] = []
    last_write = [0.0]
    main_thread = threading.main_thread()
    perf, cpu = time.perf_counter, time.thread_time
    original = asyncio.events.Handle._run

    def write() -> None:
        out.write_text(json.dumps(slow))
        last_write[0] = perf()

    def timed_run(self: Any) -> None:
        if threading.current_thread() is not main_thread:
            original(self)
            return
        w0, c0 = perf(), cpu()
        try:
            original(self)
        finally:
            took = perf() - w0
            if took >= MIN_S:
                slow.append([time.time(), round(took, 4), round(cpu() - c0, 4), _what(self)])
                if perf() - last_write[0] > 0.5:
                    write()

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    out.write_text("[]")
    atexit.register(write)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
