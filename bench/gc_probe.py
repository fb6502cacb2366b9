"""Run a module with a recorder of garbage-collector pauses (stall diagnosis for benchmarks).

    python -m bench.gc_probe OUT.json -m streams.worker [args...]

Every collection that takes at least 5 ms is appended to OUT.json as
``[wall_time_at_end, seconds, generation, collected]``; the file is rewritten at each such
pause (they are rare), so it is complete even if the process is killed.
"""

from __future__ import annotations

import gc
import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

MIN_PAUSE_S = 0.005


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: python -m bench.gc_probe OUT.json -m MODULE [args...]")
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    pauses: list[list[Any]] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        seconds = time.perf_counter() - started[0]
        if seconds >= MIN_PAUSE_S:
            pauses.append([time.time(), seconds, info.get("generation"), info.get("collected")])
            out.write_text(json.dumps(pauses))

    out.write_text("[]")
    gc.callbacks.append(on_gc)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
