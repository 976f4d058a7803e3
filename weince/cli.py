"""``weince <command>``: each command lives in its own module with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

COMMANDS = {
    "demo": "train encoders with InfoNCE and WEINCE and compare frozen features",
    "crosscheck": "compare loss, gradients and statistics across every installed backend",
    "bench": "time forward + backward per backend, preset and size",
    "diagnose": "is the negatives' similarity tail bounded (Weibull)? fits, plots and a verdict",
}


def positive_int(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}; got {value}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weince", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"weince.{name}")
        sub = commands.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)
