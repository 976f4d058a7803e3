"""``weince crosscheck``: the table, the JSON, the exit status, user inputs, bad arguments, and a
backend broken on purpose being caught and named."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weince.cli
from weince.cli import crosscheck
from weince.testing import Backend, all_backends
from weince_core import testing

ROOT = Path(__file__).resolve().parents[2]
# Small and quick: the CPU backends that need no compilation, two dtypes.
FAST = ["--sizes", "12", "--dim", "6", "--steps", "2", "--no-progress"]
RUNNABLE = {b.id for b in all_backends() if not b.skip_reason}


def run_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``weince crosscheck ARGV`` in this process, as ``weince.cli`` runs it."""
    parser = argparse.ArgumentParser(prog="weince crosscheck", description=crosscheck.__doc__)
    crosscheck.add_arguments(parser)
    try:
        code = crosscheck.run(parser.parse_args(argv))
    except SystemExit as exit:  # argparse's usage errors
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def result_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.rstrip().endswith(("PASS", ")"))]


def test_the_weince_command_dispatches_to_crosscheck(capsys):
    with pytest.raises(SystemExit) as exit:
        weince.cli.main(["crosscheck", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "Compare the loss, gradients" in out and "--backends" in out and "float16" in out


def test_every_backend_passes_and_gets_a_row_with_its_differences(capsys):
    code, out, _ = run_command([*FAST, "--dtype", "float64,float32"], capsys)
    assert code == 0, out
    assert "paper preset, seed 0: N = 12 pairs, d = 6, 2 steps" in out
    for backend in RUNNABLE:
        assert any(line.split()[:1] == [backend] for line in out.splitlines()), backend
    assert "loss abs" in out and "beta_t rel" in out and "tol" in out
    assert "PASSED: all" in out and "FAIL" not in out


def test_json_holds_every_row_with_differences_tolerances_and_the_verdict(tmp_path, capsys):
    path = tmp_path / "crosscheck.json"
    argv = [*FAST, "--backends", "numpy,strict", "--dtype", "float64,float32", "--preset", "all"]
    code, out, _ = run_command([*argv, "--json", str(path)], capsys)
    assert code == 0, out
    for preset in ("paper", "blend", "infonce"):
        assert f"{preset} preset, seed 0: N = 12 pairs, d = 6, 2 steps" in out
    report = json.loads(path.read_text())
    assert report["passed"] is True
    rows = {(r["backend"], r["dtype"]) for r in report["rows"] if r["preset"] == "paper"}
    # "strict" names both of its devices; NumPy float64 is the reference itself.
    assert rows == {
        ("numpy", "float32"),
        ("strict", "float64"),
        ("strict", "float32"),
        ("strict-no_float64", "float32"),
    }
    assert [r["preset"] for r in report["reference"]] == ["paper", "blend", "infonce"]
    assert len(report["rows"]) == 3 * len(rows)
    for row in report["rows"]:
        if row["preset"] != "infonce":
            assert set(row["differences"]) == set(testing.QUANTITIES)
        assert row["passed"] and row["failed"] == []
        for diff in row["differences"].values():
            assert 0 <= diff["error"] <= diff["tolerance"] and diff["reference_nonfinite"] == 0
        # The dtype's fixed tolerance, stated in the report.
        assert row["tolerance"] == dataclasses.asdict(crosscheck.VERDICT[row["dtype"]])
        if row["preset"] == "infonce":  # the tail statistics are not computed: not compared
            assert set(row["differences"]) == {"loss", "grad", "lambda", "beta_t"}
    assert report["tolerances"] == {
        dtype: dataclasses.asdict(tol) for dtype, tol in crosscheck.VERDICT.items()
    }
    assert report["settings"]["sizes"] == [12] and report["settings"]["steps"] == 2


class PerturbedBackend(Backend):
    """NumPy with its temperature off by one part in 10^7 (100 times float64's tolerance of
    1e-9 in the loss): a formula broken on purpose."""

    def run_steps(self, batches, config, dtype, *, path="adapter"):
        broken = config.replace(temperature=config.temperature * (1 + 1e-7))
        return super().run_steps(batches, broken, dtype, path=path)


def test_a_backend_with_a_broken_formula_fails_the_command_and_is_named(
    monkeypatch, tmp_path, capsys
):
    numpy = all_backends(["numpy"])[0]
    broken = PerturbedBackend(**{**dataclasses.asdict(numpy), "id": "numpy-broken"})
    registry = crosscheck.all_backends
    monkeypatch.setattr(crosscheck, "all_backends", lambda ids=None: [*registry(ids), broken])
    path = tmp_path / "report.json"
    argv = [*FAST, "--backends", "numpy,strict", "--dtype", "float64", "--json", str(path)]
    code, out, _ = run_command(argv, capsys)
    assert code == 1
    verdicts = {line.split()[0]: line.split()[-1] for line in result_lines(out)}
    assert verdicts["strict"] == "PASS"
    assert verdicts["numpy-broken"].endswith(")") and "FAIL" in out
    assert "FAILED: 1 of 2 rows" in out
    assert "numpy-broken (cpu, float64, core) on paper, seed 0: loss" in out
    failed = [r for r in json.loads(path.read_text())["rows"] if not r["passed"]]
    assert [r["backend"] for r in failed] == ["numpy-broken"]


def test_breaking_torchs_logsumexp_fails_torch_alone(monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    logsumexp = torch.logsumexp
    # The core's PyTorch fast path (weince_core.ops.logsumexp) calls torch.logsumexp: on a CPU
    # for the paper preset's top-M terms (the main term's is computed in place there).
    monkeypatch.setattr(torch, "logsumexp", lambda x, dim: logsumexp(x, dim=dim) * (1 + 1e-7))
    code, out, _ = run_command(
        [*FAST, "--backends", "numpy,torch-cpu", "--dtype", "float64"], capsys
    )
    assert code == 1
    verdicts = {line.split()[0]: line for line in result_lines(out)}
    assert "FAIL (loss" in verdicts["torch-cpu"]
    assert "FAILED: 1 of 1 rows" in out and "  torch-cpu (cpu, float64, " in out


def test_a_raising_backend_is_a_failed_row_not_a_crash(monkeypatch, capsys):
    class Raising(Backend):
        def run_steps(self, *args, **kwargs):
            raise RuntimeError("kernel launch failed")

    numpy = all_backends(["numpy"])[0]
    raising = Raising(**{**dataclasses.asdict(numpy), "id": "numpy-raising"})
    monkeypatch.setattr(crosscheck, "all_backends", lambda ids=None: [raising])
    code, out, _ = run_command([*FAST, "--dtype", "float32"], capsys)
    assert code == 1
    assert "numpy-raising (cpu, float32, adapter) on paper, seed 0: RuntimeError: kernel" in out


def test_a_gradient_in_the_wrong_dtype_fails(monkeypatch, capsys):
    class Upcasting(Backend):
        def run_steps(self, *args, **kwargs):
            path, results = super().run_steps(*args, **kwargs)
            return path, [r._replace(grad_dtype="float64") for r in results]

    numpy = all_backends(["numpy"])[0]
    upcasting = Upcasting(**{**dataclasses.asdict(numpy), "id": "numpy-upcasting"})
    monkeypatch.setattr(crosscheck, "all_backends", lambda ids=None: [upcasting])
    code, out, _ = run_command([*FAST, "--dtype", "float32"], capsys)
    assert code == 1
    assert "FAIL (dtype)" in out and "gradient in float64, not float32" in out


@pytest.mark.parametrize("layout", ["npy (2, N, d)", "npy (2N, d)", "npz (N, d)", "npz (T, N, d)"])
def test_user_embeddings_are_loaded_in_each_layout(layout, tmp_path, capsys):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 2, 10, 5)).astype(np.float32)  # (T, view, N, d)
    path = tmp_path / ("mine.npz" if layout.startswith("npz") else "mine.npy")
    if layout == "npy (2, N, d)":
        np.save(path, z[0])
    elif layout == "npy (2N, d)":
        np.save(path, z[0].reshape(20, 5))
    elif layout == "npz (N, d)":
        np.savez(path, z_i=z[0, 0], z_j=z[0, 1])
    else:
        np.savez(path, z_i=z[:, 0], z_j=z[:, 1])
    argv = ["--input", str(path), "--steps", "3", "--backends", "numpy", "--no-progress"]
    code, out, _ = run_command(argv, capsys)
    assert code == 0, out
    steps = 2 if layout == "npz (T, N, d)" else 3
    assert f"paper preset, {path.name}: N = 10 pairs, d = 5, {steps} steps" in out


def test_user_embeddings_give_the_reference_loss(tmp_path, capsys):
    rng = np.random.default_rng(4)
    z_i = rng.standard_normal((10, 5))
    z_j = z_i + 0.3 * rng.standard_normal((10, 5))
    np.savez(tmp_path / "pair.npz", z_i=z_i, z_j=z_j)
    argv = ["--input", str(tmp_path / "pair.npz"), "--steps", "1", "--backends", "strict"]
    code, out, _ = run_command([*argv, "--dtype", "float64", "--no-progress"], capsys)
    assert code == 0
    reference = testing.reference_results([(z_i, z_j)], crosscheck.WEINCEConfig.paper())
    assert f"{float(reference[0].loss):.8f}" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--sizes", "1"], "--sizes"),
        (["--sizes", "8,x"], "--sizes"),
        (["--dim", "0"], "--dim"),
        (["--steps", "0"], "--steps"),
        (["--dtype", "float8"], "--dtype"),
        (["--preset", "simclr"], "--preset"),
        (["--backends", "tpu"], "--backends"),
        (["--path", "fast"], "--path"),
        (["--json", "/no/such/folder/out.json"], "--json"),
        (["--dtype", "bfloat16", "--backends", "numpy,strict"], "--dtype"),
    ],
)
def test_bad_arguments_exit_2_and_name_the_argument(argv, named, capsys):
    code, out, err = run_command([*argv, "--no-progress"], capsys)
    assert code == 2
    assert named in err and out == ""


# name: (file name, how to write it; None: no file)
BAD_INPUTS = {
    "missing": ("missing.npy", None),
    "a 1-d array": ("flat.npy", lambda path: np.save(path, np.zeros(7))),
    "an odd number of rows": ("odd.npy", lambda path: np.save(path, np.zeros((7, 3)))),
    "no z_i and z_j": ("keys.npz", lambda path: np.savez(path, a=np.zeros((4, 3)))),
    "two shapes": (
        "shapes.npz",
        lambda path: np.savez(path, z_i=np.zeros((4, 3)), z_j=np.zeros((5, 3))),
    ),
    "one pair": (
        "one.npz",
        lambda path: np.savez(path, z_i=np.zeros((1, 3)), z_j=np.zeros((1, 3))),
    ),
    "text": ("text.npy", lambda path: path.write_text("not an array")),
}


@pytest.mark.parametrize("what", BAD_INPUTS)
def test_bad_input_files_exit_2_and_say_why(what, tmp_path, capsys):
    name, write = BAD_INPUTS[what]
    path = tmp_path / name
    if write is not None:
        write(path)
    code, out, err = run_command(["--input", str(path), "--no-progress"], capsys)
    assert code == 2
    assert err.startswith("weince crosscheck: error: --input: ") and out == ""


def test_input_with_sizes_is_a_usage_error(tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.ones((2, 4, 3)))
    code, _, err = run_command(["--input", str(tmp_path / "z.npy"), "--sizes", "8"], capsys)
    assert code == 2 and "--sizes and --dim come from the file" in err


def test_a_named_backend_that_cannot_run_here_is_a_usage_error(capsys):
    absent = [b for b in all_backends() if b.skip_reason]
    if not absent:
        pytest.skip("every backend can run on this machine")
    code, _, err = run_command(["--backends", absent[0].id, "--no-progress"], capsys)
    assert code == 2
    assert f"--backends: cannot run here: {absent[0].id}: {absent[0].skip_reason}" in err


def test_progress_goes_to_stderr_and_the_table_to_stdout(capsys):
    argv = ["--sizes", "6", "--dim", "4", "--steps", "1", "--backends", "numpy,strict"]
    code, out, err = run_command([*argv, "--dtype", "float32"], capsys)
    assert code == 0
    # Not a terminal here: a line per run (a terminal gets a progress bar).
    assert err.splitlines() == [
        "[1/3] numpy float32 paper seed 0",
        "[2/3] strict float32 paper seed 0",
        "[3/3] strict-no_float64 float32 paper seed 0",
    ]
    assert "PASSED" in out


def test_a_numpy_only_run_imports_no_framework():
    script = (
        "import sys; from weince.cli import main\n"
        "code = main(['crosscheck', '--backends', 'numpy,strict', '--sizes', '4', '--dim', '3',"
        " '--steps', '1', '--no-progress'])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("setting", ["default", "high", "allow_tf32"])
def test_full_precision_matmuls_puts_every_torch_setting_back(setting):
    torch = pytest.importorskip("torch")
    from weince_core.testing import full_precision_matmuls

    matmul = torch.backends.cuda.matmul

    def settings():
        per_backend = getattr(matmul, "fp32_precision", None)
        return torch.get_float32_matmul_precision(), bool(matmul.allow_tf32), per_backend

    original = settings()
    try:
        if setting == "high":
            torch.set_float32_matmul_precision("high")
        elif setting == "allow_tf32":
            matmul.allow_tf32 = True
        before = settings()
        with full_precision_matmuls("torch"):
            assert settings()[:2] == ("highest", False)
        assert settings() == before
    finally:
        torch.set_float32_matmul_precision(original[0])
        if original[2] is not None:
            matmul.fp32_precision = original[2]
    assert settings() == original


def duplicate_batch() -> tuple[np.ndarray, np.ndarray]:
    """The batch of issue 17: 40 of 64 rows of z_i bitwise copies of one row."""
    rng = np.random.default_rng(7)
    z_i = rng.normal(size=(64, 16)).astype("f4")
    z_i[:40] = z_i[0]
    z_j = (z_i + 0.3 * rng.normal(size=z_i.shape)).astype("f4")
    return z_i, z_j


def test_the_duplicate_batch_passes_on_every_backend_and_dtype(tmp_path, capsys):
    """Copies in a batch: every backend and dtype agrees with NumPy float64 within the fixed
    tolerances (needs the exact-arithmetic rules of docs/math.md section 8)."""
    path = tmp_path / "duplicates.npy"
    np.save(path, np.stack(duplicate_batch()))
    code, out, _ = run_command(["--input", str(path), "--steps", "2", "--no-progress"], capsys)
    assert code == 0, out
    assert "PASSED: all" in out and "smallest 1 - cosine 1.0e-06" in out


@pytest.mark.parametrize("what", ["all NaN", "one NaN row", "one inf entry"])
def test_an_input_with_nan_or_inf_is_reported_and_fails(what, tmp_path, capsys):
    z = np.random.default_rng(0).normal(size=(2, 8, 4))
    if what == "all NaN":
        z[:] = np.nan
    elif what == "one NaN row":
        z[0, 3] = np.nan
    else:
        z[1, 2, 0] = np.inf
    path = tmp_path / "bad.npy"
    np.save(path, z)
    json_path = tmp_path / "report.json"
    argv = ["--input", str(path), "--steps", "1", "--backends", "numpy,strict", "--dtype"]
    code, out, _ = run_command([*argv, "float64,float32", "--json", str(json_path)], capsys)
    assert code == 1, out
    rows = 16 if what == "all NaN" else 1
    assert f"INPUT NOT FINITE: {rows} rows hold NaN or inf" in out
    assert "PASSED" not in out and "FAILED: 4 of 4 rows" in out
    assert f"input has {rows} rows with NaN or inf" in out
    assert "reference not finite: loss, grad" in out  # reported as such, not as a pass
    report = json.loads(json_path.read_text())
    assert report["passed"] is False
    for row in report["rows"]:
        assert not row["passed"] and "input" in row["failed"] and "loss" in row["failed"]
        assert row["differences"]["loss"]["reference_nonfinite"] == 1


def test_a_nan_where_the_reference_is_finite_fails(monkeypatch, capsys):
    class NaNGradient(Backend):
        def run_steps(self, *args, **kwargs):
            path, results = super().run_steps(*args, **kwargs)
            grad = results[0].grad_i.copy()
            grad[0, 0] = np.nan
            return path, [results[0]._replace(grad_i=grad), *results[1:]]

    numpy = all_backends(["numpy"])[0]
    broken = NaNGradient(**{**dataclasses.asdict(numpy), "id": "numpy-nan"})
    monkeypatch.setattr(crosscheck, "all_backends", lambda ids=None: [broken])
    code, out, _ = run_command([*FAST, "--dtype", "float32"], capsys)
    assert code == 1
    assert "numpy-nan (cpu, float32, core) on paper, seed 0: grad inf > 1.0e-03" in out


def test_the_tolerance_does_not_widen_near_the_cap(tmp_path, capsys):
    """Rows 1e-4 apart (1 - cosine about 1e-9, below the cap): the stated tolerance is the
    dtype's fixed one, as on any other input."""
    rng = np.random.default_rng(5)
    z_i = rng.normal(size=(10, 4))
    z_i[1] = z_i[0] + 1e-4 * rng.normal(size=4)
    np.savez(tmp_path / "close.npz", z_i=z_i, z_j=z_i + 0.3 * rng.normal(size=z_i.shape))
    json_path = tmp_path / "report.json"
    argv = ["--input", str(tmp_path / "close.npz"), "--steps", "1", "--backends", "strict"]
    code, out, _ = run_command([*argv, "--json", str(json_path), "--no-progress"], capsys)
    report = json.loads(json_path.read_text())
    for row in report["rows"]:
        assert row["tolerance"] == dataclasses.asdict(crosscheck.VERDICT[row["dtype"]])
        for diff in row["differences"].values():
            assert diff["passed"] == (diff["error"] <= diff["tolerance"])
    assert code == (0 if report["passed"] else 1)
    printed = [line.split() for line in out.splitlines()]
    assert ["float32", "1e-03", "1e-03", "1e-03", "1e-03"] in printed  # the tolerances


def test_jax_settings_are_put_back_after_a_run(capsys):
    """JAX's float64 switch and matmul precision hold during a run only (the test suite turns
    float64 on for itself: it is turned off here to see it come back)."""
    jax = pytest.importorskip("jax")
    from weince.cli.crosscheck import jax_float64
    from weince_core.testing import full_precision_matmuls

    before = jax.config.read("jax_enable_x64"), jax.config.jax_default_matmul_precision
    try:
        jax.config.update("jax_enable_x64", False)
        with jax_float64(), full_precision_matmuls("jax"):
            assert jax.config.read("jax_enable_x64") is True
            assert jax.config.jax_default_matmul_precision == "highest"
        assert jax.config.read("jax_enable_x64") is False
        argv = ["--backends", "jax-cpu", "--sizes", "4", "--dim", "3", "--steps", "1"]
        code, out, _ = run_command([*argv, "--dtype", "float64", "--no-progress"], capsys)
        assert code == 0, out
        assert jax.config.read("jax_enable_x64") is False
    finally:
        jax.config.update("jax_enable_x64", before[0])
    assert jax.config.jax_default_matmul_precision == before[1]
