"""Time ``WEINCELoss`` (forward + backward) against a minimal PyTorch InfoNCE in one process.

    python benchmarks/torch_speed.py --sizes 512 2048 --dim 128 --device cpu [--json PATH]
    python benchmarks/torch_speed.py --sizes 2048 8192 --device cuda --dtype bfloat16 --compile

Rows: the minimal InfoNCE (normalize, matmul, masked cross_entropy), then ``WEINCELoss`` with the
``infonce``, ``blend`` and ``paper`` presets (and, with ``--compile``, the same criterion under
``torch.compile(fullgraph=True)``). The methods take turns, one timed step each per round, so
drift in the machine's speed hits them alike; each time is the median over the rounds. CUDA
times come from CUDA events around each step. Peak memory: ``torch.cuda.max_memory_allocated``
of one step on CUDA (inputs included); on CPU the growth of peak resident memory
(VmHWM, or ``ru_maxrss``) of one step, measured in a fresh child process per method so that
methods do not hide each other's peaks. The ratio column is time / minimal InfoNCE time; the goals
(README of issue 3): paper <= 2.0x on 2 CPU cores at 2N = 2048, <= 1.5x on an H100 at 2N = 8192.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from weince_torch import WEINCEConfig, WEINCELoss

PRESETS = ("infonce", "blend", "paper")
# ../shared/BASELINES.md: the published WEINCE implementation, paper preset, fp32, d = 128.
PUBLISHED_MS = {
    ("cuda", 512): 11.2,
    ("cuda", 2048): 56.1,
    ("cpu", 512): 827.0,
    ("cpu", 2048): 20959.0,
}

Step = Callable[[], None]


def inputs(size: int, dim: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Two correlated views of ``size // 2`` rows, leaves that require grad."""
    generator = torch.Generator(device=device).manual_seed(0)
    n = size // 2
    z_i = torch.randn(n, dim, device=device, generator=generator)
    z_j = z_i + 0.5 * torch.randn(n, dim, device=device, generator=generator)
    return z_i.to(dtype).requires_grad_(True), z_j.to(dtype).requires_grad_(True)


def minimal_infonce_step(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 0.5) -> Step:
    size = 2 * z_i.shape[0]
    target = (torch.arange(size, device=z_i.device) + size // 2) % size
    self_mask = torch.eye(size, dtype=torch.bool, device=z_i.device)

    def step() -> None:
        z_i.grad = z_j.grad = None
        z = F.normalize(torch.cat([z_i, z_j]), dim=1)
        logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
        F.cross_entropy(logits, target).backward()

    return step


def weince_step(z_i: torch.Tensor, z_j: torch.Tensor, preset: str, compiled: bool) -> Step:
    criterion = WEINCELoss(WEINCEConfig.preset(preset)).to(z_i.device)
    loss_of = torch.compile(criterion, fullgraph=True) if compiled else criterion

    def step() -> None:
        z_i.grad = z_j.grad = None
        loss_of(z_i, z_j).backward()

    return step


def methods(
    z_i: torch.Tensor, z_j: torch.Tensor, presets: list[str], compile_too: bool
) -> dict[str, Step]:
    steps = {"minimal InfoNCE": minimal_infonce_step(z_i, z_j)}
    for preset in presets:
        steps[f"WEINCE {preset}"] = weince_step(z_i, z_j, preset, compiled=False)
    if compile_too:
        for preset in presets:
            steps[f"WEINCE {preset} compiled"] = weince_step(z_i, z_j, preset, compiled=True)
    return steps


def time_round_robin(steps: dict[str, Step], device: str, repeats: int, warmup: int) -> dict:
    for step in steps.values():
        for _ in range(warmup):
            step()
    if device == "cuda":
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(time_one_ms(step, device))
    return {name: statistics.median(values) for name, values in times.items()}


def time_one_ms(step: Step, device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    step()
    return (time.perf_counter() - begin) * 1e3


def cuda_peak_gb(step: Step) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def cpu_peak_growth_gb(name: str, args: argparse.Namespace, size: int) -> float:
    """Peak resident memory added by one step of ``name``, in a fresh child process."""
    command = [sys.executable, __file__, "--memory-probe", name, "--sizes", str(size)]
    command += ["--dim", str(args.dim), "--dtype", args.dtype, "--threads", str(args.threads)]
    command += ["--presets", *args.presets]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def peak_rss_kib() -> int:
    """The process's peak resident memory: VmHWM where Linux has it (it can be reset, and unlike
    ``ru_maxrss`` it does not start at the parent's peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def memory_probe(name: str, args: argparse.Namespace) -> None:
    z_i, z_j = inputs(args.sizes[0], args.dim, "cpu", getattr(torch, args.dtype))
    step = methods(z_i, z_j, args.presets, compile_too=name.endswith("compiled"))[name]
    try:  # Linux: reset the peak to the current resident size, so the step's own peak shows
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass
    before = peak_rss_kib()
    step()
    print((peak_rss_kib() - before) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="2N values")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd presets")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak memory column")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe, args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), {args.dtype}, d = {args.dim}")
    print(f"{'2N':>6}  {'method':26s} {'ms':>9} {'ratio':>6} {'peak GB':>8} {'vs published':>13}")
    rows = []
    for size in args.sizes:
        z_i, z_j = inputs(size, args.dim, args.device, getattr(torch, args.dtype))
        steps = methods(z_i, z_j, args.presets, args.compile)
        medians = time_round_robin(steps, args.device, args.repeats, args.warmup)
        floor = medians["minimal InfoNCE"]
        for name, step in steps.items():
            peak = None
            if not args.no_memory:
                peak = (
                    cuda_peak_gb(step)
                    if args.device == "cuda"
                    else cpu_peak_growth_gb(name, args, size)
                )
            published = PUBLISHED_MS.get((args.device, size)) if name == "WEINCE paper" else None
            row = {
                "2N": size,
                "method": name,
                "device": args.device,
                "dtype": args.dtype,
                "ms": medians[name],
                "ratio": medians[name] / floor,
                "peak_gb": peak,
                "speedup_vs_published": published / medians[name] if published else None,
            }
            rows.append(row)
            peak_text = f"{peak:8.3f}" if peak is not None else f"{'-':>8}"
            speedup = f"{row['speedup_vs_published']:12.1f}x" if published else f"{'':>13}"
            print(
                f"{size:6d}  {name:26s} {row['ms']:9.2f} {row['ratio']:6.2f} {peak_text} {speedup}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
