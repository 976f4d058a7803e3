"""JAX's fast paths of the operations in ``ops`` (which picks them by namespace).

JAX is taken from ``sys.modules``, never imported: these run only on JAX arrays, which exist
only once the user has imported it. Everything here traces under ``jax.jit``: no branch on a
value, ``lax.cond`` where a shortcut must be checked.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from ._types import Array, DType


def _jax() -> Any:
    return sys.modules["jax"]


def _jnp() -> Any:
    return sys.modules["jax.numpy"]


def sigmoid(x: Array) -> Array:
    return _jax().nn.sigmoid(x)


def logsumexp(x: Array) -> Array:
    """``log(sum(exp(x)))`` over the last axis."""
    return _jax().nn.logsumexp(x, axis=-1)


def mask_columns(matrix: Array, columns: Array) -> Array:
    return matrix.at[_jnp().arange(matrix.shape[0])[:, None], columns].set(-math.inf)


def add_at_columns(matrix: Array, columns: Array, values: Array) -> Array:
    return matrix.at[_jnp().arange(matrix.shape[0])[:, None], columns].add(values)


def float_bits(u: Array, integer: str) -> Array:
    """The floats of ``u`` as the signed integers ``integer`` (``"int32"`` or ``"int64"``)."""
    return _jax().lax.bitcast_convert_type(u, getattr(_jnp(), integer))


def canonical_columns(sim: Array, twin: Array, has_copies: Array) -> Array:
    """``sim``'s columns replaced by their first copies' (see ``ops.canonical_columns``); the
    gather is skipped where there are no copies (``lax.cond``)."""
    jnp = _jnp()
    return _jax().lax.cond(has_copies, lambda: jnp.take(sim, twin, axis=1), lambda: sim)


def similarity(u: Array, v: Array) -> Array:
    """``u @ v^T`` at JAX's highest precision (not TF32, its default for float32 on NVIDIA
    GPUs)."""
    return _jnp().matmul(u, v.T, precision=_jax().lax.Precision.HIGHEST)


def top_k_columns(keys: Array, k: int) -> Array:
    """The columns of ``ops.top_k`` from the selection keys (exclusions masked already).

    Chosen when the platform is known: XLA's TopK (stable: equal keys in column order) is the
    faster on a CPU (measured), and slow on a GPU for k of 10 % of a row, which the compaction
    avoids.
    """
    plain = partial(top_k_last_axis, k=k)
    by_threshold = partial(top_k_rows_by_threshold, k=k)
    return _jax().lax.platform_dependent(keys, cpu=plain, default=by_threshold)[1]


def top_k_last_axis(x: Array, k: int) -> tuple[Array, Array]:
    """``lax.top_k``: the ``k`` largest entries along the last axis and their indices, equal
    values in index order."""
    # The barrier keeps both outputs alive: where the indices go unused, XLA rewrites top_k
    # into a sort of the whole rows, which on CPU is ten times slower than its TopK kernel.
    # The pair goes in as (indices, values): XLA's SPMD pipeline folds a tuple of top_k's
    # outputs in their own order back into top_k, then aborts on the barrier (shard_map).
    lax = _jax().lax
    values, indices = lax.top_k(x, k)
    indices, values = lax.optimization_barrier((indices, values))
    return values, indices


def top_k_rows_by_threshold(x: Array, k: int) -> tuple[Array, Array]:
    """``top_k`` of the rows of a 2-D ``x`` without a TopK of whole rows, exactly.

    1. Per row, candidate thresholds: order statistics of a strided sample of the row, placed
       so that their exact counts step through ``k`` to ``2k`` entries at or above them.
    2. Per row, the highest threshold with at least ``k`` entries at or above it.
    3. Those entries, compacted into ``cap`` slots in column order (a prefix count and a
       binary search per slot), sorted by integer keys; the first ``k`` are the answer.

    Where some row's chosen threshold keeps fewer than ``k`` or more than ``cap`` entries (many
    equal values, tiny rows), ``lax.cond`` passes to ``lax.top_k``. Equal values come in
    column order, as from ``lax.top_k``.
    """
    jnp, lax = _jnp(), _jax().lax
    columns = x.shape[1]
    stride = 8
    cap = compaction_slots(k)
    if columns < 64 * stride or cap >= columns // 2:
        return top_k_last_axis(x, k)
    keys = ordered_key(x)
    threshold, kept, exact = row_thresholds(keys, k, cap, stride)

    def compacted() -> tuple[Array, Array]:
        position = prefix_count(keys >= threshold[:, None])  # how many kept up to each column
        slots = jnp.arange(1, cap + 1, dtype=position.dtype)
        first_at = _jax().vmap(lambda p: jnp.searchsorted(p, slots, side="left"))
        column = first_at(position)  # the column of each row's j-th kept entry
        column = jnp.minimum(column, columns - 1)
        slot_keys = jnp.take_along_axis(keys, column, axis=1)
        empty = jnp.iinfo(keys.dtype).min
        slot_keys = jnp.where(slots[None, :] <= kept[:, None], slot_keys, empty)
        _, order_columns = lax.sort((~slot_keys, column), dimension=1, num_keys=1, is_stable=True)
        top_columns = order_columns[:, :k]
        # The values gathered from x, not decoded from the keys: the same numbers, and
        # differentiable where x is (as lax.top_k's are).
        return jnp.take_along_axis(x, top_columns, axis=1), top_columns

    return lax.cond(exact, compacted, lambda: top_k_last_axis(x, k))


def compaction_slots(k: int) -> int:
    """The slots per row of ``top_k_rows_by_threshold``: ``2 k``, as a power of two.

    A strided sample places a row's count only to within about ``sqrt(stride * k)``: at
    ``k = 205`` the chosen counts of Gaussian rows ran to ``1.7 k``.
    """
    return 1 << math.ceil(math.log2(2 * k))


def row_thresholds(keys: Array, k: int, cap: int, stride: int) -> tuple[Array, Array, Array]:
    """Per row of integer ``keys``, a threshold with at least ``k`` entries at or above it (the
    highest of the candidates), how many there are, and whether every row's count lies in
    ``[k, cap]``."""
    jnp, lax = _jnp(), _jax().lax
    sample = ~lax.sort(~keys[:, ::stride], dimension=1)  # descending
    steps = (0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.25, 1.4, 1.6, 2.0)
    ranks = sorted({min(sample.shape[1], math.ceil(f * k / stride)) for f in steps})
    thresholds = sample[:, jnp.asarray(ranks) - 1]  # (R, F), descending along each row
    counts = jnp.sum(keys[:, :, None] >= thresholds[:, None, :], axis=1)  # ascending
    pick = jnp.argmax(counts >= k, axis=1)[:, None]
    kept = jnp.take_along_axis(counts, pick, axis=1)[:, 0]
    threshold = jnp.take_along_axis(thresholds, pick, axis=1)[:, 0]
    return threshold, kept, jnp.all((kept >= k) & (kept <= cap))


def largest(x: Array | Callable[[], Array], k: int, row_top: Array | None) -> Array:
    """``ops.largest`` by exact shortcuts, each passing to the next with ``lax.cond`` when its
    check fails:

    1. the ``k`` largest of ``row_top``: exact when no row's smallest kept entry exceeds their
       ``k``-th largest (nothing left out is then larger);
    2. the entries at or above a threshold, compacted into ``cap`` slots and sorted: the highest
       of some order statistics of a sample whose exact count reaches ``k`` (and is <= ``cap``);
    3. ``top_k`` of all entries.
    """
    jnp, lax = _jnp(), _jax().lax
    if row_top is not None and row_top.size >= k:
        candidates = sort_descending(jnp.reshape(row_top, (-1,)))[:k]
        exact = jnp.all(ordered_key(jnp.min(row_top, axis=1)) <= ordered_key(candidates[k - 1]))
        return lax.cond(exact, lambda: candidates, lambda: largest(x, k, None))
    x = x() if callable(x) else x
    flat = jnp.reshape(x, (-1,))
    cap = 1 << math.ceil(math.log2(1.03 * k))
    stride = 61  # odd: the sample visits every column of rows of even length
    if cap >= flat.size // 2 or flat.size < 16 * stride:
        return lax.top_k(flat, k)[0]
    if x.ndim != 2:  # rows for the prefix counts
        width = 1024
        x = jnp.pad(flat, (0, -flat.size % width), constant_values=-math.inf).reshape(-1, width)
    sample = sort_descending(flat[::stride])
    steps = (1.0, 1.005, 1.01, 1.02, 1.04, 1.08, 1.15, 1.3, 1.6, 2.0)
    ranks = sorted({min(sample.size, math.ceil(f * k / stride)) for f in steps})
    thresholds = sample[jnp.asarray(ranks) - 1]  # descending
    counts = jnp.sum(flat[None, :] >= thresholds[:, None], axis=1)  # ascending
    pick = jnp.argmax(counts >= k)  # the highest threshold with k entries at or above it
    exact = (counts[pick] >= k) & (counts[pick] <= cap)

    def compacted() -> Array:
        keep = x >= thresholds[pick]
        within = prefix_count(keep)
        before = jnp.cumsum(within[:, -1]) - within[:, -1]  # entries kept in earlier rows
        slot = jnp.reshape(jnp.where(keep, within + before[:, None] - 1, cap), (-1,))
        keys = ~ordered_key(jnp.reshape(x, (-1,)))
        empty = jnp.full((cap,), jnp.iinfo(keys.dtype).max, dtype=keys.dtype)
        return from_key(~lax.sort(empty.at[slot].set(keys, mode="drop"))[:k], x.dtype)

    return lax.cond(exact, compacted, lambda: lax.top_k(flat, k)[0])


def prefix_count(keep: Array, block: int = 128) -> Array:
    """``cumsum(keep, axis=1)`` of a 2-D boolean, exactly, by two matrix products (a scan is
    slow on CPU and GPU): within blocks of columns against a triangle of ones, then the blocks'
    totals. Every product sums integers <= ``block``, exact at any matmul precision."""
    jnp = _jnp()
    rows, columns = keep.shape
    blocks = -(-columns // block)
    padded = jnp.pad(keep, ((0, 0), (0, blocks * block - columns))).astype(jnp.float32)
    ones = jnp.arange(block)[:, None] <= jnp.arange(block)[None, :]
    within = jnp.reshape(padded, (rows, blocks, block)) @ ones.astype(jnp.float32)
    earlier = jnp.arange(blocks)[:, None] < jnp.arange(blocks)[None, :]
    offsets = within[:, :, -1] @ earlier.astype(jnp.float32)
    counts = jnp.reshape(within + offsets[:, :, None], (rows, -1))[:, :columns]
    return counts.astype(jnp.int32)


def sort_descending(x: Array) -> Array:
    """The entries of the 1-D ``x`` in descending order, by integer keys in the order of the
    floats (``~`` reverses that order): XLA sorts integers with a plain comparison (a CUB radix
    sort on GPU; on CPU five times faster than its NaN-aware float comparison)."""
    return from_key(~_jax().lax.sort(~ordered_key(x)), x.dtype)


def ordered_key(x: Array) -> Array:
    """Signed integers in the order of the floats ``x`` (NaN aside; -0.0 below 0.0; float32 or
    float64). Applied to such integers instead, the map returns the floats' bits: it is its
    own inverse."""
    jnp = _jnp()
    if jnp.issubdtype(x.dtype, jnp.floating):
        integer = jnp.int64 if x.dtype == jnp.float64 else jnp.int32
        x = _jax().lax.bitcast_convert_type(x, integer)
    key = x >> (x.dtype.itemsize * 8 - 1)  # all ones for negative floats: flip the rest
    key &= jnp.iinfo(x.dtype).max
    key ^= x
    return key


def from_key(key: Array, dtype: DType) -> Array:
    """The floats of ``dtype`` whose ``ordered_key`` is ``key``."""
    return _jax().lax.bitcast_convert_type(ordered_key(key), dtype)
