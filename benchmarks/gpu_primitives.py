"""Time the selections WEINCE needs at 2N = 8192 on a GPU, one primitive at a time.

The per-row tail needs the k = 819 largest negatives of each of 8192 rows; the beta_t tail the
k_g = 3,353,855 largest of all 8192 * 8190 negatives. This script times the candidate kernels
for both, so that the choice in weince_core.ops rests on measurements:

    python benchmarks/gpu_primitives.py [--size 8192] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable


def torch_median_ms(run: Callable[[], object], repeats: int = 10) -> float:
    import torch

    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def jax_median_ms(run: Callable[[], object], repeats: int = 10) -> float:
    import time

    for _ in range(2):
        run().block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run().block_until_ready()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="2N")
    parser.add_argument("--json")
    args = parser.parse_args()
    size = args.size
    k = max(32, round(0.1 * (size - 2)))
    k_g = int(0.05 * size * (size - 2))
    results: dict[str, float] = {}

    import torch

    torch.manual_seed(0)
    x = torch.randn(size, 128, device="cuda")
    x = torch.nn.functional.normalize(x, dim=1)
    sim = x @ x.T
    flat = sim.reshape(-1)
    torch_cases = {
        "torch matmul 2N x 2N (fp32)": lambda: x @ x.T,
        "torch exp pass": lambda: torch.exp(sim),
        f"torch row topk k={k}": lambda: torch.topk(sim, k, dim=1),
        f"torch row topk k={k} unsorted": lambda: torch.topk(sim, k, dim=1, sorted=False),
        "torch row sort": lambda: torch.sort(sim, dim=1, descending=True),
        f"torch flat topk k_g={k_g}": lambda: torch.topk(flat, k_g),
        f"torch flat topk k_g={k_g} unsorted": lambda: torch.topk(flat, k_g, sorted=False),
        "torch flat kthvalue": lambda: torch.kthvalue(flat, flat.numel() - k_g),
        "torch flat sort": lambda: torch.sort(flat, descending=True),
        "torch histc 4096 bins": lambda: torch.histc(flat, bins=4096, min=-1, max=1),
    }
    for name, run in torch_cases.items():
        results[name] = torch_median_ms(run)
        print(f"{name:45s} {results[name]:8.3f} ms", flush=True)

    import jax
    import jax.numpy as jnp

    jx = jax.device_put(jnp.asarray(x.cpu().numpy()), jax.devices("gpu")[0])
    jsim = jax.jit(lambda a: a @ a.T)(jx)
    from weince_core import ops

    jax_cases = {
        f"jax lax.top_k rows k={k}": jax.jit(lambda s: jax.lax.top_k(s, k)[0]),
        f"jax rows by threshold k={k} (ops)": jax.jit(
            lambda s: ops._top_k_rows_by_threshold(s, k)[0]
        ),
        f"jax ops.top_k rows k={k} (the path taken)": jax.jit(lambda s: ops.top_k(s, k, jnp)[0]),
        f"jax approx_max_k rows k={k}": jax.jit(lambda s: jax.lax.approx_max_k(s, k)[0]),
        f"jax lax.top_k flat k_g={k_g}": jax.jit(lambda s: jax.lax.top_k(s.reshape(-1), k_g)[0]),
        "jax sort rows": jax.jit(lambda s: jnp.sort(s, axis=1)),
        "jax sort flat": jax.jit(lambda s: jnp.sort(s.reshape(-1))),
    }
    for name, fn in jax_cases.items():
        results[name] = jax_median_ms(lambda fn=fn: fn(jsim))
        print(f"{name:45s} {results[name]:8.3f} ms", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
