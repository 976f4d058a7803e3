"""The CUDA C selection kernel of weince_cupy (``kernels/select.cu``) without a GPU:

1. compiled for sm_90 by NVRTC from pip (syntax, types, shared memory within the limits);
2. compiled by the host's C++ compiler against ``cuda_shim.h`` (CUDA threads as threads,
   ``__syncthreads`` a barrier) under ThreadSanitizer, and run on the degenerate batches of
   SPEC.md section 8 against the rule written plainly (a stable descending sort of the keys).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kernel_cases import CAP, degenerate_rows, excluded_columns, stable_top_k

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "adapters" / "weince_cupy" / "kernels" / "select.cu"


def _nvrtc() -> ctypes.CDLL:
    nvidia = pytest.importorskip("nvidia.cu13", reason="nvidia-cuda-nvrtc is not installed")
    libraries = sorted(Path(next(iter(nvidia.__path__))).glob("lib/libnvrtc.so*"))
    if not libraries:
        pytest.skip("nvidia-cuda-nvrtc has no libnvrtc here")
    return ctypes.CDLL(str(libraries[0]))


def test_select_cu_compiles_for_sm90_with_nvrtc():
    nvrtc = _nvrtc()
    program = ctypes.c_void_p()
    source = SOURCE.read_bytes()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"select.cu", 0, None, None) == 0
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


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to build the CPU shim of the CUDA kernels")
    binary = tmp_path_factory.mktemp("shim") / "select"
    command = [compiler, "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-DSELECT_THREADS=32"]
    command += [f"-I{HERE}"]
    command += [f"-I{SOURCE.parent}", str(HERE / "cuda_select_harness.cpp"), "-o", str(binary)]
    build = subprocess.run(command, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return binary


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
    environment = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66")
    result = subprocess.run(
        [str(harness), *map(str, args), *map(str, files)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-4000:]}"
    chosen = np.fromfile(files[2], dtype=np.int64).reshape(rows, k)
    return np.fromfile(files[3], dtype=x.dtype).reshape(rows, k), chosen


@pytest.mark.parametrize(
    ("dtype", "columns", "k"), [("float32", 40, 17), ("float32", 300, 30), ("float64", 100, 12)]
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
