"""Time the WEINCE loss (forward + backward) per installed backend, device, dtype, preset and size.

For every installed framework (PyTorch with ``weince_torch``, JAX with ``weince_jax``, CuPy with
``weince_cupy``) and each of its devices, one forward + backward step is timed for the ``paper``,
``blend`` and ``infonce`` presets and for the *floor*: a minimal hand-written InfoNCE in the same
framework (normalize, ``U U^T / 0.5``, diagonal masked, cross-entropy against the positive
``(a + N) mod 2N``; autograd in PyTorch, ``jax.value_and_grad`` under ``jax.jit`` in JAX, a
hand-written gradient in CuPy). Every ratio is time / floor time of the same framework, device,
dtype and size, measured in the same process.

With ``--compile`` (PyTorch only), the floor and every preset also run under
``torch.compile(fullgraph=True)``: extra rows ``floor compiled``, ``paper compiled``, ... whose
ratio is, like every other row's, to the eager floor (compiled against compiled: divide by the
``floor compiled`` row). ``--compile reduce-overhead`` (or another ``torch.compile`` mode)
compiles in that mode: on a GPU, ``reduce-overhead`` replays CUDA graphs, which removes the
launch cost that bounds small batches. Compilation happens in the warm-up steps and is not
timed.

Method: inputs are two correlated views of ``N = 2N / 2`` rows of dimension ``d``, the same
NumPy draw for every framework: Gaussian (``--inputs random``, the default), or tight clusters
of unequal spread as late in training (``--inputs clustered``: rows of a tight cluster hold
many of the batch's largest similarities, the hard case for the tail selections). Each step is
warmed up (JAX compilation included), then the methods take turns, one timed step each per
round, so drift in the machine's speed hits them alike. Synchronization: CUDA events around the
step for PyTorch on CUDA and for CuPy; wall clock around ``jax.block_until_ready`` for JAX;
wall clock for PyTorch on CPU. Reported: median, min, max and interquartile range over the
rounds. Matrix products run in full float32 (TF32 off). Peak memory: on CUDA with PyTorch,
``torch.cuda.max_memory_allocated`` over one step (inputs included); on CPU, the growth of the
process's peak resident memory during the method's warm-up steps (on Linux, freed heap memory
is handed back and the peak, VmHWM, reset before each method; elsewhere ``ru_maxrss``,
process-wide, so a method that peaks below an earlier one shows 0), compilation included;
elsewhere not measured.

Defaults: 2N in {512, 2048, 8192} on GPU and {512, 2048} on CPU, d = 128, float32 everywhere
plus bfloat16 on GPU (CuPy: float32 only).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib.util
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from weince.cli.args import even_size, json_rows, output_file, positive_int
from weince.cli.output import table, track, write_json
from weince_core.testing import ADAPTERS, Backend, all_backends, full_precision_matmuls

BACKENDS = tuple(ADAPTERS)  # the frameworks with an adapter: torch, jax, cupy
DEVICES = ("cpu", "cuda")
# The backend registry's kind of each framework on each --devices value (the first device).
KINDS = {
    ("torch", "cpu"): "torch-cpu",
    ("torch", "cuda"): "torch-cuda",
    ("jax", "cpu"): "jax-cpu",
    ("jax", "cuda"): "jax-gpu",
    ("cupy", "cuda"): "cupy",
}
# The keys a row of an earlier --json file is matched and compared by (--compare).
ROW_KEYS = ("backend", "device", "dtype", "preset", "size", "dim", "median_ms", "ratio")
DTYPES = ("float32", "bfloat16", "float16")
PRESETS = ("infonce", "blend", "paper")
FLOOR = "floor"
COMPILED = " compiled"  # suffix of the methods run under torch.compile (--compile)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
INPUTS = ("random", "clustered")
METHODS = (FLOOR, *PRESETS)
SIZES = {"cpu": [512, 2048], "cuda": [512, 2048, 8192]}
TEMPERATURE = 0.5

Step = Callable[[], Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``weince bench``.

    Args:
        parser: the command's parser, to which the options are added.
    """
    parser.add_argument(
        "--sizes",
        type=even_size,
        nargs="+",
        metavar="2N",
        help="2N values, each even and >= 4 (default: 512 2048 on CPU, 512 2048 8192 on GPU)",
    )
    parser.add_argument(
        "--dim", type=positive_int(1), default=128, help="embedding dimension d (default 128)"
    )
    parser.add_argument(
        "--repeats", type=positive_int(1), default=20, help="timed rounds (default 20)"
    )
    parser.add_argument(
        "--warmup", type=positive_int(1), default=3, help="untimed steps first (default 3)"
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, help="only these frameworks (default: installed)"
    )
    parser.add_argument(
        "--devices", nargs="+", choices=DEVICES, help="only these devices (default: available)"
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, help="default: float32, plus bfloat16 on GPU"
    )
    parser.add_argument(
        "--presets", nargs="+", choices=PRESETS, default=list(PRESETS), help="WEINCE presets"
    )
    parser.add_argument(
        "--inputs", choices=INPUTS, default="random", help="Gaussian views (default) or clusters"
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        metavar="MODE",
        help="PyTorch: also time the floor and presets under torch.compile (extra rows); "
        f"MODE: one of {', '.join(COMPILE_MODES)} (default: default)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int(1),
        help="PyTorch CPU threads (default: PyTorch's own choice)",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="PATH", help="write the rows (and metadata) as JSON"
    )
    parser.add_argument(
        "--plot", type=output_file, metavar="PATH", help="log-log plot of time vs 2N (PNG, ...)"
    )
    parser.add_argument(
        "--compare",
        type=json_rows(ROW_KEYS, "weince bench"),
        metavar="FILE",
        help="show the change against an earlier --json file (read and checked first)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


# ---- statistics and timing ---------------------------------------------------------------------


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of one method's timed rounds.

    Args:
        times_ms: the timed rounds, in milliseconds (at least one).

    Returns:
        ``median_ms``, ``min_ms``, ``max_ms``, ``q1_ms`` and ``q3_ms``.
    """
    ordered = sorted(times_ms)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median_ms": statistics.median(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "q1_ms": q1,
        "q3_ms": q3,
    }


def reset_peak_rss() -> bool:
    """Linux: set the process's peak resident memory (VmHWM) back to its current size, after
    handing freed heap memory back (glibc's ``malloc_trim``: else a method reuses memory that an
    earlier one freed, and its growth does not show). False where the peak cannot be reset.

    Returns:
        False where the peak cannot be reset.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """The process's peak resident memory: VmHWM where Linux has it, else ``ru_maxrss``.

    Returns:
        The peak, in MiB.
    """
    try:
        with open("/proc/self/status") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration):
        scale = 2**20 if sys.platform == "darwin" else 2**10  # macOS reports bytes, Linux KiB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def views(size: int, dim: int, inputs: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Two correlated float32 views of ``size // 2`` rows: Gaussian, or 10 clusters whose
    spreads range from 0.2 to 2 (``clustered``).

    Args:
        size: ``2N``, the rows of both views.
        dim: the embedding dimension ``d``.
        inputs: ``"random"`` or ``"clustered"``.

    Returns:
        ``(z_i, z_j)``, each ``(N, d)`` float32, the same draw every time.
    """
    rng = np.random.default_rng(0)
    n = size // 2
    if inputs == "clustered":
        labels = rng.integers(0, 10, n)
        centers = rng.standard_normal((10, dim))[labels]
        z_i = centers + np.linspace(0.2, 2.0, 10)[labels, None] * rng.standard_normal((n, dim))
        z_j = z_i + 0.3 * rng.standard_normal((n, dim))
    else:
        z_i = rng.standard_normal((n, dim))
        z_j = z_i + 0.5 * rng.standard_normal((n, dim))
    return z_i.astype(np.float32), z_j.astype(np.float32)


# (z_i, z_j as NumPy float32, dtype, presets, torch.compile mode or None) -> steps by method
MakeSteps = Callable[[np.ndarray, np.ndarray, str, list[str], "str | None"], dict[str, Step]]


@dataclass
class Target:
    """One framework on one device: how to build its steps and time one of them."""

    backend: str
    device: str
    device_name: str
    dtypes: list[str]
    make_steps: MakeSteps
    time_ms: Callable[[Step], float]
    gpu_peak_mib: Callable[[Step], float] | None = None


def wall_ms(step: Step, finish: Callable[[Any], Any] = lambda out: out) -> float:
    """The wall-clock time of one step, in milliseconds.

    Args:
        step: the step.
        finish: waits for the step's result (``jax.block_until_ready``).

    Returns:
        The time.
    """
    begin = time.perf_counter()
    finish(step())
    return (time.perf_counter() - begin) * 1e3


# ---- PyTorch -----------------------------------------------------------------------------------


def torch_target(backend: Backend) -> Target:
    """PyTorch on the registry's ``backend`` (``torch-cpu`` or ``torch-cuda``).

    Args:
        backend: the device, from ``weince_core.testing.all_backends``.

    Returns:
        The target: PyTorch's floor and ``WEINCELoss`` per preset, with autograd.
    """
    import torch
    import torch.nn.functional as F

    from weince_torch import WEINCEConfig, WEINCELoss

    device = backend.device or "cpu"

    def make_steps(
        a: np.ndarray, b: np.ndarray, dtype: str, presets: list[str], compiled: str | None
    ) -> dict[str, Step]:
        z_i, z_j = (
            torch.from_numpy(z).to(device=device, dtype=getattr(torch, dtype)).requires_grad_(True)
            for z in (a, b)
        )
        size = 2 * len(a)
        target = (torch.arange(size, device=device) + size // 2) % size
        self_mask = torch.eye(size, dtype=torch.bool, device=device)

        def floor(z_i: Any, z_j: Any) -> Any:
            z = F.normalize(torch.cat([z_i, z_j]), dim=1)
            logits = (z @ z.T / TEMPERATURE).masked_fill(self_mask, float("-inf"))
            return F.cross_entropy(logits, target)

        def loss_of(method: str) -> Any:  # a fresh criterion each: no state shared
            return floor if method == FLOOR else WEINCELoss(WEINCEConfig.preset(method)).to(device)

        methods = [FLOOR, *presets]
        losses = {method: loss_of(method) for method in methods}
        if compiled:
            torch._dynamo.reset()  # static shapes, compiled afresh for each size and dtype
            warnings.filterwarnings("ignore", "Dynamo detected a call to a `functools.lru_cache")
            for method in methods:
                compiled_loss = torch.compile(
                    loss_of(method), fullgraph=True, dynamic=False, mode=compiled
                )
                losses[method + COMPILED] = compiled_loss

        def step(loss: Any) -> Step:
            def run() -> None:
                z_i.grad = z_j.grad = None
                loss(z_i, z_j).backward()

            return run

        return {method: step(loss) for method, loss in losses.items()}

    def cuda_ms(step: Step) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def cuda_peak_mib(step: Step) -> float:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20

    if device == "cpu":
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        return Target("torch", "cpu", name, ["float32"], make_steps, wall_ms)
    name = torch.cuda.get_device_name(device)
    return Target(
        "torch", "cuda", name, ["float32", "bfloat16"], make_steps, cuda_ms, cuda_peak_mib
    )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's CPU thread count set to ``threads`` while the block runs, restored afterwards.

    Args:
        threads: the count; ``None``: left alone.

    Yields:
        Nothing: the block runs with the setting.
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---- JAX ---------------------------------------------------------------------------------------


def jax_target(backend: Backend) -> Target:
    """JAX on the registry's ``backend`` (``jax-cpu`` or ``jax-gpu``).

    Args:
        backend: the device, from ``weince_core.testing.all_backends``.

    Returns:
        The target: JAX's floor and ``weince_jax.weince_loss`` per preset, each step
        ``jax.value_and_grad`` under ``jax.jit``.
    """
    import jax
    import jax.numpy as jnp

    import weince_jax
    from weince_jax import WEINCEConfig

    device = backend.jax_device()

    def minimal_infonce(z_i: Any, z_j: Any) -> Any:
        size = 2 * z_i.shape[0]
        z = jnp.concatenate([z_i, z_j]).astype(jnp.promote_types(z_i.dtype, jnp.float32))
        u = z / jnp.linalg.norm(z, axis=1, keepdims=True)
        logits = jnp.where(jnp.eye(size, dtype=bool), -jnp.inf, u @ u.T / TEMPERATURE)
        target = (jnp.arange(size) + size // 2) % size
        log_prob = jax.nn.log_softmax(logits, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_prob, target[:, None], axis=1))

    grad_floor = jax.value_and_grad(minimal_infonce, argnums=(0, 1))
    grad_weince = jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)

    def make_steps(
        a: np.ndarray, b: np.ndarray, dtype: str, presets: list[str], compiled: str | None
    ) -> dict[str, Step]:
        with jax.default_device(device):
            z_i, z_j = (jax.device_put(jnp.asarray(z, getattr(jnp, dtype)), device) for z in (a, b))
            floor = jax.jit(grad_floor)
            steps: dict[str, Step] = {FLOOR: lambda: floor(z_i, z_j)}
            for preset in presets:
                config = WEINCEConfig.preset(preset)
                state = jax.device_put(weince_jax.init_state(config), device)

                @jax.jit
                def step(z_i: Any, z_j: Any, state: Any, config: Any = config) -> Any:
                    (loss, (new_state, _)), grads = grad_weince(z_i, z_j, state, config)
                    return loss, grads, new_state

                steps[preset] = functools.partial(step, z_i, z_j, state)
        return steps

    def block_ms(step: Step) -> float:
        return wall_ms(step, jax.block_until_ready)

    kind = "cpu" if device.platform == "cpu" else "cuda"
    dtypes = ["float32"] if kind == "cpu" else ["float32", "bfloat16"]
    name = f"{device.platform} ({device.device_kind})"
    return Target("jax", kind, name, dtypes, make_steps, block_ms)


# ---- CuPy --------------------------------------------------------------------------------------


def minimal_infonce_value_and_grad(xp: Any, z_i: Any, z_j: Any) -> tuple[Any, Any, Any]:
    """The floor for a framework without autograd (CuPy; any NumPy-like ``xp``): the minimal
    InfoNCE loss and its gradient with respect to ``z_i`` and ``z_j``, written by hand.

    Args:
        xp: the array namespace (``cupy``, ``numpy``).
        z_i: the first views, ``(N, d)``.
        z_j: the second views, ``(N, d)``.

    Returns:
        ``(loss, dL/dz_i, dL/dz_j)``.
    """
    n = z_i.shape[0]
    size = 2 * n
    z = xp.concatenate([z_i, z_j])
    norm = xp.sqrt((z * z).sum(axis=1, keepdims=True))
    u = z / norm
    logits = (u @ u.T) / TEMPERATURE
    rows = xp.arange(size)
    target = (rows + n) % size
    logits[rows, rows] = -xp.inf
    top = logits.max(axis=1, keepdims=True)
    exp = xp.exp(logits - top)
    total = exp.sum(axis=1, keepdims=True)
    loss = (top[:, 0] + xp.log(total[:, 0]) - logits[rows, target]).mean()
    g = exp / total  # softmax; d loss / d logits = (softmax - onehot) / 2N
    g[rows, target] -= 1
    g /= size
    du = (g + g.T) @ u / TEMPERATURE
    dz = (du - u * (du * u).sum(axis=1, keepdims=True)) / norm
    return loss, dz[:n], dz[n:]


def cupy_target(backend: Backend) -> Target:
    """CuPy on the registry's ``backend`` (``cupy``, a CUDA device).

    Args:
        backend: the device, from ``weince_core.testing.all_backends``.

    Returns:
        The target: the hand-written floor and ``weince_cupy.value_and_grad`` per preset.
    """
    import cupy

    import weince_core as wc
    import weince_cupy

    index = backend.device_index()

    def make_steps(
        a: np.ndarray, b: np.ndarray, dtype: str, presets: list[str], compiled: str | None
    ) -> dict[str, Step]:
        with cupy.cuda.Device(index):
            z_i, z_j = cupy.asarray(a, dtype), cupy.asarray(b, dtype)
            steps: dict[str, Step] = {FLOOR: lambda: minimal_infonce_value_and_grad(cupy, z_i, z_j)}
            for preset in presets:
                config = wc.WEINCEConfig.preset(preset)
                state = weince_cupy.init_state(config)
                steps[preset] = functools.partial(
                    weince_cupy.value_and_grad, z_i, z_j, state, config
                )
        return steps

    def cuda_ms(step: Step) -> float:
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        step()
        end.record()
        end.synchronize()
        return float(cupy.cuda.get_elapsed_time(start, end))

    name = backend.describe().partition(", ")[2]
    return Target("cupy", "cuda", name, ["float32"], make_steps, cuda_ms)


TARGETS: dict[str, Callable[[Backend], Target]] = {
    "torch": torch_target,
    "jax": jax_target,
    "cupy": cupy_target,
}


def installed(backend: str) -> bool:
    """Whether a framework and its adapter are installed (nothing is imported).

    Args:
        backend: ``torch``, ``jax`` or ``cupy``.

    Returns:
        True when both are.
    """
    return all(importlib.util.find_spec(m) is not None for m in (backend, ADAPTERS[backend]))


@contextlib.contextmanager
def settings(module: str, threads: int | None) -> Iterator[None]:
    """The process-wide settings of a run, put back afterwards: float32 products in full
    precision (no TF32) and, for PyTorch, the CPU thread count.

    Args:
        module: the framework, ``torch``, ``jax`` or ``cupy``.
        threads: PyTorch's CPU threads (``None``: PyTorch's own choice).

    Yields:
        Nothing: the block runs with the settings.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(full_precision_matmuls(module))
        if module == "torch":
            stack.enter_context(torch_threads(threads))
        yield


# ---- the run -----------------------------------------------------------------------------------


def bench_target(
    target: Target, args: argparse.Namespace, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Every row of one framework on one device: per dtype and size, the floor and presets.

    Args:
        target: the framework on its device.
        args: the command's arguments (sizes, dim, dtypes, presets, repeats, ...).
        progress: a progress bar over the dtypes and sizes on stderr.

    Returns:
        The rows, one per dtype, size and method.
    """
    dtypes = target.dtypes if args.dtypes is None else args.dtypes
    if target.backend == "cupy":
        skipped = [d for d in dtypes if d != "float32"]
        if skipped:
            print(f"  (cupy: {', '.join(skipped)} not supported by the benchmark, skipped)")
        dtypes = [d for d in dtypes if d == "float32"]
    sizes = args.sizes or SIZES[target.device]
    rows = []
    cases = [(dtype, size) for dtype in dtypes for size in sizes]
    where = f"{target.backend} {target.device}"
    for dtype, size in track(
        cases, "bench", enabled=progress, label=lambda c: f"{where} {c[0]} 2N = {c[1]}"
    ):
        z_i, z_j = views(size, args.dim, args.inputs)
        compiled = args.compile if target.backend == "torch" else None
        steps = target.make_steps(z_i, z_j, dtype, list(args.presets), compiled)
        peaks: dict[str, float | None] = {}
        for name, step in steps.items():
            resettable = reset_peak_rss()
            before = peak_rss_mib()
            for _ in range(max(1, args.warmup)):
                target.time_ms(step)
            peaks[name] = peak_rss_mib() - before if target.device == "cpu" else None
        if target.gpu_peak_mib is not None:
            peaks = {name: target.gpu_peak_mib(step) for name, step in steps.items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                times[name].append(target.time_ms(step))
        stats = {name: summarize(values) for name, values in times.items()}
        floor = stats[FLOOR]["median_ms"]
        for name in steps:
            rows.append(
                {
                    "backend": target.backend,
                    "device": target.device,
                    "device_name": target.device_name,
                    "dtype": dtype,
                    "preset": name,
                    "size": size,
                    "dim": args.dim,
                    "inputs": args.inputs,
                    "repeats": args.repeats,
                    **stats[name],
                    "ratio": stats[name]["median_ms"] / floor,
                    "peak_mib": peaks[name],
                    "peak_kind": peak_kind(target, resettable),
                }
            )
    return rows


def peak_kind(target: Target, resettable: bool) -> str | None:
    """How a row's peak memory was measured (``None``: not measured).

    Args:
        target: the framework and device.
        resettable: whether the peak resident memory was reset before the method.

    Returns:
        A few words, or ``None``.
    """
    if target.gpu_peak_mib is not None:
        return "torch.cuda.max_memory_allocated"
    if target.device == "cpu":
        return "VmHWM growth" if resettable else "ru_maxrss growth (process-wide)"
    return None


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a table: times, ratio to the floor, peak memory.

    Args:
        rows: rows of ``bench_target``.

    Returns:
        The table's text.
    """
    header = ["backend", "device", "dtype", "2N", "method", "median ms", "min", "max", "IQR"]
    header += ["ratio", "peak MiB"]
    cells = [
        [
            *(row[key] for key in ("backend", "device", "dtype")),
            str(row["size"]),
            row["preset"],
            *(f"{row[key]:.2f}" for key in ("median_ms", "min_ms", "max_ms")),
            f"{row['q3_ms'] - row['q1_ms']:.2f}",
            f"{row['ratio']:.2f}",
            "-" if row["peak_mib"] is None else f"{row['peak_mib']:.1f}",
        ]
        for row in rows
    ]
    return table(header, cells, justify="lllrl" + "r" * 6)


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What matches a row with a row of an earlier run.

    Args:
        row: a row of ``bench_target`` or of an earlier ``--json`` file.

    Returns:
        Its backend, device, dtype, method, size, dimension and inputs.
    """
    fields = ("backend", "device", "dtype", "preset", "size", "dim")
    return (*(row[f] for f in fields), row.get("inputs", "random"))


def compare(rows: list[dict[str, Any]], earlier: tuple[str, list[dict[str, Any]]]) -> None:
    """Print, for each row also in the earlier file, the change of median time and of ratio.

    Args:
        rows: this run's rows.
        earlier: the file's name and its rows, as ``--compare`` read them.
    """
    path, earlier_rows = earlier
    old = {row_key(r): r for r in earlier_rows}
    print(f"\nchange against {path}:")
    cells = []
    for row in rows:
        before = old.get(row_key(row))
        if before is None:
            continue
        change = 100 * (row["median_ms"] / before["median_ms"] - 1)
        cells.append(
            [
                *(row[key] for key in ("backend", "device", "dtype")),
                str(row["size"]),
                row["preset"],
                f"{before['median_ms']:.2f}",
                f"{row['median_ms']:.2f}",
                f"{change:+.1f}%",
                f"{before['ratio']:.2f}",
                f"{row['ratio']:.2f}",
            ]
        )
    if not cells:
        print("  (no rows in common)")
        return
    header = ["backend", "device", "dtype", "2N", "method", "was ms", "now ms", "change"]
    print(table([*header, "was ratio", "now ratio"], cells, justify="lllrl" + "r" * 5))


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Log-log median time vs 2N: one line per backend/device/dtype and method (compiled:
    dash-dot, crosses).

    Args:
        rows: the rows of the run.
        path: the image to write (PNG, ...).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(METHODS, ("black", "tab:blue", "tab:orange", "tab:red"), strict=True))
    styles = dict(zip(BACKENDS, ("-", "--", ":"), strict=True))
    figure, axes = plt.subplots(figsize=(8, 5.5))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["backend"], row["device"], row["dtype"], row["preset"])
        groups.setdefault(key, []).append(row)
    for (backend, device, dtype, preset), group in groups.items():
        group.sort(key=lambda r: r["size"])
        compiled = preset.endswith(COMPILED)
        axes.plot(
            [r["size"] for r in group],
            [r["median_ms"] for r in group],
            marker="x" if compiled else "o",
            linestyle="-." if compiled else styles.get(backend, "-"),
            color=colors.get(preset.removesuffix(COMPILED)),
            label=f"{backend} {device} {dtype} {preset}",
        )
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("2N (batch of both views)")
    axes.set_ylabel("forward + backward, median ms")
    axes.set_title(f"WEINCE vs minimal InfoNCE (floor), d = {rows[0]['dim'] if rows else '?'}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    """Benchmark every framework and device asked for; print the rows, write the files.

    Args:
        args: the parsed options of ``weince bench``.

    Returns:
        0, or 1 when no installed framework runs on the devices asked for.
    """
    frameworks = args.backends or list(BACKENDS)
    devices = args.devices or list(DEVICES)
    rows: list[dict[str, Any]] = []
    print(f"d = {args.dim}, {args.repeats} timed rounds after {args.warmup} warm-up steps")
    if args.compile and set(frameworks) - {"torch"}:
        print("--compile applies to PyTorch only (the JAX steps are always jitted)")
    for framework in frameworks:
        if not installed(framework):
            print(f"  ({framework}: {framework} or {ADAPTERS[framework]} not installed, skipped)")
            continue
        ids = [KINDS[framework, device] for device in devices if (framework, device) in KINDS]
        # The first device of each kind (a second GPU has the id torch-cuda:1).
        for backend in (b for b in all_backends(ids) if b.id in ids):
            if backend.skip_reason:
                print(f"  ({backend.id}: {backend.skip_reason}, skipped)")
                continue
            with settings(backend.module, args.threads):
                target = TARGETS[framework](backend)
                print(f"  -- {target.backend} on {target.device}: {target.device_name}")
                mine = bench_target(target, args, progress=not args.no_progress)
            print(format_rows(mine), flush=True)
            rows += mine
    if not rows:
        print("no installed backend on the requested devices", file=sys.stderr)
        return 1
    kinds = {r["peak_kind"] for r in rows if r["device"] == "cpu"}
    if "VmHWM growth" in kinds:
        print("CPU peak MiB: growth of the peak resident memory (VmHWM) during warm-up")
    if any(kind and kind.startswith("ru_maxrss") for kind in kinds):
        print(
            "CPU peak MiB: growth of ru_maxrss during warm-up, process-wide "
            "(0 when an earlier step already peaked higher)"
        )
    if args.json:
        meta = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "argv": sys.argv,
            "versions": {
                b: getattr(sys.modules[b], "__version__", None)
                for b in BACKENDS
                if b in sys.modules
            },
        }
        write_json(args.json, {"meta": meta, "rows": rows})
    if args.plot:
        plot(rows, args.plot)
    if args.compare:
        compare(rows, args.compare)
    return 0
