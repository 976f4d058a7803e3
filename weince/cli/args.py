"""The argument types of every command: each parses one option's text or refuses it.

An argparse ``type`` raises ``argparse.ArgumentTypeError``; argparse then exits with status 2
and a message naming the option, before the command does any work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from weince_core.testing import BACKEND_IDS


def positive_int(minimum: int) -> Callable[[str], int]:
    """An integer of at least ``minimum``.

    Args:
        minimum: the smallest value accepted.

    Returns:
        The parser of one option's text.
    """

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
    """A comma list of integers, each at least ``minimum``.

    Args:
        minimum: the smallest value accepted.

    Returns:
        The parser of one option's text.
    """

    def parse(text: str) -> list[int]:
        try:
            values = [int(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a comma list of integers") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: each value must be >= {minimum}")
        return values

    return parse


def _number(text: str) -> float:
    """``text`` as a float, or the error every number option gives."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number above 0.

    Args:
        text: the option's text.

    Returns:
        The number.
    """
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a quantile, say).

    Args:
        text: the option's text.

    Returns:
        The number.
    """
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1); got {text}")
    return value


def even_size(text: str) -> int:
    """A batch of two views, ``2N`` rows: even and at least 4 (``N >= 2``).

    Args:
        text: the option's text.

    Returns:
        ``2N``.
    """
    value = positive_int(4)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(
            f"2N (both views) must be even; got {value} (did you mean {value - 1} or {value + 1}?)"
        )
    return value


def config_value(field: str) -> Callable[[str], float]:
    """A number in the range of the ``WEINCEConfig`` field ``field``.

    Args:
        field: the field's name, e.g. ``"temperature"``.

    Returns:
        The parser of one option's text.
    """
    from weince_core.config import RANGES

    def parse(text: str) -> float:
        value = _number(text)
        if not RANGES[field].contains(value):
            raise argparse.ArgumentTypeError(
                f"must be {RANGES[field].text()} (WEINCEConfig.{field}); got {text}"
            )
        return value

    return parse


def choice_list(
    name: str, allowed: Sequence[str], every: str = "all"
) -> Callable[[str], list[str]]:
    """A comma list of names from ``allowed``, or ``every`` for all of them.

    Args:
        name: what one item is, for the message (``"dtype"``).
        allowed: the names accepted.
        every: the word that selects every name.

    Returns:
        The parser of one option's text.
    """

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if every in items:
            return list(allowed)
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or repr(text)}: not a {name}; choose from "
                f"{', '.join(allowed)} or {every} (a comma list, or the option repeated)"
            )
        return items

    return parse


def matching_ids(name: str) -> list[str]:
    """The backend kinds that ``name`` selects: itself, or those it is the prefix of.

    Args:
        name: a backend id (``torch-cpu``) or a prefix of ids (``torch``).

    Returns:
        The ids of the registry's ``BACKEND_IDS`` it selects (none for an unknown name).
    """
    return [i for i in BACKEND_IDS if i == name or i.startswith(f"{name}-")]


def backend_names(text: str) -> list[str]:
    """A comma list of backend ids of the registry, or prefixes of them (``torch``).

    Args:
        text: the option's text.

    Returns:
        The names as given.
    """
    names = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [name for name in names if not matching_ids(name)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(text)}: no such backend; choose from "
            f"{', '.join(BACKEND_IDS)} (or a prefix: torch, jax, strict)"
        )
    return names


def output_file(text: str) -> Path:
    """A file to write, whose folder exists and is writable (checked before any work, so that a
    long run does not fail at its end).

    Args:
        text: the option's text.

    Returns:
        The path.
    """
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
    """A folder to write into, created if missing: the nearest existing ancestor must be a
    writable folder (checked before any work).

    Args:
        text: the option's text.

    Returns:
        The path.
    """
    path = Path(text)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot make the folder {text}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing} (for {text})")
    return path


def json_file(text: str) -> Any:
    """The content of a readable JSON file.

    Args:
        text: the option's text, the file's path.

    Returns:
        The parsed content.
    """
    try:
        with open(text) as file:
            return json.load(file)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"{text} is not JSON: {error}") from None


def json_rows(keys: Collection[str], what: str) -> Callable[[str], tuple[str, list[dict]]]:
    """A JSON file of rows (a list, or ``{"rows": [...]}``), each a dict with ``keys``.

    Args:
        keys: the keys every row must have.
        what: the command whose ``--json`` writes such files, for the message.

    Returns:
        The parser of one option's text, which returns the file's name and its rows.
    """

    def parse(text: str) -> tuple[str, list[dict]]:
        content = json_file(text)
        rows = content.get("rows") if isinstance(content, dict) else content
        if not isinstance(rows, list) or not rows:
            raise argparse.ArgumentTypeError(f"{text} holds no rows: not a '{what} --json' file")
        for i, row in enumerate(rows):
            missing = set(keys) - set(row) if isinstance(row, dict) else set(keys)
            if missing:
                raise argparse.ArgumentTypeError(
                    f"{text}: row {i} lacks {', '.join(sorted(missing))}: not a '{what} --json' "
                    "file"
                )
        return text, rows

    return parse
