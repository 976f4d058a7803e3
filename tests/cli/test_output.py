"""``weince.cli.output``: the one table printer, JSON writer and progress bar of the commands."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import math

import numpy as np
import pytest

from weince.cli import output


def test_table_aligns_columns_without_trailing_spaces_or_markup():
    text = output.table(["name", "value"], [["a", "1.5"], ["[b]", "12.25"]], justify="lr")
    assert text.splitlines() == ["name  value", "a       1.5", "[b]   12.25"]


def test_table_with_rules_draws_sections():
    text = output.table(["m", "x"], [["a", "1"], ["b", "2"]], rules=True, sections=[1])
    lines = text.splitlines()
    assert len(lines) == 7 and lines[1].split() == ["m", "x"]
    assert {line.strip()[0] for line in (lines[0], lines[2], lines[4], lines[6])} == {"─"}


def test_json_has_null_for_nan_and_infinity(tmp_path):
    payload = {"nan": math.nan, "inf": [np.float32(np.inf), 1.0], "n": np.int64(3), 1: (True,)}
    output.write_json(tmp_path / "out.json", payload)
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "nan": None,
        "inf": [None, 1.0],
        "n": 3,
        "1": [True],
    }
    assert output.json_ready(np.array([1.0, np.nan])) == [1.0, None]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only(monkeypatch, capsys):
    assert list(output.track([1, 2], "work", label=str)) == [1, 2]
    assert capsys.readouterr().err == "[1/2] 1\n[2/2] 2\n"  # not a terminal: a line per item
    assert list(output.track([1, 2], "work")) == [1, 2]
    assert list(output.track([1, 2], "work", enabled=False, label=str)) == [1, 2]
    assert capsys.readouterr().err == ""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with output.progress_bar(3, "steps") as update:
        update(advance=1)
        update(note="loss 1.0")
    assert "steps" in terminal.getvalue()  # drawn on the terminal


@pytest.mark.parametrize("command", ["bench", "crosscheck", "demo", "diagnose"])
def test_every_command_with_a_progress_bar_has_no_progress(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(f"weince.cli.{command}").add_arguments(parser)
    assert "--no-progress" in parser.format_help()
