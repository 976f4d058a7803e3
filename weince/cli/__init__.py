"""``weince <command>``: each command lives in its own module with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMANDS = {
    "demo": "train encoders with InfoNCE and WEINCE and compare frozen features",
    "crosscheck": "compare loss, gradients and statistics across every installed backend",
    "bench": "time forward + backward per backend, preset and size",
    "diagnose": "is the negatives' similarity tail bounded (Weibull)? fits, plots and a verdict",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``weince ARGV``: parse the arguments and run the command they name.

    Args:
        argv: the arguments after ``weince``; ``None``: the process's.

    Returns:
        The exit status: 0 on success, 1 when a check fails, 2 for a usage error (argparse
        exits with 2 itself for the arguments it refuses).
    """
    parser = argparse.ArgumentParser(prog="weince", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"weince.cli.{name}")
        sub = commands.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)
