"""Print the results table of bench/results.json as Markdown (pasted into BENCHMARKS.md).

.venv/bin/python bench/report.py [results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import BENCHMARKS, GOALS, RESULTS


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    goals = results.get("goals", {})
    errors = results.get("errors", {})
    lines = ["| benchmark | key | value | goal | met? |", "|---|---|---|---|---|"]
    for name, bench in BENCHMARKS.items():
        for key in bench.figures:
            status = goals.get(key, {})
            goal = status.get("goal", "—") if key in GOALS else "—"
            met = (
                {True: "yes", False: "**no**", None: "—"}[status.get("met")]
                if key in GOALS
                else "—"
            )
            value = f"error: {errors[name]}" if name in errors else _fmt(results.get(key))
            lines.append(f"| {name} | `{key}` | {value} | {goal} | {met} |")
    return "\n".join(lines)


def machine(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    v = m.get("versions", {})
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gb')} GB RAM; {m.get('os')}; "
        f"Python {m.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
        f"numpy {v.get('numpy')}, river {v.get('river')}, faust-streaming "
        f"{v.get('faust-streaming')}, aiokafka {v.get('aiokafka')}; load average at start "
        f"{m.get('load_average')}"
    )


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    results = json.loads(path.read_text())
    print(f"Run {results.get('date')} (`{results.get('command')}`)\n")
    print(machine(results) + "\n")
    print(table(results))
    loads = {
        n: (e.get("load_before"), e.get("load_after"), e.get("seconds"))
        for n, e in results.get("benchmarks", {}).items()
    }
    print("\n| benchmark | load before | load after | seconds |\n|---|---|---|---|")
    for name, (before, after, seconds) in loads.items():
        print(f"| {name} | {before} | {after} | {seconds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
