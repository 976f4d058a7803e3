"""Time ``weince_cupy.value_and_grad`` against a minimal PyTorch InfoNCE on the same GPU.

Forward + backward, median of repeated runs timed with CUDA events, both in this process:

    python benchmarks/cupy_speed.py --sizes 2048 8192 --dim 128 [--json PATH]

The ratio is what the CuPy goal is stated in (at most 2.0x at 2N = 8192, d = 128, fp32).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable

import cupy

import weince_core as wc
import weince_cupy


def cuda_median_ms(run: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def minimal_torch_infonce_ms(n: int, dim: int, repeats: int) -> float | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    z_i = torch.randn(n, dim, device="cuda", requires_grad=True)
    z_j = torch.randn(n, dim, device="cuda", requires_grad=True)
    target = (torch.arange(2 * n, device="cuda") + n) % (2 * n)
    eye = torch.eye(2 * n, dtype=torch.bool, device="cuda")

    def step() -> None:
        z = F.normalize(torch.cat([z_i, z_j]), dim=1)
        logits = (z @ z.T / 0.5).masked_fill(eye, float("-inf"))
        F.cross_entropy(logits, target).backward()

    return cuda_median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192], help="2N")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        n = size // 2
        floor = minimal_torch_infonce_ms(n, args.dim, args.repeats)
        z_i = cupy.random.standard_normal((n, args.dim), dtype=cupy.float32)
        z_j = z_i + 0.5 * cupy.random.standard_normal((n, args.dim), dtype=cupy.float32)
        for preset in ("infonce", "blend", "paper"):
            config = wc.WEINCEConfig.preset(preset)
            state = weince_cupy.init_state(config)
            cupy.get_default_memory_pool().free_all_blocks()
            step = functools.partial(weince_cupy.value_and_grad, z_i, z_j, state, config)
            ms = cuda_median_ms(step, args.repeats)
            ratio = ms / floor if floor else float("nan")
            rows.append(
                {"2N": size, "preset": preset, "ms": ms, "torch_infonce_ms": floor, "ratio": ratio}
            )
            print(
                f"2N={size:6d} {preset:8s} cupy {ms:9.2f} ms  torch InfoNCE {floor or 0:7.2f} ms"
                f"  ratio {ratio:6.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
