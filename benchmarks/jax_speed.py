"""Time ``weince_jax.weince_loss`` (forward + backward, jitted) against a minimal JAX InfoNCE.

    python benchmarks/jax_speed.py --sizes 512 2048 --dim 128 [--json PATH]      # CPU here
    python benchmarks/jax_speed.py --sizes 2048 8192                             # GPU, unchanged

Rows: a minimal jitted InfoNCE (normalize, matmul, masked log-softmax cross-entropy), then
``weince_loss`` with the ``infonce``, ``blend`` and ``paper`` presets, each timed as one jitted
``jax.value_and_grad`` step that returns the loss, both gradients (and the new state). Every
method runs on JAX's default device with the same inputs; after warm-up (compilation included)
the methods take turns, one step each per round, so drift in the machine's speed hits them
alike, and each time is the median over rounds, wall-clock around ``block_until_ready``.
The ratio column is time / minimal InfoNCE time; the goals (issue 4): paper <= 2.0x on CPU at
2N = 2048 and on an H100 at 2N = 8192.

``--selection`` times, instead, the ways to select the tails the loss needs from the masked
``2N x 2N`` similarity matrix, each checked equal to ``jax.lax.top_k`` (values and indices):
the ``k`` largest negatives of every row (``k = 10%`` of ``2N - 2``) and the ``k_g`` largest of
all of them (5%, the ``beta_t`` tail). ``exact path`` says whether the fast path's own exactness
check passed on these inputs (else it fell back to ``lax.top_k``, which is then what was timed).
With ``--inputs clustered`` the embeddings are tight clusters of unequal spread, as late in
training: rows of a tight cluster hold many of the batch's largest similarities.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

import weince_jax
from weince_jax import WEINCEConfig

PRESETS = ("infonce", "blend", "paper")
Step = Callable[[], Any]


def inputs(size: int, dim: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Two correlated views of ``size // 2`` rows."""
    key_i, key_j = jax.random.split(jax.random.key(0))
    z_i = jax.random.normal(key_i, (size // 2, dim), dtype=jnp.float32)
    z_j = z_i + 0.5 * jax.random.normal(key_j, (size // 2, dim), dtype=jnp.float32)
    return z_i.astype(dtype), z_j.astype(dtype)


def clustered_inputs(size: int, dim: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Two views of ``size // 2`` points in 10 clusters whose spreads range from 0.2 to 2."""
    key_c, key_l, key_i, key_j = jax.random.split(jax.random.key(1), 4)
    labels = jax.random.randint(key_l, (size // 2,), 0, 10)
    spread = jnp.linspace(0.2, 2.0, 10)[labels][:, None]
    centers = jax.random.normal(key_c, (10, dim))[labels]
    z_i = centers + spread * jax.random.normal(key_i, (size // 2, dim))
    z_j = z_i + 0.3 * jax.random.normal(key_j, (size // 2, dim))
    return z_i.astype(dtype), z_j.astype(dtype)


def minimal_infonce(z_i: jax.Array, z_j: jax.Array, temperature: float = 0.5) -> jax.Array:
    """NT-Xent as a user would write it: normalize, matmul, mask self, cross-entropy."""
    size = 2 * z_i.shape[0]
    z = jnp.concatenate([z_i, z_j]).astype(jnp.promote_types(z_i.dtype, jnp.float32))
    u = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    logits = jnp.where(jnp.eye(size, dtype=bool), -jnp.inf, u @ u.T / temperature)
    target = (jnp.arange(size) + size // 2) % size
    log_prob = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(jnp.take_along_axis(log_prob, target[:, None], axis=1))


def methods(z_i: jax.Array, z_j: jax.Array, presets: tuple[str, ...]) -> dict[str, Step]:
    minimal = jax.jit(jax.value_and_grad(minimal_infonce, argnums=(0, 1)))
    steps: dict[str, Step] = {"minimal InfoNCE": lambda: minimal(z_i, z_j)}
    grad = jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)
    for preset in presets:
        config = WEINCEConfig.preset(preset)
        state = weince_jax.init_state(config)

        @jax.jit
        def step(z_i: jax.Array, z_j: jax.Array, state: Any, config: WEINCEConfig = config) -> Any:
            (loss, (new_state, _)), grads = grad(z_i, z_j, state, config)
            return loss, grads, new_state

        steps[f"WEINCE {preset}"] = lambda step=step, state=state: step(z_i, z_j, state)
    return steps


def time_round_robin(steps: dict[str, Step], repeats: int, warmup: int) -> dict[str, float]:
    for run in steps.values():
        for _ in range(warmup):
            jax.block_until_ready(run())
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, run in steps.items():
            begin = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append((time.perf_counter() - begin) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


# ---- Tail selections (--selection): candidates for weince_core.ops on JAX ----------------------


def ordered_key(x: jax.Array) -> jax.Array:
    """Signed integers in the order of the floats ``x``; applied to such integers, their inverse."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = lax.bitcast_convert_type(x, jnp.int64 if x.dtype == jnp.float64 else jnp.int32)
    return x ^ ((x >> (x.dtype.itemsize * 8 - 1)) & jnp.iinfo(x.dtype).max)


def from_key(key: jax.Array, dtype: Any) -> jax.Array:
    return lax.bitcast_convert_type(ordered_key(key), dtype)


def sort_descending(x: jax.Array) -> jax.Array:
    """Descending along the last axis by an integer key: XLA sorts integers with a plain
    comparison (CUB radix sort on GPU), floats with a NaN-aware one (bitonic on GPU)."""
    return from_key(~lax.sort(~ordered_key(x), dimension=x.ndim - 1), x.dtype)


def rows_int_sort(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k`` of rows from one integer-key sort of whole rows (values and column)."""
    column = lax.broadcasted_iota(jnp.int32, x.shape, 1)
    keys, index = lax.sort((~ordered_key(x), column), dimension=1, num_keys=1, is_stable=True)
    return from_key(~keys[:, :k], x.dtype), index[:, :k]


def ladder_thresholds(
    sample: jax.Array, k: int, stride: int, steps: tuple[float, ...]
) -> jax.Array:
    """Order statistics of a descending ``sample`` (every ``stride``-th value) near rank ``k``."""
    ranks = sorted({min(sample.shape[-1], max(1, math.ceil(f * k / stride))) for f in steps})
    return sample[..., [r - 1 for r in ranks]]


def prefix_count(keep: jax.Array, block: int = 128) -> jax.Array:
    """``cumsum(keep, axis=1)`` (exact) by two matrix products: within blocks of ``block``
    columns, against a triangle of ones, then the blocks' totals against another."""
    rows, columns = keep.shape
    blocks = -(-columns // block)
    padded = jnp.pad(keep, ((0, 0), (0, blocks * block - columns))).astype(jnp.float32)
    ones = jnp.arange(block)[:, None] <= jnp.arange(block)[None, :]
    within = padded.reshape(rows, blocks, block) @ ones.astype(jnp.float32)  # counts <= block
    before = jnp.arange(blocks)[:, None] < jnp.arange(blocks)[None, :]
    offsets = within[:, :, -1] @ before.astype(jnp.float32)  # sums of integers <= block
    counts = (within + offsets[:, :, None]).reshape(rows, -1)[:, :columns]
    return counts.astype(jnp.int32)


def rows_threshold(
    x: jax.Array, k: int, cap: int, stride: int = 8, matmul_prefix: bool = False
) -> tuple[jax.Array, ...]:
    """``lax.top_k`` of rows: the values at or above a per-row threshold, compacted to ``cap``
    slots and sorted. The threshold is the highest candidate whose exact count reaches ``k``:
    first order statistics of a column sample, then values evenly between the two that bracket
    ``k``. Any row over ``cap`` (or short of ``k``) sends all rows to ``lax.top_k``."""
    rows, cols = x.shape
    steps = (0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.5)
    sample = ladder_thresholds(sort_descending(x[:, ::stride]), k, stride, steps)
    top = jnp.max(x, axis=1, keepdims=True)
    lower, upper, count = bracket(x, jnp.concatenate([top, sample], axis=1), k)
    between = jnp.linspace(upper, lower, 18, axis=1)[:, 1:-1, 0]  # (R, 16), descending
    tau, count = bracket(x, jnp.concatenate([between, lower], axis=1), k)[0::2]
    exact = jnp.all((count >= k) & (count <= cap))

    def fast(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        keep = x >= tau
        prefix = prefix_count(keep) if matmul_prefix else jnp.cumsum(keep, axis=1, dtype=jnp.int32)
        slot = jnp.where(keep, prefix - 1, cap)
        row = lax.broadcasted_iota(jnp.int32, x.shape, 0)
        key = ~ordered_key(x)
        empty = jnp.full((rows, cap), jnp.iinfo(key.dtype).max, key.dtype)
        keys = empty.at[row, slot].set(key, mode="drop", unique_indices=True)
        column = lax.broadcasted_iota(jnp.int32, x.shape, 1)
        index = jnp.full((rows, cap), cols, jnp.int32)
        index = index.at[row, slot].set(column, mode="drop", unique_indices=True)
        keys, index = lax.sort((keys, index), dimension=1, num_keys=1, is_stable=True)
        return from_key(~keys[:, :k], x.dtype), index[:, :k]

    return lax.cond(exact, fast, lambda x: tuple(lax.top_k(x, k)), x), exact


def bracket(x: jax.Array, thresholds: jax.Array, k: int) -> tuple[jax.Array, ...]:
    """Of each row's descending ``thresholds``: the highest whose count of values at or above
    it reaches ``k`` (the last one if none does), the one before it, and that count."""
    counts = jnp.sum(x[:, None, :] >= thresholds[:, :, None], axis=2)  # (R, T), ascending
    pick = jnp.where(jnp.any(counts >= k, axis=1), jnp.argmax(counts >= k, axis=1), -1)
    pick = pick % thresholds.shape[1]
    before = jnp.maximum(pick - 1, 0)

    def at(a: jax.Array, i: jax.Array) -> jax.Array:
        return jnp.take_along_axis(a, i[:, None], axis=1)

    return at(thresholds, pick), at(thresholds, before), at(counts, pick)[:, 0]


def global_from_row_tops(x: jax.Array, row_top: jax.Array, k: int) -> tuple[jax.Array, ...]:
    """The ``k`` largest of ``x`` from the union of the rows' own largest (``row_top``, each row
    descending): exact when no row's smallest kept value exceeds their ``k``-th largest."""
    candidates = sort_descending(row_top.reshape(-1))[:k]
    exact = jnp.all(row_top[:, -1] <= candidates[k - 1])
    whole = lambda: lax.top_k(x.reshape(-1), k)[0]  # noqa: E731
    return lax.cond(exact, lambda: candidates, whole), exact


def global_threshold(x: jax.Array, k: int, cap: int, stride: int = 61) -> tuple[jax.Array, ...]:
    """The ``k`` largest of ``x``: all values at or above a threshold (order statistics of a
    strided sample; the highest whose exact count reaches ``k``), compacted and sorted."""
    flat = x.reshape(-1)
    steps = (1.0, 1.005, 1.01, 1.02, 1.04, 1.08, 1.15, 1.3, 1.6, 2.0)
    thresholds = ladder_thresholds(sort_descending(flat[::stride]), k, stride, steps)
    counts = jnp.sum(flat[None, :] >= thresholds[:, None], axis=1)
    enough = counts >= k
    pick = jnp.argmax(enough)
    exact = jnp.any(enough) & (counts[pick] <= cap)

    def fast() -> jax.Array:
        keep = x >= thresholds[pick]
        within = prefix_count(keep)
        before = jnp.cumsum(within[:, -1]) - within[:, -1]
        slot = jnp.where(keep, within + before[:, None] - 1, cap).reshape(-1)
        key = ~ordered_key(flat)
        empty = jnp.full((cap,), jnp.iinfo(key.dtype).max, key.dtype)
        return from_key(~lax.sort(empty.at[slot].set(key, mode="drop"))[:k], x.dtype)

    return lax.cond(exact, fast, lambda: lax.top_k(flat, k)[0]), exact


def masked_similarities(z_i: jax.Array, z_j: jax.Array) -> jax.Array:
    """``S = U U^T`` with each row's own and positive column at ``-inf``: its negatives."""
    u = jnp.concatenate([z_i, z_j]).astype(jnp.promote_types(z_i.dtype, jnp.float32))
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    size = u.shape[0]
    row, column = jnp.arange(size)[:, None], jnp.arange(size)[None, :]
    excluded = (column == row) | (column == (row + size // 2) % size)
    return jnp.where(excluded, -jnp.inf, u @ u.T)


def time_selections(x: jax.Array, repeats: int) -> dict[str, tuple[float, bool | None]]:
    """Median ms of each selection (and whether its fast path was exact), checked against
    ``lax.top_k``."""
    size = x.shape[0]
    num_negatives = size - 2
    k = max(32, round(0.1 * num_negatives))
    k_g = int(0.05 * size * num_negatives)
    cap = 1 << math.ceil(math.log2(1.2 * k))
    cap_g = 1 << math.ceil(math.log2(1.03 * k_g))
    top_k_rows = jax.jit(lambda x: lax.top_k(x, k))
    row_top, row_index = top_k_rows(x)
    whole = jax.jit(lambda x: lax.top_k(x.reshape(-1), k_g)[0])
    cases: dict[str, tuple[Callable[..., Any], tuple[Any, ...], Any]] = {
        f"rows: lax.top_k k={k}": (top_k_rows, (x,), None),
        "rows: integer-key sort of whole rows": (
            jax.jit(lambda x: rows_int_sort(x, k)),
            (x,),
            None,
        ),
        f"rows: threshold, compact to {cap}, sort": (
            jax.jit(lambda x: rows_threshold(x, k, cap)),
            (x,),
            "exact",
        ),
        "rows: the same, prefix counts by matmul": (
            jax.jit(lambda x: rows_threshold(x, k, cap, matmul_prefix=True)),
            (x,),
            "exact",
        ),
        f"all: lax.top_k k_g={k_g}": (whole, (x,), None),
        "all: integer-key sort of all": (
            jax.jit(lambda x: sort_descending(x.reshape(-1))[:k_g]),
            (x,),
            None,
        ),
        "all: from the rows' tops (given)": (
            jax.jit(lambda x, t: global_from_row_tops(x, t, k_g)),
            (x, row_top),
            "exact",
        ),
        f"all: threshold, compact to {cap_g}, sort": (
            jax.jit(lambda x: global_threshold(x, k_g, cap_g)),
            (x,),
            "exact",
        ),
    }
    expected_global = whole(x)
    results = {}
    for name, (fn, args, flag) in cases.items():
        out = fn(*args)
        exact = None
        if flag:
            out, exact = out
            exact = bool(exact)
        values = out[0] if name.startswith("rows") else out
        expected = row_top if name.startswith("rows") else expected_global
        assert bool(jnp.array_equal(values, expected)), f"{name}: values differ from lax.top_k"
        if name.startswith("rows"):
            assert bool(jnp.array_equal(out[1], row_index)), f"{name}: indices differ"
        results[name] = (median_ms(lambda fn=fn, args=args: fn(*args), repeats), exact)
    return results


def median_ms(run: Step, repeats: int) -> float:
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(run())
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048], help="2N values")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16", "float64"], default="float32"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--inputs", choices=["random", "clustered"], default="random")
    parser.add_argument("--selection", action="store_true", help="time the tail selections")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    device = jax.devices()[0]
    where = f"{device.platform} ({device.device_kind})"
    print(f"jax {jax.__version__}, {where}, {args.dtype}, d = {args.dim}")
    make_inputs = clustered_inputs if args.inputs == "clustered" else inputs
    rows: list[dict[str, Any]] = []
    if args.selection:
        print(f"{'2N':>6}  {'selection':42s} {'ms':>9}  exact path ({args.inputs} inputs)")
        for size in args.sizes:
            x = masked_similarities(*make_inputs(size, args.dim, getattr(jnp, args.dtype)))
            for name, (ms, exact) in time_selections(x, args.repeats).items():
                rows.append({"2N": size, "selection": name, "ms": ms, "exact_path": exact})
                flag = "" if exact is None else str(exact)
                print(f"{size:6d}  {name:42s} {ms:9.2f}  {flag}", flush=True)
        if args.json:
            with open(args.json, "w") as file:
                json.dump(rows, file, indent=1)
        return
    print(f"{'2N':>6}  {'method':18s} {'ms':>9} {'ratio':>6}")
    for size in args.sizes:
        z_i, z_j = make_inputs(size, args.dim, getattr(jnp, args.dtype))
        medians = time_round_robin(
            methods(z_i, z_j, tuple(args.presets)), args.repeats, args.warmup
        )
        floor = medians["minimal InfoNCE"]
        for name, ms in medians.items():
            row = {
                "2N": size,
                "method": name,
                "platform": device.platform,
                "device": device.device_kind,
                "dtype": args.dtype,
                "dim": args.dim,
                "ms": ms,
                "ratio": ms / floor,
            }
            rows.append(row)
            print(f"{size:6d}  {name:18s} {ms:9.2f} {row['ratio']:6.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
