"""weince_cupy's CUDA C kernels (``kernels/select.cu``, ``kernels/rowpass.cu``) without a GPU:

1. compiled for sm_90 by NVRTC from pip (syntax, types, shared memory within the limits);
2. compiled by the host's C++ compiler against ``cuda_shim.h`` (CUDA threads as threads,
   ``__syncthreads`` a barrier) under ThreadSanitizer, with 32 threads a block, and run on the
   degenerate batches of docs/math.md section 8: the selection against the rule written plainly (a
   stable descending sort of the keys), the row pass against its formulas in float64.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kernel_cases import (
    CAP,
    EPS,
    degenerate_rows,
    excluded_columns,
    row_pass_expected,
    stable_top_k,
)

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parents[1] / "adapters" / "weince_cupy" / "kernels"


def _nvrtc() -> ctypes.CDLL:
    """libnvrtc from the pip package (CUDA 13's layout, nvidia/cu13, or CUDA 12's)."""
    for package in ("nvidia.cu13", "nvidia.cuda_nvrtc"):
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        for folder in module.__path__:
            libraries = sorted(Path(folder).glob("lib/libnvrtc.so*"))
            if libraries:
                return ctypes.CDLL(str(libraries[0]))
    pytest.skip("nvidia-cuda-nvrtc is not installed (the `kernels` extra)")


@pytest.mark.parametrize("name", ["select.cu", "rowpass.cu"])
def test_cuda_source_compiles_for_sm90_with_nvrtc(name):
    nvrtc = _nvrtc()
    program = ctypes.c_void_p()
    source = (KERNELS / name).read_bytes()
    created = nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, name.encode(), 0, None, None)
    assert created == 0
    options = [b"--gpu-architecture=sm_90", b"--std=c++17"]
    status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * 2)(*options))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    assert status == 0, log.value.decode()
    nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(size))
    assert size.value > 0, "no sm_90 code"
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def _build(tmp_path_factory, name: str) -> Path:
    """``cuda_{name}_harness.cpp`` built with ThreadSanitizer, 32 threads a block."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to build the CPU shim of the CUDA kernels")
    binary = tmp_path_factory.mktemp("shim") / name
    command = [compiler, "-std=c++20", "-O1", "-g", "-fsanitize=thread"]
    command += ["-DSELECT_THREADS=32", "-DROWPASS_THREADS=32", f"-I{HERE}", f"-I{KERNELS}"]
    command += [str(HERE / f"cuda_{name}_harness.cpp"), "-o", str(binary)]
    build = subprocess.run(command, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return binary


def _run(command: list, what: str) -> None:
    environment = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66")
    result = subprocess.run(
        list(map(str, command)), capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 0, f"{what}: exit {result.returncode}: {result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "select")


@pytest.fixture(scope="module")
def rowpass_harness(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "rowpass")


def _cap_key(cap: float, dtype: str) -> int:
    """The ordered integer key of ``cap`` in ``dtype`` (as ``ordered_key`` in select.cu)."""
    integer = np.int32 if dtype == "f32" else np.int64
    bits = int(np.asarray(cap, dtype=np.float32 if dtype == "f32" else np.float64).view(integer))
    key = bits ^ ((bits >> (8 * np.dtype(integer).itemsize - 1)) & int(np.iinfo(integer).max))
    return key + 1 if key < 0 else key


def run_shim(harness: Path, tmp_path: Path, x: np.ndarray, excluded: np.ndarray, k: int):
    dtype = "f32" if x.dtype == np.float32 else "f64"
    x.tofile(tmp_path / "sim.bin")
    excluded.astype(np.int64).tofile(tmp_path / "excluded.bin")
    rows, columns = x.shape
    args = [dtype, rows, columns, excluded.shape[1], k, _cap_key(CAP, dtype)]
    files = [tmp_path / name for name in ("sim.bin", "excluded.bin", "columns.bin", "values.bin")]
    _run([harness, *args, *files], "select.cu")
    chosen = np.fromfile(files[2], dtype=np.int64).reshape(rows, k)
    return np.fromfile(files[3], dtype=x.dtype).reshape(rows, k), chosen


@pytest.mark.parametrize(
    ("dtype", "columns", "k"), [("float32", 40, 17), ("float32", 300, 30), ("float64", 40, 12)]
)
def test_select_cu_follows_the_tie_rule_under_thread_sanitizer(
    harness, tmp_path, dtype, columns, k
):
    x = degenerate_rows(columns, seed=columns).astype(dtype)
    x[-1, 3] = np.nan  # a NaN row finishes too (its columns are not compared)
    excluded = excluded_columns(x.shape[0], columns)
    values, chosen = run_shim(harness, tmp_path, x, excluded, k)
    expected = stable_top_k(x[:-1], k, excluded[:-1])
    np.testing.assert_array_equal(chosen[:-1], expected)
    np.testing.assert_array_equal(values[:-1], np.take_along_axis(x[:-1], expected, axis=1))
    assert len(set(chosen[-1])) == k and not set(chosen[-1]) & set(excluded[-1])


@pytest.mark.parametrize(
    ("dtype", "columns", "blend"),
    [("float32", 300, True), ("float64", 70, True), ("float32", 50, False)],
)
def test_rowpass_cu_equals_the_formulas_under_thread_sanitizer(
    rowpass_harness, tmp_path, dtype, columns, blend
):
    rng = np.random.default_rng(columns)
    rows = 5
    x = rng.uniform(-1, 1, size=(rows, columns)).astype(dtype)
    x[0, :7] = 1.0  # above the cap: the shortfall's slope is 0 there
    x[1, :5] = np.asarray(1.0, dtype) - np.asarray(EPS, dtype)  # at the cap exactly
    x[2] = 0.5  # all equal
    x[3, ::2] = -0.0
    x[4, 9] = np.nan  # a NaN row: its logsumexp is NaN, the others are untouched
    lam = rng.uniform(0, 1, size=rows).astype(dtype)
    excluded = np.stack([np.arange(rows), np.arange(rows) + 10], axis=1).astype(np.int64)
    cap = np.asarray(1.0, dtype) - np.asarray(EPS, dtype)
    files = [tmp_path / f for f in ("sim.bin", "lam.bin", "excluded.bin", "grad.bin", "lse.bin")]
    for array, file in zip((x, lam, excluded), files[:3], strict=True):
        array.tofile(file)
    scalars = [0.2, 0.5, repr(float(cap)), repr(float(np.asarray(1.0, dtype) - cap)), 2 * rows]
    shape = ["f32" if dtype == "float32" else "f64", rows, columns, 2]
    _run([rowpass_harness, *shape, *scalars, int(blend), *files], "rowpass.cu")
    grad = np.fromfile(files[3], dtype=dtype).reshape(rows, columns)
    lse = np.fromfile(files[4], dtype=dtype)
    want_grad, want_lse = row_pass_expected(x, lam, excluded, 0.2, 0.5, 2 * rows, blend)
    rtol = 2e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(lse[:4], want_lse[:4], rtol=rtol)
    np.testing.assert_allclose(grad[:4], want_grad[:4], rtol=rtol, atol=1e-30)
    assert np.isnan(lse[4])
    assert not np.any(np.take_along_axis(grad, excluded, 1))
