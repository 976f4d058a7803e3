"""``weince crosscheck --form``: every pairing form on every backend, the exit status as the
verdict, a broken backend caught and named, and bad arguments refused (exit 2)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest

from weince import testing
from weince.cli import crosscheck
from weince.testing import all_backends
from weince_core.testing import FORMS

# Small and quick: the CPU backends that need no compilation.
FAST = ["--sizes", "6", "--dim", "5", "--steps", "2", "--no-progress"]
QUICK = ["--backends", "numpy,strict", "--dtype", "float64,float32"]


def run_command(argv, capsys):
    parser = argparse.ArgumentParser(prog="weince crosscheck")
    crosscheck.add_arguments(parser)
    try:
        code = crosscheck.run(parser.parse_args(argv))
    except SystemExit as exit:
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_form_passes_on_the_cpu_backends(tmp_path, capsys):
    report = tmp_path / "forms.json"
    code, out, _ = run_command([*FAST, *QUICK, "--form", "all", "--json", str(report)], capsys)
    assert code == 0, out
    for heading in ("two_tower, scale", "explicit_negatives, queue of 24", "paired + in-batch"):
        assert heading in out
    assert "multi_positive, 3 views" in out and "PASSED: all" in out
    assert "seed 0: N = 6 pairs" in out  # the two-view form ran too, as before
    saved = json.loads(report.read_text())
    assert saved["passed"] is True
    assert set(saved["forms"]) == set(FORMS)
    rows = saved["forms"]["two_tower"]["rows"]
    assert {r["backend"] for r in rows} == {"numpy", "strict", "strict-no_float64"}
    assert all({"grad_x", "grad_y", "grad_scale"} <= set(r["differences"]) for r in rows)


def test_a_broken_backend_fails_the_command_and_is_named(monkeypatch, capsys):
    numpy = next(b for b in all_backends(["numpy"]))
    broken = dataclasses.replace(numpy, id="numpy-broken")
    monkeypatch.setattr(crosscheck, "all_backends", lambda ids=None: [numpy, broken])
    run_form = testing.run_form

    def perturbed(backend, case, config, dtype, *, path="adapter"):
        taken, results = run_form(backend, case, config, dtype, path=path)
        if backend.id == "numpy-broken":
            for result in results:
                result.grads["scale"] = result.grads["scale"] * (1 + 1e-9)
        return taken, results

    monkeypatch.setattr(testing, "run_form", perturbed)
    code, out, _ = run_command([*FAST, "--form", "two_tower", "--dtype", "float32,float64"], capsys)
    assert code == 1, out
    assert "FAILED" in out
    assert "numpy-broken (cpu, float64, core) on paper, two_tower" in out and "grad" in out
    assert "numpy (cpu, float32" not in out.split("FAILED")[1]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--form", "three_tower"], "three_tower: not a form"),
        (["--form", ""], "not a form"),
    ],
)
def test_bad_form_exits_2_and_names_it(argv, named, capsys):
    code, _, err = run_command([*FAST, *argv], capsys)
    assert code == 2
    assert "--form" in err and named in err


def test_input_file_is_for_the_two_view_form_only(tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, np.ones((2, 4, 3)))
    code, _, err = run_command(["--input", str(path), "--form", "two_tower"], capsys)
    assert code == 2 and "--input: only for --form two_view" in err
