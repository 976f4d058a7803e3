"""Bad command lines: each a usage error (exit 2) naming the option, before any work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from weince import cli
from weince.cli import args as cli_args
from weince.cli import bench, crosscheck


@pytest.fixture(autouse=True)
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as its work: benchmarking, comparing, training."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command started its work before refusing its arguments")

    monkeypatch.setattr(bench, "bench_target", refuse)
    monkeypatch.setattr(crosscheck, "run_job", refuse)
    demo = pytest.importorskip("weince.cli.demo")
    monkeypatch.setattr(demo, "_compare", refuse)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``weince ARGV``; assert it exits 2 with a usage error; return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err


def bench_json(tmp_path: Path, content: object, name: str = "earlier.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


BENCH = [
    (["--sizes", "0"], "--sizes", "must be >= 4"),
    (["--sizes", "-4"], "--sizes", "must be >= 4"),
    (["--sizes", "3"], "--sizes", "must be >= 4"),
    (["--sizes", "5"], "--sizes", "must be even"),
    (["--sizes", "64", "7"], "--sizes", "must be even"),
    (["--sizes", "x"], "--sizes", "expected an integer"),
    (["--dim", "0"], "--dim", "must be >= 1"),
    (["--repeats", "0"], "--repeats", "must be >= 1"),
    (["--warmup", "-1"], "--warmup", "must be >= 1"),
    (["--threads", "-2"], "--threads", "must be >= 1"),
    (["--json", "{tmp}/no/such/folder/out.json"], "--json", "no folder"),
    (["--json", "{tmp}"], "--json", "is a folder"),
    (["--plot", "{tmp}/missing/plot.png"], "--plot", "no folder"),
    (["--compare", "{tmp}/absent.json"], "--compare", "cannot read"),
    (["--compare", "{text}"], "--compare", "is not JSON"),
    (["--compare", "{empty}"], "--compare", "holds no rows"),
    (["--compare", "{partial}"], "--compare", "row 0 lacks"),
]


@pytest.mark.parametrize(("argv", "option", "why"), BENCH)
def test_bench_refuses_bad_arguments_before_benchmarking(argv, option, why, tmp_path, capsys):
    text = tmp_path / "text.json"
    text.write_text("not json {")
    paths = {
        "tmp": str(tmp_path),
        "text": str(text),
        "empty": bench_json(tmp_path, {"rows": []}, "empty.json"),
        "partial": bench_json(tmp_path, {"rows": [{"backend": "torch", "median_ms": 1}]}, "p.json"),
    }
    err = usage_error(["bench", *(arg.format(**paths) for arg in argv)], capsys)
    assert f"argument {option}" in err and why in err


def test_bench_compare_file_is_read_with_the_arguments(tmp_path):
    row = {"backend": "torch", "device": "cpu", "dtype": "float32", "preset": "paper"}
    row |= {"size": 64, "dim": 8, "median_ms": 2.0, "ratio": 1.5}
    path = bench_json(tmp_path, {"rows": [row]})
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args(["--compare", path]).compare == (path, [row])
    assert parser.parse_args(["--sizes", "4", "6"]).sizes == [4, 6]


CROSSCHECK = [
    (["--seed", "-1"], "--seed", "must be >= 0"),
    (["--json", "{tmp}"], "--json", "is a folder"),
    (["--json", "{tmp}/no/folder/out.json"], "--json", "no folder"),
]


@pytest.mark.parametrize(("argv", "option", "why"), CROSSCHECK)
def test_crosscheck_refuses_bad_arguments_before_comparing(argv, option, why, tmp_path, capsys):
    err = usage_error(["crosscheck", *(arg.format(tmp=tmp_path) for arg in argv)], capsys)
    assert f"argument {option}" in err and why in err


def test_demo_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = usage_error(["demo", "--quick", "--out", str(blocker / "results")], capsys)
    assert "argument --out" in err and "is a file" in err


def test_demo_refuses_a_temperature_the_loss_refuses(capsys):
    err = usage_error(["demo", "--quick", "--temperature", "0.001"], capsys)
    assert "argument --temperature" in err and "[0.01, 10000]" in err


def test_output_folder_accepts_a_folder_to_create(tmp_path):
    assert cli_args.output_folder(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert cli_args.output_file(str(tmp_path / "out.json")) == tmp_path / "out.json"
