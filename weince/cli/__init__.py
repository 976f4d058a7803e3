"""``weince <command>``: each command lives in its own module with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def int_list(minimum: int) -> Callable[[str], list[int]]:
    """An argparse ``type``: a comma list of integers, each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a comma list of integers") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: each value must be >= {minimum}")
        return values

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


def even_size(text: str) -> int:
    """An argparse ``type``: a batch of two views, ``2N`` rows: even and at least 4 (N >= 2)."""
    value = positive_int(4)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(
            f"2N (both views) must be even; got {value} (did you mean {value - 1} or {value + 1}?)"
        )
    return value


def output_file(text: str) -> Path:
    """An argparse ``type``: a file to write, whose folder exists and is writable (checked
    before any work, so that a long run does not fail at its end)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name in it")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {folder} (for {text}); create it first")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return path


def output_folder(text: str) -> Path:
    """An argparse ``type``: a folder to write into, created if missing: the nearest existing
    ancestor must be a writable folder (checked before any work)."""
    path = Path(text)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make the folder {text}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing} (for {text})")
    return path


def config_value(field: str) -> Callable[[str], float]:
    """An argparse ``type``: a number in the range of the ``WEINCEConfig`` field ``field``."""
    from weince_core.config import RANGES

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
        if not RANGES[field].contains(value):
            raise argparse.ArgumentTypeError(
                f"must be {RANGES[field].text()} (WEINCEConfig.{field}); got {text}"
            )
        return value

    return parse


def json_file(text: str) -> Any:
    """An argparse ``type``: the content of a readable JSON file."""
    try:
        with open(text) as file:
            return json.load(file)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"{text} is not JSON: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weince", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"weince.cli.{name}")
        sub = commands.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)
