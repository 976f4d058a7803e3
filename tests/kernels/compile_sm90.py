"""Compile every Triton kernel of weince_torch for sm_90 (an H100/H200) without a GPU.

Run in a process without ``TRITON_INTERPRET``; prints one line per kernel (its shared memory
and registers-independent facts) and fails on any compile error.
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget

from weince_torch._triton.rowpass import _row_pass_kernel
from weince_torch._triton.select import _select_kernel

TARGET = GPUTarget("cuda", 90, 32)


def _signature(kernel, types: dict[str, str]) -> dict[str, str]:
    return {name: types.get(name, "constexpr") for name in kernel.arg_names}


def main() -> int:
    select_types = {"sim_ptr": "*fp32", "excluded_ptr": "*i64", "columns_ptr": "*i64"}
    select_types.update(values_ptr="*fp32", n_columns="i32", n_excluded="i32", k="i32")
    select_types.update(cap_key="i32", stride_sim="i32", stride_excluded="i32", stride_out="i32")
    cases = [("select fp32", _select_kernel, select_types, {"BLOCK_C": 8192, "BLOCK_K": 1024}, 8)]
    for dtype in ("fp32", "fp64"):
        types = {"sim_ptr": f"*{dtype}", "lam_ptr": f"*{dtype}", "excluded_ptr": "*i64"}
        types.update(grad_ptr=f"*{dtype}", lse_ptr=f"*{dtype}", n_columns="i32", n_excluded="i32")
        types.update(stride_sim="i32", stride_excluded="i32", stride_grad="i32")
        constants = {"TEMPERATURE": 0.2, "BETA_W": 0.5, "CAP": 0.999, "CLAMPED": 0.001}
        constants.update(TOTAL_ROWS=8192.0, BLEND=True, BLOCK_C=2048)
        cases.append((f"row pass {dtype}", _row_pass_kernel, types, constants, 8))
    for name, kernel, types, constants, warps in cases:
        source = triton.compiler.ASTSource(
            fn=kernel, signature=_signature(kernel, types), constexprs=constants
        )
        compiled = triton.compile(source, target=TARGET, options={"num_warps": warps})
        assert compiled.asm.get("cubin"), f"{name}: no cubin"
        print(
            f"{name}: sm_90 cubin {len(compiled.asm['cubin'])} bytes, "
            f"shared memory {compiled.metadata.shared} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
