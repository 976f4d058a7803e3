"""The few operations the Array API standard lacks, in one place.

Each has a generic version written only against the standard (what ``array_api_strict`` runs)
and, where a backend has a native kernel that is faster, a fast path to it. The native modules
are taken from ``sys.modules``: an array of a framework can only exist once that framework has
been imported, so nothing here ever imports one.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from array_api_compat import (
    device,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

Array = Any
Namespace = Any


def sigmoid(x: Array, xp: Namespace) -> Array:
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logsumexp(x: Array, xp: Namespace) -> Array:
    """``log(sum(exp(x)))`` over the last axis; entries of ``-inf`` are left out."""
    if is_torch_namespace(xp):
        return sys.modules["torch"].logsumexp(x, dim=-1)
    if is_jax_namespace(xp):
        return sys.modules["jax"].nn.logsumexp(x, axis=-1)
    peak = xp.max(x, axis=-1, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, 0.0)
    return xp.log(xp.sum(xp.exp(x - peak), axis=-1)) + peak[..., 0]


def top_k(x: Array, k: int, xp: Namespace) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis, in descending order, and their indices."""
    if is_torch_namespace(xp):
        return sys.modules["torch"].topk(x, k, dim=-1, sorted=True)
    if is_jax_namespace(xp):
        # The barrier keeps both outputs alive: where the indices go unused, XLA rewrites top_k
        # into a sort of the whole rows, which on CPU is ten times slower than its TopK kernel.
        # The pair goes in as (indices, values): XLA's SPMD pipeline folds a tuple of top_k's
        # outputs in their own order back into top_k, then aborts on the barrier (shard_map).
        lax = sys.modules["jax"].lax
        values, indices = lax.top_k(x, k)
        indices, values = lax.optimization_barrier((indices, values))
        return values, indices
    if (is_numpy_namespace(xp) or is_cupy_namespace(xp)) and k < x.shape[-1]:
        # Partition first, then sort only the k survivors.
        native = sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
        part = native.argpartition(x, -k, axis=-1)[..., -k:]
        values = native.take_along_axis(x, part, axis=-1)
        order = native.argsort(-values, axis=-1)
        return native.take_along_axis(values, order, axis=-1), native.take_along_axis(
            part, order, axis=-1
        )
    indices = xp.argsort(x, axis=-1, descending=True, stable=True)[..., :k]
    return xp.take_along_axis(x, indices, axis=-1), indices


def largest(x: Array, k: int, xp: Namespace, *, row_top: Array | None = None) -> Array:
    """The ``k`` largest entries of ``x`` (1-D or 2-D), in descending order (values only).

    ``row_top``: for a 2-D ``x``, the largest entries of each row in descending order (on JAX
    the answer is most often among them, see ``_largest_jax``).
    """
    if is_jax_namespace(xp):
        return _largest_jax(x, k, row_top)
    if is_torch_namespace(xp) and x.device.type == "cpu":
        return _largest_torch_cpu(x, k, row_top)
    return top_k(xp.reshape(x, (-1,)), k, xp)[0]


def _largest_torch_cpu(x: Array, k: int, row_top: Array | None) -> Array:
    """PyTorch on the CPU, where a branch on a value costs no device synchronisation (under
    ``torch.compile`` it is a ``torch.cond``, so the graph does not break):

    1. the ``k`` largest of ``row_top``, exact when no row's smallest kept entry exceeds
       their ``k``-th largest (as on JAX);
    2. otherwise the ``k`` largest of the ``k`` largest of a few chunks, selected in parallel
       (one long row is one thread), then of those.
    """
    torch = sys.modules["torch"]
    flat = x.reshape(-1)

    def from_chunks() -> Array:
        chunks = min(8, flat.shape[0] // (4 * k))
        if chunks < 2:
            return torch.topk(flat, k).values
        size = -(-flat.shape[0] // chunks)
        padded = torch.nn.functional.pad(flat, (0, size * chunks - flat.shape[0]), value=-math.inf)
        survivors = torch.topk(padded.view(chunks, size), k, sorted=False).values
        return torch.topk(survivors.reshape(-1), k).values

    if row_top is None or row_top.numel() < k:
        return from_chunks()
    candidates = torch.topk(row_top.reshape(-1), k).values
    exact = torch.all(row_top[:, -1] <= candidates[-1])
    if torch.compiler.is_compiling():
        return torch.cond(exact, lambda: candidates.clone(), from_chunks)
    if type(exact) is not torch.Tensor:  # a fake tensor (memory estimates): no value to read
        return from_chunks()
    # Eager, a plain branch: ``exact`` is in host memory already, and torch.cond outside a
    # compiled graph refuses the dispatch modes (FLOP counters, tracers) users may run under.
    return candidates if bool(exact) else from_chunks()


def _largest_jax(x: Array, k: int, row_top: Array | None) -> Array:
    """Exact shortcuts, each passing to the next with ``lax.cond`` when its check fails:

    1. the ``k`` largest of ``row_top``: exact when no row's smallest kept entry exceeds their
       ``k``-th largest (nothing left out is then larger);
    2. the entries at or above a threshold, compacted into ``cap`` slots and sorted: the highest
       of some order statistics of a sample whose exact count reaches ``k`` (and is <= ``cap``);
    3. ``top_k`` of all entries.
    """
    jnp, lax = sys.modules["jax.numpy"], sys.modules["jax"].lax
    flat = jnp.reshape(x, (-1,))
    if row_top is not None and row_top.size >= k:
        candidates = sort_descending(jnp.reshape(row_top, (-1,)), jnp)[:k]
        exact = jnp.all(_ordered_key(row_top[:, -1]) <= _ordered_key(candidates[k - 1]))
        return lax.cond(exact, lambda: candidates, lambda: _largest_jax(x, k, None))
    cap = 1 << math.ceil(math.log2(1.03 * k))
    stride = 61  # odd: the sample visits every column of rows of even length
    if cap >= flat.size // 2 or flat.size < 16 * stride:
        return lax.top_k(flat, k)[0]
    if x.ndim != 2:  # rows for the prefix counts
        width = 1024
        x = jnp.pad(flat, (0, -flat.size % width), constant_values=-math.inf).reshape(-1, width)
    sample = sort_descending(flat[::stride], jnp)
    steps = (1.0, 1.005, 1.01, 1.02, 1.04, 1.08, 1.15, 1.3, 1.6, 2.0)
    ranks = sorted({min(sample.size, math.ceil(f * k / stride)) for f in steps})
    thresholds = sample[jnp.asarray(ranks) - 1]  # descending
    counts = jnp.sum(flat[None, :] >= thresholds[:, None], axis=1)  # ascending
    pick = jnp.argmax(counts >= k)  # the highest threshold with k entries at or above it
    exact = (counts[pick] >= k) & (counts[pick] <= cap)

    def compacted() -> Array:
        keep = x >= thresholds[pick]
        within = _prefix_count(keep)
        before = jnp.cumsum(within[:, -1]) - within[:, -1]  # entries kept in earlier rows
        slot = jnp.reshape(jnp.where(keep, within + before[:, None] - 1, cap), (-1,))
        keys = ~_ordered_key(jnp.reshape(x, (-1,)))
        empty = jnp.full((cap,), jnp.iinfo(keys.dtype).max, dtype=keys.dtype)
        return _from_key(~lax.sort(empty.at[slot].set(keys, mode="drop"))[:k], x.dtype)

    return lax.cond(exact, compacted, lambda: lax.top_k(flat, k)[0])


def _prefix_count(keep: Array, block: int = 128) -> Array:
    """JAX: ``cumsum(keep, axis=1)`` of a 2-D boolean, exactly, by two matrix products (a
    scan is slow on CPU and GPU): within blocks of columns against a triangle of ones, then the
    blocks' totals. Every product sums integers <= ``block``, exact at any matmul precision."""
    jnp = sys.modules["jax.numpy"]
    rows, columns = keep.shape
    blocks = -(-columns // block)
    padded = jnp.pad(keep, ((0, 0), (0, blocks * block - columns))).astype(jnp.float32)
    ones = jnp.arange(block)[:, None] <= jnp.arange(block)[None, :]
    within = jnp.reshape(padded, (rows, blocks, block)) @ ones.astype(jnp.float32)
    earlier = jnp.arange(blocks)[:, None] < jnp.arange(blocks)[None, :]
    offsets = within[:, :, -1] @ earlier.astype(jnp.float32)
    counts = jnp.reshape(within + offsets[:, :, None], (rows, -1))[:, :columns]
    return counts.astype(jnp.int32)


def sort_descending(x: Array, xp: Namespace) -> Array:
    """The entries of the 1-D ``x`` in descending order."""
    if is_jax_namespace(xp):
        # By an integer key in the order of the floats: XLA sorts integers with a plain
        # comparison (a CUB radix sort on GPU; on CPU five times faster than its NaN-aware
        # float comparison). ``~`` reverses the order of the keys.
        return _from_key(~sys.modules["jax"].lax.sort(~_ordered_key(x)), x.dtype)
    return xp.sort(x, descending=True)


def _ordered_key(x: Array) -> Array:
    """JAX: signed integers in the order of the floats ``x`` (NaN aside; -0.0 below 0.0).

    Applied to such integers instead, the map returns the floats' bits: it is its own inverse.
    """
    jnp, lax = sys.modules["jax.numpy"], sys.modules["jax"].lax
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = lax.bitcast_convert_type(x, jnp.int64 if x.dtype == jnp.float64 else jnp.int32)
    return x ^ ((x >> (x.dtype.itemsize * 8 - 1)) & jnp.iinfo(x.dtype).max)


def _from_key(key: Array, dtype: Any) -> Array:
    return sys.modules["jax"].lax.bitcast_convert_type(_ordered_key(key), dtype)


def symmetrized_product(matrix: Array, x: Array, xp: Namespace) -> Array:
    """``(matrix + matrix^T) @ x`` for a square ``matrix``.

    On a CPU two products are faster than one product and a transposed pass over ``matrix``
    (BLAS reads the transpose in place); on a GPU the pass is the cheaper of the two.
    """
    on_cpu = (is_torch_namespace(xp) and matrix.device.type == "cpu") or is_numpy_namespace(xp)
    if on_cpu:
        return matrix @ x + matrix.T @ x
    return (matrix + matrix.T) @ x


def take_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    """``out[r, m] = matrix[r, columns[r, m]]`` for non-negative ``columns``."""
    if is_torch_namespace(xp):
        # torch.gather itself: array_api_compat's take_along_axis adds five kernels per call to
        # wrap negative indices, which these never are.
        return sys.modules["torch"].gather(matrix, 1, columns)
    return xp.take_along_axis(matrix, columns, axis=1)


def mask_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    """``matrix`` with ``-inf`` at ``(r, columns[r, m])``: columns that are no candidates.

    Like ``add_at_columns``, ``matrix`` must be a temporary: it is updated in place where the
    backend allows, which costs a pass over the ``R x E`` entries instead of the ``R x C``.
    """
    rows = matrix.shape[0]
    if is_torch_namespace(xp):
        return matrix.scatter_(1, columns, -math.inf)
    if is_jax_namespace(xp):
        jnp = sys.modules["jax.numpy"]
        return matrix.at[jnp.arange(rows)[:, None], columns].set(-math.inf)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        native = sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
        matrix[native.arange(rows)[:, None], columns] = -math.inf
        return matrix
    all_columns = xp.arange(matrix.shape[1], device=device(matrix))[None, :]
    for m in range(columns.shape[1]):
        matrix = xp.where(all_columns == columns[:, m : m + 1], -math.inf, matrix)
    return matrix


def add_at_columns(matrix: Array, columns: Array, values: Array, xp: Namespace) -> Array:
    """``matrix`` with ``values[r, m]`` added at ``(r, columns[r, m])``.

    The columns of one row must be distinct (they are: hard negatives, or one positive), so
    the native scatters need not accumulate duplicates. ``matrix`` must be a temporary: the
    NumPy, CuPy and PyTorch paths update it in place (a copy of an N x N matrix is a full pass).
    """
    rows = matrix.shape[0]
    if is_torch_namespace(xp):
        return matrix.scatter_add_(1, columns, values)
    if is_jax_namespace(xp):
        jnp = sys.modules["jax.numpy"]
        return matrix.at[jnp.arange(rows)[:, None], columns].add(values)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        native = sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
        matrix[native.arange(rows)[:, None], columns] += values
        return matrix
    all_columns = xp.arange(matrix.shape[1], device=device(matrix))[None, :]
    for m in range(columns.shape[1]):
        matrix = matrix + xp.where(all_columns == columns[:, m : m + 1], values[:, m : m + 1], 0.0)
    return matrix
