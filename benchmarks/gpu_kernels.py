"""The Triton kernels against the framework path on a CUDA GPU: equal results, and their times.

For each 2N (default 2048 and 8192; d = 128, float32, full-precision products), on Gaussian
views and on views with copies (ties at the cap): the per-row selection (and, where CuPy is
installed, weince_cupy's CUDA C selection) of the ``paper``
preset's ``k`` (its tail size) against the core's PyTorch path, column for column, and the
fused row pass against its plain-PyTorch formulas (``rowpass.row_pass_reference``, float32,
and float64 for information).
Times are medians of CUDA-event timings. Prints a table; ``--json`` writes the numbers.
(``--device cpu`` under ``TRITON_INTERPRET=1`` runs the same checks on tiny sizes, wall-clock
timed: a check of this script without a GPU, its times meaningless.)

    python benchmarks/gpu_kernels.py --json gpu-logs/kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from weince_core import WEINCEConfig
from weince_core._fast_torch import top_k_columns as torch_top_k_columns
from weince_core.stats import tail_size
from weince_torch._triton import rowpass, select


def median_ms(step, repeats: int) -> float:
    """The median time of ``step()`` in milliseconds (CUDA events, after two warm-up calls)."""
    if torch.cuda.is_available():
        step(), step()
    times = []
    for _ in range(repeats):
        if not torch.cuda.is_available():
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def similarities(size: int, dim: int, copies: bool, device: str) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(size)
    z = torch.randn((size, dim), device=device, generator=generator)
    z[size // 2 :] = z[: size // 2] + 0.3 * torch.randn_like(z[: size // 2])
    if copies:  # a quarter of the second views are copies of their anchors: similarity 1
        z[size // 2 : size // 2 + size // 8] = z[: size // 8]
    u = torch.nn.functional.normalize(z, dim=1)
    return u @ u.T


def check(size: int, dim: int, copies: bool, repeats: int, device: str) -> dict[str, object]:
    config = WEINCEConfig.preset("paper")
    sim = similarities(size, dim, copies, device)
    rows = torch.arange(size, device=device)
    positive = (rows + size // 2) % size
    not_negative = torch.stack([positive, rows], dim=1)  # as the core passes them
    k = max(tail_size(size - 2, config), min(config.top_m, size - 2))  # as the core selects
    cap = 1.0 - config.eps
    values, columns = select.select_top_k(sim, not_negative, k, cap)
    expected = torch_top_k_columns(sim, k, not_negative, cap)
    lam = torch.rand((size,), device=device)
    excluded = rows[:, None]
    args = (config.temperature, config.beta_w, config.eps, size, True)
    grad, lse = rowpass.row_pass(sim, lam, excluded, *args)
    grad32, lse32 = rowpass.row_pass_reference(sim, lam, excluded, *args)
    grad64, _ = rowpass.row_pass_reference(sim.double(), lam.double(), excluded, *args)
    result = {
        **_cupy_select(sim, not_negative, k, cap, expected, repeats),
        **_cupy_row_pass(sim, lam, excluded, config, grad32, repeats),
        "size": size,
        "copies": copies,
        "k": k,
        "select_columns_equal": bool(torch.equal(columns, expected)),
        "select_values_equal": bool(torch.equal(values, torch.gather(sim, 1, expected))),
        # Against the formulas in float32 (the framework path's dtype, the cap rounded alike)
        # and, for information, in float64 (the cap 1 - eps rounded to float64 instead).
        "row_pass_grad_rel_error": float((grad - grad32).abs().max() / grad32.abs().max()),
        "row_pass_lse_rel_error": float((lse - lse32).abs().max() / lse32.abs().max()),
        "row_pass_grad_rel_error_vs_float64": float(
            (grad - grad64).abs().max() / grad64.abs().max()
        ),
        "select_kernel_ms": median_ms(
            lambda: select.select_top_k(sim, not_negative, k, cap), repeats
        ),
        "select_torch_ms": median_ms(
            lambda: torch_top_k_columns(sim, k, not_negative, cap), repeats
        ),
        "row_pass_kernel_ms": median_ms(
            lambda: rowpass.row_pass(sim, lam, excluded, *args), repeats
        ),
        "row_pass_torch_ms": median_ms(
            lambda: rowpass.row_pass_reference(sim, lam, excluded, *args), repeats
        ),
    }
    return result


def _cupy_select(sim, not_negative, k, cap, expected, repeats) -> dict[str, object]:
    """weince_cupy's CUDA C selection on the same matrix (shared through DLPack), where CuPy is
    installed: equal to the PyTorch path's columns, and its time against the core's CuPy path."""
    try:
        import cupy
    except ImportError:
        return {}
    from array_api_compat import array_namespace

    from weince_core._fast_numpy import top_k_columns_by_partition
    from weince_core.ops import mask_columns, native_module, selection_keys
    from weince_cupy import _kernels

    x, excluded = cupy.from_dlpack(sim), cupy.from_dlpack(not_negative)
    values, columns = _kernels.select_top_k(x, excluded, k, cap)
    xp = array_namespace(x)  # the core's own CuPy path: keys, exclusions, partition and sort

    def core_path():
        keys = mask_columns(selection_keys(x, cap, xp), excluded, xp)
        return top_k_columns_by_partition(keys, k, xp, native_module(xp))

    def timed(step):
        return median_ms(lambda: (step(), cupy.cuda.get_current_stream().synchronize()), repeats)

    return {
        "cupy_select_columns_equal": bool(cupy.array_equal(columns, cupy.from_dlpack(expected)))
        and bool(cupy.array_equal(values, cupy.take_along_axis(x, columns, axis=1))),
        "cupy_select_kernel_ms": timed(lambda: _kernels.select_top_k(x, excluded, k, cap)),
        "cupy_select_core_ms": timed(core_path),
    }


def _cupy_row_pass(sim, lam, excluded, config, expected, repeats) -> dict[str, object]:
    """weince_cupy's CUDA C row pass on the same matrix, against the float32 formulas."""
    try:
        import cupy
    except ImportError:
        return {}
    from weince_cupy import _kernels

    x, gate, columns = (cupy.from_dlpack(t) for t in (sim, lam, excluded))
    grad, _ = _kernels.row_pass(x, gate, columns, config, sim.shape[0])
    want = cupy.from_dlpack(expected)
    step = lambda: _kernels.row_pass(x, gate, columns, config, sim.shape[0])  # noqa: E731
    return {
        "cupy_row_pass_grad_rel_error": float(cupy.abs(grad - want).max() / cupy.abs(want).max()),
        "cupy_row_pass_kernel_ms": median_ms(
            lambda: (step(), cupy.cuda.get_current_stream().synchronize()), repeats
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    options = parser.parse_args()
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device (--device cpu needs TRITON_INTERPRET=1)")
    torch.backends.cuda.matmul.allow_tf32 = False
    results = [
        check(size, options.dim, copies, options.repeats, options.device)
        for size in options.sizes
        for copies in (False, True)
    ]
    for r in results:
        print(
            f"2N={r['size']:6d} copies={r['copies']!s:5} k={r['k']:5d}  select: equal "
            f"{r['select_columns_equal']} {r['select_kernel_ms']:.3f} ms (torch "
            f"{r['select_torch_ms']:.3f} ms)  row pass: rel. error "
            f"{r['row_pass_grad_rel_error']:.1e} "
            f"{r['row_pass_kernel_ms']:.3f} ms (torch {r['row_pass_torch_ms']:.3f} ms)"
        )
        if "cupy_select_columns_equal" in r:
            print(
                f"{'':31}CuPy select.cu: equal {r['cupy_select_columns_equal']} "
                f"{r['cupy_select_kernel_ms']:.3f} ms "
                f"(core CuPy path {r['cupy_select_core_ms']:.3f} ms)  rowpass.cu: rel. error "
                f"{r['cupy_row_pass_grad_rel_error']:.1e} {r['cupy_row_pass_kernel_ms']:.3f} ms"
            )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=1)
    exact = all(r["select_columns_equal"] and r["select_values_equal"] for r in results)
    exact = exact and all(r.get("cupy_select_columns_equal", True) for r in results)
    close = all(r["row_pass_grad_rel_error"] < 1e-5 for r in results)
    close = close and all(r.get("cupy_row_pass_grad_rel_error", 0) < 1e-5 for r in results)
    return 0 if exact and close else 1


if __name__ == "__main__":
    sys.exit(main())
