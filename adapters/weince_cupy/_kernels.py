"""weince_cupy's CUDA kernels (``kernels/*.cu``), compiled by CuPy (``cupy.RawKernel``, NVRTC)
on first use, and the hooks that let the core use them.

``select.cu``: the per-row top-k selection with the tie rule (docs/math.md section 8);
``rowpass.cu``: the fused row pass (the blended logits' logsumexp and the dense gradient).
float32 and float64, on the current device and stream. Where a kernel does not apply (another
framework's arrays, more shared memory than a block may have), its hook returns ``None`` and
the core takes its own path.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import cupy
import numpy as np

import weince_core.ops

THREADS = 256  # SELECT_THREADS and ROWPASS_THREADS in the sources
_KERNELS = Path(__file__).with_name("kernels")
_MAX_SHARED = 227 * 1024  # the opt-in dynamic shared memory of a block on sm_80 and sm_90
_DEFAULT_SHARED = 48 * 1024


@cache
def _kernel(source: str, name: str) -> Any:
    """The kernel ``name`` of ``kernels/source`` (CuPy compiles it per device on first use)."""
    return cupy.RawKernel((_KERNELS / source).read_text(), name, options=("--std=c++17",))


def _floating(x: Any) -> bool:
    return isinstance(x, cupy.ndarray) and x.ndim == 2 and x.dtype in (cupy.float32, cupy.float64)


def _excluded(excluded: Any, rows: int) -> cupy.ndarray:
    if excluded is None:
        return cupy.empty((rows, 0), dtype=cupy.int64)
    return cupy.ascontiguousarray(excluded, dtype=cupy.int64)


def cap_key(cap: float, dtype: Any) -> int:
    """The ordered integer key of ``cap`` rounded to ``dtype`` (as ``ordered_key`` makes it)."""
    integer = np.int32 if np.dtype(dtype).itemsize == 4 else np.int64
    bits = int(np.asarray(cap, dtype=dtype).view(integer))
    key = bits ^ ((bits >> (8 * np.dtype(integer).itemsize - 1)) & int(np.iinfo(integer).max))
    return key + 1 if key < 0 else key


def select_top_k(
    sim: cupy.ndarray, excluded: cupy.ndarray | None, k: int, cap: float
) -> tuple[cupy.ndarray, cupy.ndarray] | None:
    """``(values, columns)`` of the ``k`` largest keys ``min(sim, cap)`` of each row's
    candidates, ties by the lower column; ``None`` where the kernel does not apply.

    Args:
        sim: ``(R, C)`` float32 or float64 on a CUDA device.
        excluded: ``(R, E)`` integer columns that are no candidates, or ``None``.
        k: how many columns per row (at most the candidates of every row).
        cap: the largest key.

    Returns:
        The values and columns (int64) in the order (key descending, column ascending).
    """
    if not _floating(sim):
        return None
    rows, width = sim.shape
    shared = k * (8 + sim.dtype.itemsize)  # the taken columns and their keys
    if not 0 < k <= width or rows == 0 or shared > _MAX_SHARED:
        return None
    sim = cupy.ascontiguousarray(sim)
    excluded = _excluded(excluded, rows)
    columns = cupy.empty((rows, k), dtype=cupy.int64)
    values = cupy.empty((rows, k), dtype=sim.dtype)
    double = sim.dtype == cupy.float64
    kernel = _kernel("select.cu", "select_top_k_f64" if double else "select_top_k_f32")
    if shared > _DEFAULT_SHARED:
        kernel.max_dynamic_shared_size_bytes = shared
    key = (np.int64 if double else np.int32)(cap_key(cap, sim.dtype))
    args = (sim, excluded, columns, values, np.int32(width), np.int32(excluded.shape[1]))
    kernel((rows,), (THREADS,), (*args, np.int32(k), key), shared_mem=shared)
    return values, columns


def row_pass(
    sim: cupy.ndarray,
    lam: cupy.ndarray,
    excluded: cupy.ndarray | None,
    config: Any,
    total_rows: int,
) -> tuple[cupy.ndarray, cupy.ndarray] | None:
    """``(P * dG/dsim / total_rows, logsumexp G)`` of the rows' blended logits; ``None`` where
    the kernel does not apply.

    Args:
        sim: ``(R, C)`` float32 or float64 on a CUDA device.
        lam: ``(R,)`` the gate per row.
        excluded: ``(R, E)`` integer columns that are no candidates, or ``None``.
        config: the loss's ``WEINCEConfig`` (``temperature``, ``beta_w``, ``eps``, ``gate``).
        total_rows: the rows the loss averages over.

    Returns:
        The dense gradient (``R x C``, 0 at the excluded columns) and each row's logsumexp.
    """
    if not _floating(sim) or sim.size == 0:
        return None
    rows, width = sim.shape
    sim = cupy.ascontiguousarray(sim)
    excluded = _excluded(excluded, rows)
    grad = cupy.empty_like(sim)
    lse = cupy.empty((rows,), dtype=sim.dtype)
    real = sim.dtype.type
    cap = real(1.0) - real(config.eps)  # rounded to sim's dtype, as the core rounds it
    scalars = (config.temperature, config.beta_w, cap, real(1.0) - cap, total_rows)
    args = (sim, cupy.ascontiguousarray(lam, dtype=sim.dtype), excluded, grad, lse)
    args += (np.int32(width), np.int32(excluded.shape[1]), *map(real, scalars))
    double = sim.dtype == cupy.float64
    kernel = _kernel("rowpass.cu", "row_pass_f64" if double else "row_pass_f32")
    kernel((rows,), (THREADS,), (*args, np.int32(config.gate != "off")))
    return grad, lse


def register() -> None:
    """Make the core use the kernels for CuPy arrays on CUDA devices."""
    if cupy.cuda.runtime.is_hip:
        return
    weince_core.ops.register_kernel(
        "top_k", lambda x, k, excluded, cap: select_top_k(x, excluded, k, cap)
    )
    weince_core.ops.register_kernel("row_pass", row_pass)
