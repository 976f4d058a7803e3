"""What the commands show and write: tables and progress bars (rich), and JSON files.

Tables are plain text laid out by rich (no colour, no borders but rules where asked), so that
the same text goes to the terminal, to a log and to a file. Progress bars go to stderr and only
when stderr is a terminal: a log holds no carriage returns. JSON has no NaN or infinity: they
are written as ``null``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

T = TypeVar("T")
Update = Callable[..., None]  # progress_bar's update(advance=, description=, note=)
WIDE = 1_000  # columns: a table is never wrapped, whatever the terminal


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    justify: str = "",
    rules: bool = False,
    sections: Sequence[int] = (),
) -> str:
    """The rows under the header, in columns two spaces apart, as text.

    Args:
        header: the columns' titles.
        rows: the cells, already formatted, one sequence per row.
        justify: one letter per column, ``l`` (left) or ``r`` (right); columns beyond it, and
            all of them by default, are left-justified.
        rules: draw a rule above and below the header and below the last row.
        sections: with ``rules``, the indices of rows a rule is drawn above.

    Returns:
        The table, its lines without trailing spaces.
    """
    grid = Table(
        box=box.HORIZONTALS if rules else None,
        show_edge=rules,
        pad_edge=False,
        padding=(0, 1),
        header_style="",
        expand=False,
    )
    for i, title in enumerate(header):
        right = justify[i : i + 1] == "r"
        grid.add_column(title, justify="right" if right else "left", no_wrap=True)
    for i, cells in enumerate(rows):
        grid.add_row(*cells, end_section=rules and i + 1 in sections)
    return render(grid)


def render(renderable: Any) -> str:
    """A rich renderable as plain text: no colour, no markup, lines without trailing spaces.

    Args:
        renderable: what ``rich.console.Console.print`` accepts.

    Returns:
        The text.
    """
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=WIDE, color_system=None, markup=False, highlight=False, emoji=False
    )
    console.print(renderable)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """``value`` as JSON can hold it: NaN and infinities as ``None``, NumPy scalars and arrays
    as Python numbers and lists, tuples as lists, mapping keys as strings.

    Args:
        value: numbers, strings, ``None``, and mappings and sequences of them.

    Returns:
        The same structure, ready for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (through ``json_ready``) as indented JSON.

    Args:
        path: the file to write.
        payload: the content.
    """
    path.write_text(json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def progress_bar(total: int, description: str = "", *, enabled: bool = True) -> Iterator[Update]:
    """A progress bar on stderr, drawn by rich only when stderr is a terminal and removed when
    done; elsewhere (a pipe, a log file) nothing is shown.

    Args:
        total: the number of steps.
        description: the text before the bar.
        enabled: ``False`` (``--no-progress``): show nothing.

    Yields:
        ``update(advance=1)`` after a step, ``update(description=...)`` for what runs now,
        ``update(note=...)`` for a short text after the bar (the last loss, say).
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(file=sys.stderr),
        transient=True,
        disable=not (enabled and sys.stderr.isatty()),
    ) as progress:
        task = progress.add_task(description, total=total, note="")
        yield functools.partial(progress.update, task)


def track(
    items: Sequence[T],
    description: str,
    *,
    enabled: bool = True,
    label: Any = None,
) -> Iterator[T]:
    """``items``, one at a time, with a progress bar (``progress_bar``) while they are worked on.

    Args:
        items: the steps.
        description: the text before the bar.
        enabled: ``False`` (``--no-progress``): show nothing.
        label: a function of an item giving a few words on it: shown after the bar on a
            terminal, and elsewhere printed to stderr as ``[i/n] words`` when the item starts
            (a line per item reads well in logs). ``None``: nothing but the bar.

    Yields:
        Each item, in turn.
    """
    with progress_bar(len(items), description, enabled=enabled) as update:
        for i, item in enumerate(items, 1):
            words = label(item) if label is not None else ""
            if sys.stderr.isatty():
                update(note=words)
            elif enabled and words:
                print(f"[{i}/{len(items)}] {words}", file=sys.stderr, flush=True)
            yield item
            update(advance=1)
