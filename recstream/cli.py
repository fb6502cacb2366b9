"""The ``recstream`` command: ``recstream <command> --help`` for each command.

Each command lives in its own module, which exposes ``configure_parser(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``recstream evaluate``
never loads Faust and ``recstream produce`` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "worker": ("streams.worker", "run the streaming worker (Faust agents, web, metrics)"),
    "produce": ("recstream.adapters.produce", "send a catalogue and an event stream to Kafka"),
    "consume": ("recstream.adapters.consume", "tail the recommendations topic"),
    "forget": ("recstream.adapters.forget_cli", "ask the workers to forget users (their data)"),
    "evaluate": ("recstream.evaluate_cli", "prequential evaluation on a dataset folder"),
    "encode": ("recstream.encoder", "encode a catalogue with the BERT item encoder"),
    "synth-dataset": ("recstream.datasets", "write the seeded synthetic shop as a dataset folder"),
    "diversity-sweep": (
        "recstream.diversity_sweep",
        "the diversity knob's accuracy-diversity trade-off on the first half of a dataset",
    ),
}


def positive_int(value: str) -> int:
    """argparse type: an integer > 0 (the commands' counts, sizes and limits)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def positive_float(value: str) -> float:
    """argparse type: a finite number > 0 (rates, intervals)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def port(value: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {value}")
    return number


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="recstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        # Options are declared by the command's module; importing it here would load every
        # heavy dependency for every command, so only the chosen one is configured fully.
        if name in argv:
            importlib.import_module(module_name).configure_parser(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f"recstream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
