"""What ``recstream evaluate`` prints and plots: the results table, the ratios to a baseline
with issue 11's goals, and the rolling hit rate along the stream.

Kept apart from :mod:`recstream.evaluate` (the protocol itself), so the protocol can be read on
its own and a report change cannot touch what is measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GOALS",
    "GOAL_BASELINE",
    "compare",
    "compare_lines",
    "plot_rolling",
    "ratio",
    "results_table",
    "rolling_hit_rate",
]

# --- results table and plot ------------------------------------------------------------------


def _cell(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if name.startswith(("hr", "ndcg", "cold")) else f"{value:.3f}"


def results_table(results: dict[str, dict[str, Any]], k: int = 10) -> str:
    """A markdown table, one row per model (``{model name: evaluate() result}``).

    A result with ``"parts"`` (a split: ``--holdout``) also gets one row per part after its
    whole-stream row, named ``"<model> (<part>)"``.
    """
    cols = [f"hr@{k}", f"ndcg@{k}", f"cold_hr@{k}", "coverage", "novelty", "diversity", "gini"]
    cols += ["long_tail_exposure", "long_tail_interactions", "miscalibration"]
    lines = [
        "| model | " + " | ".join(cols) + " | events/s |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    for name, result in results.items():
        rows = [(name, result)]
        rows += [(f"{name} ({part})", r) for part, r in result.get("parts", {}).items()]
        for label, r in rows:
            cells = [_cell(c, r.get(c)) for c in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['events_per_s']:,.0f} |")
    return "\n".join(lines)


# --- ratios to a baseline, and issue 11's goals -----------------------------------------------

# Issue 11: on the held-out half, hr@10 >= 1.25 x and cold_hr@10 >= 2.5 x item-kNN co-occurrence
# (the ``covisit`` baseline). Keyed by metric prefix so they apply to the run's K.
GOALS: dict[str, float] = {"hr": 1.25, "cold_hr": 2.5}
GOAL_BASELINE = "covisit"


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; inf when only the baseline is 0, NaN when both are.

    >>> ratio(0.15, 0.12), ratio(0.1, 0.0), ratio(0.0, 0.0)
    (1.25, inf, nan)
    """
    if baseline > 0:
        return value / baseline
    return math.inf if value > 0 else math.nan


def _ratios(result: dict[str, Any], baseline: dict[str, Any], k: int) -> dict[str, Any]:
    """Ratios of one scope (the whole stream or a part), each with its verdict against GOALS."""
    out: dict[str, Any] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    for prefix, goal in GOALS.items():
        metric = f"{prefix}@{k}"
        value, base = result[metric], baseline[metric]
        count = "cold_evaluated" if prefix.startswith("cold") else "evaluated"
        r = ratio(value, base)
        out[f"{metric}_ratio"] = r
        met = bool(r >= goal)  # False for NaN: no hit on either side
        verdicts[f"{metric}_ratio"] = {
            "goal": goal,
            "met": met,
            "value": value,
            "baseline": base,
            # how many events the metric is over: a ratio over a few dozen is noise
            count: result.get(count),
            # what the metric would have to be to meet the goal, and how far the run is from it
            "needed": goal * base,
            "short_by_ratio": 0.0 if met or math.isnan(r) else goal - r,
            "short_by": 0.0 if met else goal * base - value,
        }
    out["verdicts"] = verdicts
    return out


def compare(
    result: dict[str, Any], baseline: dict[str, Any], baseline_name: str, k: int = 10
) -> dict[str, Any]:
    """``result`` ÷ ``baseline`` on hr@k and cold_hr@k, for the whole stream and per part.

    The goals (``GOALS``, issue 11) are meant for the held-out part against ``covisit``; the
    verdicts are given for every scope and every baseline, the caller says which one counts.

    >>> a = {"hr@10": 0.13, "cold_hr@10": 0.05}
    >>> c = compare(a, {"hr@10": 0.1, "cold_hr@10": 0.025}, "covisit")
    >>> round(c["hr@10_ratio"], 6), c["cold_hr@10_ratio"], c["verdicts"]["hr@10_ratio"]["met"]
    (1.3, 2.0, True)
    >>> round(c["verdicts"]["cold_hr@10_ratio"]["short_by_ratio"], 6)
    0.5
    """
    out: dict[str, Any] = {"model": baseline_name}
    out.update(_ratios(result, baseline, k))
    parts = result.get("parts")
    if parts and baseline.get("parts"):
        out["parts"] = {
            name: _ratios(part, baseline["parts"][name], k) for name, part in parts.items()
        }
    return out


def _fmt_ratio(r: float) -> str:
    return f"{r:.3f}x" if math.isfinite(r) else ("n/a" if math.isnan(r) else "inf")


def compare_lines(comparison: dict[str, Any], model_name: str, k: int = 10) -> list[str]:
    """The printed ratios and, for the scope the goals are meant for, the verdicts."""
    base = comparison["model"]
    scopes = [("whole stream", comparison)]
    scopes += [(name, part) for name, part in comparison.get("parts", {}).items()]
    lines = [f"{model_name} / {base}:"]
    for scope, c in scopes:
        cells = ", ".join(f"{m} {_fmt_ratio(c[f'{m}_ratio'])}" for m in (f"hr@{k}", f"cold_hr@{k}"))
        lines.append(f"  {scope}: {cells}")
    # The goals are for data nobody tuned on: the held-out part when there is one.
    scope, c = scopes[-1]
    where = "held-out part" if scope == "holdout" else f"{scope}, in-sample: use --holdout"
    against = "" if base == GOAL_BASELINE else f"; the goals are against {GOAL_BASELINE}"
    lines.append(f"issue 11 goals ({where}{against}):")
    for key, v in c["verdicts"].items():
        metric = key.removesuffix("_ratio")
        r = c[key]
        count = next((f"{v[n]} {n}" for n in ("cold_evaluated", "evaluated") if v.get(n)), "")
        head = (
            f"  {metric} >= {v['goal']}x {base}: {_fmt_ratio(r)} "
            f"({v['value']:.4f} vs {v['baseline']:.4f}{', ' + count if count else ''})"
        )
        if v["met"]:
            lines.append(f"{head}: met")
        elif math.isnan(r):
            lines.append(f"{head}: n/a (no hit on either side)")
        else:
            lines.append(
                f"{head}: missed by {v['short_by_ratio']:.3f}x "
                f"(needs {v['needed']:.4f}: {v['short_by']:+.4f})"
            )
    return lines


def rolling_hit_rate(
    positions: Sequence[int], hits: Sequence[bool], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hit rate over the last ``window`` evaluated events, at each evaluated event's position."""
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        return np.zeros(0), np.zeros(0)
    window = max(1, min(window, h.size))
    cum = np.concatenate([[0.0], np.cumsum(h)])
    idx = np.arange(1, h.size + 1)
    lo = np.maximum(0, idx - window)
    return np.asarray(positions), (cum[idx] - cum[lo]) / (idx - lo)


def plot_rolling(
    curves: dict[str, tuple[Sequence[int], Sequence[bool]]],
    out: str | Path,
    *,
    k: int = 10,
    window: int = 2000,
    title: str = "",
) -> None:
    """Rolling hr@k along the stream, one line per model, to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for name, (positions, hits) in curves.items():
        x, y = rolling_hit_rate(positions, hits, window)
        ax.plot(x, y, label=f"{name} ({np.mean(hits) if len(hits) else 0:.4f})", linewidth=1.2)
    ax.set_xlabel("event index in the stream")
    ax.set_ylabel(f"hr@{k}, rolling over {window} evaluated purchases")
    ax.set_title(title or f"Prequential hr@{k} along the stream")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
