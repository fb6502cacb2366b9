"""``recstream evaluate`` options for the evaluated hybrid's configuration: its ranker (and the
learned one's weights' trace), the diversity knob, and any other setting (``--set``).

``--ranker fixed|learned`` overrides ``RecommenderConfig.ranker`` for the evaluated hybrid
(``--shards`` included), ``--diversity D`` its diversity, ``--set NAME=VALUE`` any field (an
ablation: ``--set w_mf=0``); ``--ranker-weights-plot OUT.png`` plots the learned ranker's weights
along the stream. The JSON result of a learned hybrid gets ``"ranker"``: its final weights, its
prior, and the trace (:meth:`recstream.ranker.OnlineRanker.trace_dict`). With ``--shards`` every
shard steps on its own users' purchases and the shards exchange their steps with the item deltas:
the plot shows shard 0's weights, the JSON has every shard's final weights.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> args = parser.parse_args(["--ranker", "learned"])
>>> hybrid_config(args).ranker, hybrid_config(parser.parse_args([])) is None
('learned', True)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from recstream.recommender import RANKERS, RecommenderConfig

__all__ = ["add_arguments", "build_hybrid", "hybrid_config", "plot_weights", "report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ranker",
        choices=RANKERS,
        help="the hybrid's ranking: fixed weights, or the ranker learned online from the stream "
        f"(default: RecommenderConfig's, {RecommenderConfig.ranker})",
    )
    parser.add_argument(
        "--diversity",
        type=float,
        metavar="D",
        help="the hybrid's diversity knob in [0, 1]: an MMR re-rank of its best candidates on "
        "the item vectors (default 0: lists as scored)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=config_override,
        help="override one RecommenderConfig setting of the hybrid (repeatable), e.g. --set "
        "w_mf=0 for an ablation",
    )
    parser.add_argument(
        "--ranker-weights-plot",
        metavar="OUT.png",
        help="plot the learned ranker's weights along the stream to OUT.png",
    )


def config_override(text: str) -> tuple[str, Any]:
    """argparse type of ``--set NAME=VALUE``: a RecommenderConfig field and its value, parsed
    as the field's type (numbers, booleans; a tuple field takes comma-separated names).

    >>> config_override("w_mf=0"), config_override("ranker_types=click,purchase")
    (('w_mf', 0.0), ('ranker_types', ('click', 'purchase')))
    """
    name, sep, raw = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(RecommenderConfig)}
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME a RecommenderConfig field, got {text!r}"
        )
    default = getattr(RecommenderConfig(), name)
    try:
        if isinstance(default, bool):
            value: Any = {"true": True, "false": False}[raw.lower()]
        elif isinstance(default, int | float | str):
            value = type(default)(raw)
        elif isinstance(default, tuple):
            value = tuple(v for v in raw.split(",") if v)
        else:
            raise argparse.ArgumentTypeError(f"--set {name}: not settable from the command line")
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"--set {name}: bad value {raw!r}") from None
    return name, value


def hybrid_config(args: argparse.Namespace) -> RecommenderConfig | None:
    """The hybrid's configuration the options ask for (--ranker, --diversity); None: the
    defaults."""
    changes: dict[str, Any] = {}
    if getattr(args, "ranker", None) is not None:
        changes["ranker"] = args.ranker
    if getattr(args, "diversity", None) is not None:
        changes["diversity"] = args.diversity
    for name, value in getattr(args, "set", None) or []:
        changes[name] = value
    return dataclasses.replace(RecommenderConfig(), **changes) if changes else None


def build_hybrid(args: argparse.Namespace):
    """The evaluated hybrid with :func:`hybrid_config` (a group of shards with ``--shards``)."""
    config = hybrid_config(args)
    if getattr(args, "shards", None) is not None:
        from recstream.sharded import ShardedRecommender

        return ShardedRecommender(args.shards, args.sync_interval, config=config, seed=args.seed)
    from recstream.recommender import Recommender

    return Recommender(config, seed=args.seed)


def _rankers(model) -> list:
    shards = getattr(model, "shards", None) or [model]
    return [r for r in (getattr(s, "ranker", None) for s in shards) if r is not None]


def report(model, result: dict[str, Any], args: argparse.Namespace) -> None:
    """Add the learned ranker's weights to ``result``; plot them if asked."""
    rankers = _rankers(model)
    out = getattr(args, "ranker_weights_plot", None)
    if not rankers:
        if out:
            raise ValueError("--ranker-weights-plot: the evaluated model has no learned ranker")
        return
    first = rankers[0]
    trace = first.trace_dict(clock=result.get("events"))  # ends at the stream's end
    result["ranker"] = {
        "weights": first.weights if len(rankers) == 1 else [r.weights for r in rankers],
        "steps": first.n_steps if len(rankers) == 1 else [r.n_steps for r in rankers],
        "trace": trace,
    }
    if out:
        title = f"{result.get('data', '')}: learned ranker weights along the stream"
        title += " (shard 0)" if len(rankers) > 1 else ""
        plot_weights(trace, out, title=title)


def plot_weights(trace: dict[str, Any], out: str | Path, *, title: str = "") -> None:
    """Each feature's weight against the event index, the prior dotted at the start."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    x = [0, *trace["clock"]]
    # the default cycle has 10 colours and the default features are 11: two lines would share
    # one; tab20 gives each of up to 20 features its own
    colours = plt.get_cmap("tab20").colors
    for j, name in enumerate(trace["features"]):
        y = [trace["prior"][j], *(w[j] for w in trace["weights"])]
        label = f"{name} ({y[-1]:+.2f})"
        (line,) = ax.plot(x, y, label=label, linewidth=1.2, color=colours[j % len(colours)])
        ax.axhline(trace["prior"][j], color=line.get_color(), linestyle=":", linewidth=0.6)
    ax.set_xlabel("event index in the stream")
    ax.set_ylabel("weight (features scaled to [0, 1] per list)")
    ax.set_title(title or "Learned ranker weights along the stream")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
