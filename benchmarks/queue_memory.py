"""Time and peak memory of the explicit-negatives form with a MoCo queue, on the CPU in float32,
against a minimal queue InfoNCE in the same framework (loss and gradients of q, k and the queue).

    python benchmarks/queue_memory.py [--batch 256] [--queue 65536] [--dim 128] [--repeats 3]
                                      [--frameworks numpy torch] [--json PATH]

Each measurement runs in a fresh process. Peak memory is what the first call adds above the
inputs: NumPy's allocations as ``tracemalloc`` traces them, PyTorch's as the growth of the
process's resident high-water mark (``ru_maxrss``). Times are the fastest of ``--repeats``
calls after that first one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

LOSSES = ("weince", "infonce")


def _inputs(batch: int, queue: int, dim: int):
    import numpy as np

    rng = np.random.default_rng(0)
    q = rng.normal(size=(batch, dim)).astype(np.float32)
    k = (q + 0.5 * rng.normal(size=(batch, dim))).astype(np.float32)
    n = rng.normal(size=(queue, dim)).astype(np.float32)
    return q, k, n


def _numpy_infonce(q, k, n, temperature: float = 0.5):
    """Queue InfoNCE (MoCo's loss) and its gradients, by hand: the minimal NumPy baseline."""
    import numpy as np

    def unit(x):
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / norm, norm

    (u_q, s_q), (u_k, s_k), (u_n, s_n) = unit(q), unit(k), unit(n)
    logits = np.concatenate([np.sum(u_q * u_k, axis=1, keepdims=True), u_q @ u_n.T], axis=1)
    logits /= temperature
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(total[:, 0]) - np.log(logits[:, 0])))
    logits /= total  # the softmax, then dL/dlogits
    logits[:, 0] -= 1.0
    logits /= temperature * q.shape[0]
    d_pos, d_neg = logits[:, :1], logits[:, 1:]
    g_q = d_pos * u_k + d_neg @ u_n
    g_k, g_n = d_pos * u_q, d_neg.T @ u_q

    def through_norm(g, u, s):
        return (g - u * np.sum(u * g, axis=1, keepdims=True)) / s

    return loss, (
        through_norm(g_q, u_q, s_q),
        through_norm(g_k, u_k, s_k),
        through_norm(g_n, u_n, s_n),
    )


def _torch_infonce(q, k, n, temperature: float = 0.5):
    import torch
    import torch.nn.functional as F

    q, k, n = (x.detach().requires_grad_() for x in (q, k, n))
    u_q, u_k, u_n = F.normalize(q), F.normalize(k), F.normalize(n)
    logits = torch.cat([(u_q * u_k).sum(1, keepdim=True), u_q @ u_n.T], dim=1) / temperature
    loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
    loss.backward()
    return loss, (q.grad, k.grad, n.grad)


def measure(framework: str, loss: str, batch: int, queue: int, dim: int, repeats: int) -> dict:
    """One measurement, in this process: ``{"ms": ..., "peak_mib": ...}``."""
    import resource
    import tracemalloc

    import weince_core as wc

    q, k, n = _inputs(batch, queue, dim)
    config = wc.WEINCEConfig.paper()
    if framework == "torch":
        import torch

        q, k, n = (torch.asarray(x) for x in (q, k, n))
    state = wc.init_state(config, like=q)
    if loss == "weince":

        def run():
            return wc.explicit_negatives_value_and_grad(q, k, n, state, config)

    else:
        run = (
            (lambda: _numpy_infonce(q, k, n))
            if framework == "numpy"
            else (lambda: _torch_infonce(q, k, n))
        )
    if framework == "numpy":
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"ms": 1000 * min(times), "peak_mib": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frameworks", nargs="+", default=["numpy", "torch"])
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "LOSS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = (args.batch, args.queue, args.dim, args.repeats)
    if args.one:
        print(json.dumps(measure(*args.one, *sizes)))
        return 0
    print(f"N = {args.batch}, queue L = {args.queue}, d = {args.dim}, float32, CPU")
    figures: dict[str, dict] = {}
    for framework in args.frameworks:
        for loss in LOSSES:
            command = [sys.executable, __file__, "--one", framework, loss]
            command += [f"--batch={args.batch}", f"--queue={args.queue}", f"--dim={args.dim}"]
            command += [f"--repeats={args.repeats}"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            figures[f"{framework}/{loss}"] = result = json.loads(output.splitlines()[-1])
            print(
                f"{framework:6} {loss:8} {result['ms']:9.0f} ms  peak {result['peak_mib']:6.0f} MiB"
            )
        ratio = figures[f"{framework}/weince"]["ms"] / figures[f"{framework}/infonce"]["ms"]
        print(f"{framework:6} WEINCE / InfoNCE time: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
