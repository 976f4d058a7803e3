"""The Triton kernels' checks without a GPU: the tests of ``triton_checks`` in Triton's
interpreter (a subprocess: the interpreter must be on before Triton is imported), and every
kernel compiled for sm_90 (a subprocess without the interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, *args], env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def triton_installed() -> None:
    pytest.importorskip("triton", reason="Triton is not installed (the `kernels` extra)")


@pytest.mark.slow
def test_kernels_in_the_interpreter_equal_their_references(triton_installed):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: triton_checks runs natively in this session")
    args = [
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        str(HERE / "triton_checks"),
    ]
    result = _run(args, TRITON_INTERPRET="1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and " skipped" not in result.stdout, result.stdout[-2000:]


def test_every_kernel_compiles_for_sm90(triton_installed):
    result = _run([str(HERE / "compile_sm90.py")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.count("sm_90 cubin") == 3, result.stdout
