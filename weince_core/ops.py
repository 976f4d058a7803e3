"""The few operations the Array API standard lacks, in one place.

Each has a generic version written only against the standard (what ``array_api_strict`` runs)
and, where a backend has a native kernel that is faster, a fast path to it. The native modules
are taken from ``sys.modules``: an array of a framework can only exist once that framework has
been imported, so nothing here ever imports one.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from array_api_compat import (
    device,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_array,
    is_torch_namespace,
)

Array = Any
Namespace = Any

# Native kernels that adapters register (``register_kernel``), by operation; each returns
# ``None`` where it does not apply to its arguments (another framework's arrays, say), and the
# next one, or the generic path, runs.
_KERNELS: dict[str, list[Callable[..., Any]]] = {}


def register_kernel(name: str, kernel: Callable[..., Any]) -> None:
    """Route the operation ``name`` through ``kernel`` where it applies (once per kernel).

    Args:
        name: ``"top_k"`` (``kernel(x, k, excluded, cap)`` as ``top_k``) or ``"row_pass"``
            (``kernel(sim, lam, excluded, config, total_rows)``: the dense gradient and logsumexp
            of the rows' blended logits, see ``rows.rows_value_and_grad``).
        kernel: returns the operation's result, or ``None`` where it does not apply (decided
            from shapes, dtypes and devices only: no array values).
    """
    kernels = _KERNELS.setdefault(name, [])
    if kernel not in kernels:
        kernels.append(kernel)


def kernel_result(name: str, *args: Any) -> Any:
    """The result on ``args`` of the first kernel registered for ``name`` that applies, or
    ``None`` (none applies)."""
    for kernel in _KERNELS.get(name, ()):
        result = kernel(*args)
        if result is not None:
            return result
    return None


def detached(x: Array, xp: Namespace) -> Array:
    """``x``'s values outside any autograd graph (a PyTorch tensor is detached).

    The core's gradient is its analytic backward pass, never autograd through its operations:
    those select by integer keys and update arrays in place, which autograd cannot follow.
    """
    return x.detach() if is_torch_namespace(xp) else x


def sigmoid(x: Array, xp: Namespace) -> Array:
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    if is_torch_namespace(xp):
        return sys.modules["torch"].sigmoid(x)
    if is_jax_namespace(xp):
        return sys.modules["jax"].nn.sigmoid(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logsumexp(x: Array, xp: Namespace, *, overwrite: bool = False) -> Array:
    """``log(sum(exp(x)))`` over the last axis; entries of ``-inf`` are left out.

    ``overwrite``: ``x`` is a temporary the call may clobber, so no array of its size is made
    (where that pays: on a GPU, PyTorch's own kernel, with fewer launches, is the faster).
    """
    if is_jax_namespace(xp):
        return sys.modules["jax"].nn.logsumexp(x, axis=-1)
    if is_torch_namespace(xp) and not (overwrite and x.device.type == "cpu"):
        return sys.modules["torch"].logsumexp(x, dim=-1)
    return _exp_shifted(x, xp, in_place=overwrite)[2]


def softmax_(x: Array, xp: Namespace) -> tuple[Array, Array]:
    """``(softmax(x), logsumexp(x))`` over the last axis, the softmax in place of ``x`` where
    the backend allows (``x`` a temporary); entries of ``-inf`` get probability 0."""
    if is_torch_namespace(xp) and x.device.type != "cpu":
        # Fewer kernel launches; on a CPU the passes below make no new array.
        lse = sys.modules["torch"].logsumexp(x, dim=-1)
        return x.sub_(lse[..., None]).exp_(), lse
    x, total, lse = _exp_shifted(x, xp, in_place=True)
    x /= total
    return x, lse


def _exp_shifted(x: Array, xp: Namespace, *, in_place: bool) -> tuple[Array, Array, Array]:
    """``exp(x - m)``, its row sums (kept as an axis) and ``logsumexp(x)``, where ``m`` is the
    maximum of each row, or 0 where that is not finite (the shift keeps ``exp`` in range).

    With ``in_place``, the first is made in place of ``x`` where the backend allows.
    """
    peak = xp.max(x, axis=-1, keepdims=True)
    if is_torch_namespace(xp):
        peak = peak.nan_to_num_(0.0, 0.0, 0.0)  # one kernel; isfinite and where make five
    else:
        peak = xp.where(xp.isfinite(peak), peak, 0.0)
    if in_place:
        x -= peak
    else:
        x = x - peak
    x = exp_(x, xp)
    total = xp.sum(x, axis=-1, keepdims=True)
    return x, total, xp.log(total[..., 0]) + peak[..., 0]


def top_k(
    x: Array, k: int, xp: Namespace, *, excluded: Array | None = None, cap: float = math.inf
) -> tuple[Array, Array]:
    """The ``k`` entries of each row of the 2-D ``x`` with the largest keys ``min(x, cap)``, and
    their columns; with ``excluded`` (``(R, E)`` columns), those entries left out.

    Equal keys come in column order and, where they straddle the cut, the lower columns are
    taken: the order of a stable descending sort (the tie rule of the math page's section on
    exact arithmetic). ``-0.0`` and ``0.0`` are equal keys. The values are ``x``'s own (not
    clipped) at the chosen columns.
    """
    native = kernel_result("top_k", x, k, excluded, cap)
    if native is not None:
        return native
    if is_torch_namespace(xp):
        columns = _top_k_columns_torch(x, k, excluded, cap)
    else:
        keys = selection_keys(x, cap, xp)
        if excluded is not None:
            keys = mask_columns(keys, excluded, xp)
        if is_jax_namespace(xp):
            # Chosen when the platform is known: XLA's TopK (stable: equal keys in column order)
            # is the faster on a CPU (measured), and slow on a GPU for k of 10 % of a row, which
            # the compaction avoids.
            plain = partial(_top_k, k=k, xp=xp)
            by_threshold = partial(_top_k_rows_by_threshold, k=k)
            lax = sys.modules["jax"].lax
            columns = lax.platform_dependent(keys, cpu=plain, default=by_threshold)[1]
        elif is_numpy_namespace(xp) or is_cupy_namespace(xp):
            columns = _top_k_columns_by_partition(keys, k, xp)
        else:
            columns = xp.argsort(keys, axis=-1, descending=True, stable=True)[..., :k]
    return take_columns(x, columns, xp), columns


def selection_keys(x: Array, cap: float, xp: Namespace) -> Array:
    """``min(x, cap)`` with ``-0.0`` as ``0.0``: a new array, the key of ``top_k``'s order."""
    keys = xp.clip(x, max=cap)
    return xp.where(keys == 0, 0.0, keys)  # not ``+ 0.0``: XLA folds that away


def _top_k_columns_by_partition(keys: Array, k: int, xp: Namespace) -> Array:
    """NumPy and CuPy: ``top_k``'s columns from a partition, without sorting whole rows.

    The ``k``-th largest key ``T`` of a row is the same whichever equal keys a partition moves:
    every key above ``T`` is taken, and of the keys equal to ``T`` the lowest columns, as many
    as are missing. Those columns, compacted in column order (a scatter: a boolean index would
    synchronise CuPy), are then sorted stably by key.
    """
    native = sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
    rows, width = keys.shape
    keys = native.where(native.isnan(keys), math.inf, keys)  # NaN: a key like any other
    threshold = native.partition(keys, width - k, axis=-1)[:, width - k : width - k + 1]
    above = keys > threshold
    at = keys == threshold
    missing = k - native.sum(above, axis=-1, keepdims=True)
    if native is np:
        # On the host a branch costs nothing: the tie fill (a prefix count, slow over long
        # rows) only for the rows whose equal keys straddle the cut, and the columns by
        # nonzero (row-major: each row's in column order) instead of a scatter.
        taken = above | at
        straddle = np.flatnonzero(np.sum(at, axis=-1) > missing[:, 0])
        if straddle.size:
            fill = np.cumsum(at[straddle], axis=-1, dtype=np.int32) <= missing[straddle]
            taken[straddle] = above[straddle] | (at[straddle] & fill)
        columns = np.nonzero(taken)[1].reshape(rows, k)
    else:
        taken = above | (at & (native.cumsum(at, axis=-1) <= missing))
        slot = native.where(taken, native.cumsum(taken, axis=-1) - 1, k)  # k: thrown away
        columns = native.empty((rows, k + 1), dtype=native.int64)
        all_columns = native.broadcast_to(native.arange(width), (rows, width))
        columns[native.arange(rows)[:, None], slot] = all_columns
        columns = columns[:, :k]
    order = xp.argsort(-native.take_along_axis(keys, columns, axis=-1), axis=-1, stable=True)
    return native.take_along_axis(columns, order, axis=-1)


def _top_k_columns_torch(x: Array, k: int, excluded: Array | None, cap: float) -> Array:
    """PyTorch: ``top_k``'s columns.

    ``torch.topk`` orders equal values as it likes. On a CPU the keys are selected as they are
    (a float topk: ``-0.0 == 0.0`` there), and only where a row's ``k + 1`` largest hold equal
    keys (duplicated rows, clamped similarities) is that row's selection made again by the
    exact rule. On a GPU every row takes the exact rule (no branch on a value there).
    """
    torch = sys.modules["torch"]
    keys = torch.clamp(x, max=cap)
    if excluded is not None:
        keys.scatter_(1, excluded, -math.inf)
    exact = partial(_exact_top_k_columns_torch, k=k)
    if x.device.type != "cpu":
        return exact(keys)
    values, columns = torch.topk(keys, min(k + 1, keys.shape[1]), dim=-1, sorted=True)
    tied = torch.any(values[:, 1:] == values[:, :-1], dim=-1)
    columns = columns[:, :k]
    if torch.compiler.is_compiling():  # torch.cond: branches give dense tensors
        return torch.cond(
            torch.any(tied), lambda: exact(keys).contiguous(), lambda: columns.contiguous()
        )
    if type(tied) is not torch.Tensor:  # a fake tensor (memory estimates): no value to read
        return exact(keys)
    rows = tied.nonzero()[:, 0]  # in host memory already: no synchronisation
    if rows.numel():
        columns[rows] = exact(keys[rows])
    return columns


def _exact_top_k_columns_torch(keys: Array, k: int) -> Array:
    """PyTorch: the columns of the ``k`` largest float ``keys`` of each row, equal keys
    (``-0.0`` and ``0.0`` too) in column order, through integer keys in the floats' order.

    float32: one 64-bit key, the float's key then the column reversed, so no two are equal and
    one topk settles the order; float64 keys fill 64 bits, so those rows are sorted stably.
    """
    torch = sys.modules["torch"]
    width = keys.shape[1]
    keys = _ordered_key(keys)
    keys -= keys >> (keys.dtype.itemsize * 8 - 1)  # negative keys up by one: -0.0 meets 0.0
    if keys.dtype == torch.int32:
        composite = keys.to(torch.int64) << 32
        composite |= width - 1 - torch.arange(width, device=keys.device)
        return torch.topk(composite, k, dim=-1, sorted=True).indices
    return torch.sort(keys, dim=-1, descending=True, stable=True).indices[:, :k]


def _top_k_rows_by_threshold(x: Array, k: int) -> tuple[Array, Array]:
    """JAX: ``top_k`` of the rows of a 2-D ``x`` without a TopK of whole rows, exactly.

    1. Per row, candidate thresholds: order statistics of a strided sample of the row, placed
       so that their exact counts step through ``k`` to ``2k`` entries at or above them.
    2. Per row, the highest threshold with at least ``k`` entries at or above it.
    3. Those entries, compacted into ``cap`` slots in column order (a prefix count and a
       binary search per slot), sorted by integer keys; the first ``k`` are the answer.

    Where some row's chosen threshold keeps fewer than ``k`` or more than ``cap`` entries (many
    equal values, tiny rows), ``lax.cond`` passes to ``lax.top_k``. Equal values come in
    column order, as from ``lax.top_k``.
    """
    jnp, lax = sys.modules["jax.numpy"], sys.modules["jax"].lax
    columns = x.shape[1]
    stride = 8
    cap = _compaction_slots(k)
    if columns < 64 * stride or cap >= columns // 2:
        return _top_k(x, k, jnp)
    keys = _ordered_key(x)
    threshold, kept, exact = _row_thresholds(keys, k, cap, stride)

    def compacted() -> tuple[Array, Array]:
        position = _prefix_count(keys >= threshold[:, None])  # how many kept up to each column
        slots = jnp.arange(1, cap + 1, dtype=position.dtype)
        first_at = sys.modules["jax"].vmap(lambda p: jnp.searchsorted(p, slots, side="left"))
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

    return lax.cond(exact, compacted, lambda: _top_k(x, k, jnp))


def _compaction_slots(k: int) -> int:
    """The slots per row of ``_top_k_rows_by_threshold``: ``2 k``, as a power of two.

    A strided sample places a row's count only to within about ``sqrt(stride * k)``: at
    ``k = 205`` the chosen counts of Gaussian rows ran to ``1.7 k``.
    """
    return 1 << math.ceil(math.log2(2 * k))


def _row_thresholds(keys: Array, k: int, cap: int, stride: int) -> tuple[Array, Array, Array]:
    """JAX: per row of integer ``keys``, a threshold with at least ``k`` entries at or above it
    (the highest of the candidates), how many there are, and whether every row's count lies in
    ``[k, cap]``."""
    jnp, lax = sys.modules["jax.numpy"], sys.modules["jax"].lax
    sample = ~lax.sort(~keys[:, ::stride], dimension=1)  # descending
    steps = (0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.25, 1.4, 1.6, 2.0)
    ranks = sorted({min(sample.shape[1], math.ceil(f * k / stride)) for f in steps})
    thresholds = sample[:, jnp.asarray(ranks) - 1]  # (R, F), descending along each row
    counts = jnp.sum(keys[:, :, None] >= thresholds[:, None, :], axis=1)  # ascending
    pick = jnp.argmax(counts >= k, axis=1)[:, None]
    kept = jnp.take_along_axis(counts, pick, axis=1)[:, 0]
    threshold = jnp.take_along_axis(thresholds, pick, axis=1)[:, 0]
    return threshold, kept, jnp.all((kept >= k) & (kept <= cap))


def _top_k(x: Array, k: int, xp: Namespace) -> tuple[Array, Array]:
    """``top_k`` without exclusions (any number of leading axes)."""
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


def largest(
    x: Array | Callable[[], Array], k: int, xp: Namespace, *, row_top: Array | None = None
) -> Array:
    """The ``k`` largest entries of ``x`` (1-D or 2-D), in descending order (values only).

    ``row_top``: for a 2-D ``x``, some of the largest entries of each row, every entry left
    out of a row no larger than the least kept (most often the answer is among them); ``x``
    may then be a function that makes it, called only when it is needed.
    """
    if is_jax_namespace(xp):
        return _largest_jax(x, k, row_top)
    if is_numpy_namespace(xp) and row_top is not None and row_top.size >= k:
        # As on PyTorch's CPU: the k largest of row_top are exact when no row's smallest kept
        # entry exceeds their k-th largest (then nothing left out is larger); x is not made.
        flat = np.reshape(row_top, (-1,))
        candidates = -np.sort(-np.partition(flat, flat.size - k)[flat.size - k :])
        if np.all(np.min(row_top, axis=1) <= candidates[k - 1]):
            return candidates
    if is_torch_namespace(xp):
        if row_top is None:
            x = _made(x)
        on: Array = x if row_top is None else row_top  # the device that picks the path
        if on.device.type == "cpu":
            return _largest_torch_cpu(x, k, row_top)
    return _top_k(xp.reshape(_made(x), (-1,)), k, xp)[0]


def _made(x: Array | Callable[[], Array]) -> Array:
    return x() if callable(x) else x


def _largest_torch_cpu(x: Array, k: int, row_top: Array | None) -> Array:
    """PyTorch on the CPU, where a branch on a value costs no device synchronisation (under
    ``torch.compile`` it is a ``torch.cond``, so the graph does not break):

    1. the ``k`` largest of ``row_top``, exact when no row's smallest kept entry exceeds
       their ``k``-th largest (as on JAX);
    2. otherwise the ``k`` largest of the ``k`` largest of a few chunks, selected in parallel
       (one long row is one thread), then of those.
    """
    torch = sys.modules["torch"]

    def largest_of(values: Array) -> Array:
        # Selected unsorted, then sorted by integer keys: a float sort on a CPU is ten times slower.
        return sort_descending(torch.topk(values, k, sorted=False).values, torch)

    def from_chunks() -> Array:
        flat = _made(x).reshape(-1)
        chunks = min(8, flat.shape[0] // (4 * k))
        if chunks < 2:
            return largest_of(flat)
        size = -(-flat.shape[0] // chunks)
        padded = torch.nn.functional.pad(flat, (0, size * chunks - flat.shape[0]), value=-math.inf)
        survivors = torch.topk(padded.view(chunks, size), k, sorted=False).values
        return largest_of(survivors.reshape(-1))

    if row_top is None or row_top.numel() < k:
        return from_chunks()
    candidates = largest_of(row_top.reshape(-1))
    exact = torch.all(torch.amin(row_top, dim=1) <= candidates[-1])
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
    if row_top is not None and row_top.size >= k:
        candidates = sort_descending(jnp.reshape(row_top, (-1,)), jnp)[:k]
        exact = jnp.all(_ordered_key(jnp.min(row_top, axis=1)) <= _ordered_key(candidates[k - 1]))
        return lax.cond(exact, lambda: candidates, lambda: _largest_jax(x, k, None))
    x = _made(x)
    flat = jnp.reshape(x, (-1,))
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
    # By integer keys in the order of the floats (``~`` reverses that order): XLA sorts
    # integers with a plain comparison (a CUB radix sort on GPU; on CPU five times faster than
    # its NaN-aware float comparison), and PyTorch on a CPU radix-sorts them, ten times faster.
    if is_jax_namespace(xp):
        return _from_key(~sys.modules["jax"].lax.sort(~_ordered_key(x)), x.dtype)
    if is_torch_namespace(xp) and x.device.type == "cpu":
        return _from_key(~sys.modules["torch"].sort(~_ordered_key(x)).values, x.dtype)
    return xp.sort(x, descending=True)


def _ordered_key(x: Array) -> Array:
    """JAX or PyTorch: signed integers in the order of the floats ``x`` (NaN aside; -0.0 below
    0.0; float32 or float64).

    Applied to such integers instead, the map returns the floats' bits: it is its own inverse.
    """
    if is_torch_array(x):
        native, floating = sys.modules["torch"], x.is_floating_point()
    else:
        native = sys.modules["jax.numpy"]
        floating = native.issubdtype(x.dtype, native.floating)
    if floating:
        x = _bitcast(x, native.int64 if x.dtype == native.float64 else native.int32)
    key = x >> (x.dtype.itemsize * 8 - 1)  # all ones for negative floats: flip the rest
    key &= native.iinfo(x.dtype).max
    key ^= x
    return key


def _from_key(key: Array, dtype: Any) -> Array:
    return _bitcast(_ordered_key(key), dtype)


def _bitcast(x: Array, dtype: Any) -> Array:
    if is_torch_array(x):
        return x.view(dtype)
    return sys.modules["jax"].lax.bitcast_convert_type(x, dtype)


def symmetrized_product(matrix: Array, x: Array, xp: Namespace) -> Array:
    """``(matrix + matrix^T) @ x`` for a square ``matrix``.

    On a CPU two products are faster than one product and a transposed pass over ``matrix``
    (BLAS reads the transpose in place); on a GPU the pass is the cheaper of the two.
    """
    on_cpu = (is_torch_namespace(xp) and matrix.device.type == "cpu") or is_numpy_namespace(xp)
    if on_cpu:
        return matrix @ x + matrix.T @ x
    return (matrix + matrix.T) @ x


def log_(x: Array, xp: Namespace) -> Array:
    """``log(x)``, in place where the backend allows: ``x`` must be a temporary.

    On a CPU an ``N x N`` matrix outgrows the caches, and every new one is another trip to
    memory: the elementwise passes of the loss reuse the matrices they made.
    """
    native = _in_place_module(xp)
    return xp.log(x) if native is None else native.log(x, out=x)


def exp_(x: Array, xp: Namespace) -> Array:
    """``exp(x)``, in place where the backend allows: ``x`` must be a temporary."""
    native = _in_place_module(xp)
    return xp.exp(x) if native is None else native.exp(x, out=x)


def reciprocal_(x: Array, xp: Namespace) -> Array:
    """``1 / x``, in place where the backend allows: ``x`` must be a temporary."""
    native = _in_place_module(xp)
    return 1.0 / x if native is None else native.reciprocal(x, out=x)


def one_minus_(x: Array, xp: Namespace) -> Array:
    """``1 - x``, in place where the backend allows: ``x`` must be a temporary."""
    native = _in_place_module(xp)
    return 1.0 - x if native is None else native.subtract(1.0, x, out=x)


def add_product_(out: Array, a: Array, b: Array, xp: Namespace) -> Array:
    """``out + a * b``, in place where the backend allows: ``out`` must be a temporary."""
    if is_torch_namespace(xp):
        return out.addcmul_(a, b)
    if _in_place_module(xp) is None:
        return out + a * b
    out += a * b
    return out


def fill_at_most_(x: Array, threshold: float, value: float, xp: Namespace) -> Array:
    """``x`` with ``value`` where ``x <= threshold``, in place where the backend allows (``x`` a
    temporary). One pass on PyTorch (``threshold_``), no boolean array."""
    if is_torch_namespace(xp):
        return sys.modules["torch"].threshold_(x, threshold, value)
    native = _in_place_module(xp)
    if native is None:
        return xp.where(x <= threshold, value, x)
    native.copyto(x, value, where=x <= threshold)  # an elementwise kernel (a mask index syncs CuPy)
    return x


def _in_place_module(xp: Namespace) -> Any:
    """The native module of a backend whose arrays can be updated in place (not JAX's)."""
    if is_torch_namespace(xp):
        return sys.modules["torch"]
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        return sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
    return None


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


def first_copies(u: Array, xp: Namespace) -> tuple[Array, Array]:
    """For each row of the 2-D ``u``, the first row bitwise equal to it (itself if none), and
    whether any row has an earlier copy (a 0-d boolean).

    Rows are grouped by a hash of their bits (a stable sort puts each group's first row first),
    and a row's candidate is checked entry by entry, so a hash collision only leaves a row as
    its own. Backends whose arrays cannot be read as integers hash the floats, column by column
    in one fixed order, so that equal rows hash equally.
    """
    rows = u.shape[0]
    index = xp.arange(rows, device=device(u))
    bits = _bits(u, xp)
    if bits is None:
        digest = xp.zeros((rows,), dtype=u.dtype, device=device(u))
        for column in range(u.shape[1]):
            digest = digest * 1.5 + u[:, column]
        bits = u
    else:  # odd multipliers, one per column; integer overflow wraps, the same everywhere
        multipliers = xp.arange(u.shape[1], dtype=bits.dtype, device=device(u)) * 40503 + 12345
        digest = xp.sum(bits * (2 * multipliers + 1), axis=1, dtype=bits.dtype)
    order = xp.argsort(digest, stable=True)
    sorted_digest = xp.take(digest, order)
    first = xp.take(order, xp.searchsorted(sorted_digest, sorted_digest, side="left"))
    candidate = xp.take(first, xp.argsort(order))  # back in row order
    same = xp.all(xp.take(bits, candidate, axis=0) == bits, axis=1)
    twin = xp.where(same, candidate, index)
    return twin, xp.any(twin != index)


def _bits(u: Array, xp: Namespace) -> Array | None:
    """The floats of ``u`` as signed integers of their width, where the backend can."""
    integer = "int64" if xp.finfo(u.dtype).bits == 64 else "int32"
    if is_torch_namespace(xp):
        return u.view(getattr(sys.modules["torch"], integer))
    if is_jax_namespace(xp):
        return sys.modules["jax"].lax.bitcast_convert_type(u, getattr(xp, integer))
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        return u.view(integer)
    return None


def canonical_columns(sim: Array, twin: Array, has_copies: Array, xp: Namespace) -> Array:
    """``sim`` with each column replaced by its first copy's (``twin`` from ``first_copies``):
    bitwise-equal candidates then have bitwise-equal similarities, which a matrix product does
    not promise (a blocked product may round two equal dot products apart).

    The gather is skipped where there are no copies and a branch costs no synchronisation.
    """
    if is_numpy_namespace(xp):
        return xp.take(sim, twin, axis=1) if bool(has_copies) else sim
    if is_jax_namespace(xp):
        lax = sys.modules["jax"].lax
        return lax.cond(has_copies, lambda: xp.take(sim, twin, axis=1), lambda: sim)
    if is_torch_namespace(xp) and sim.device.type == "cpu":
        torch = sys.modules["torch"]
        if not torch.compiler.is_compiling() and type(has_copies) is torch.Tensor:
            return torch.index_select(sim, 1, twin) if bool(has_copies) else sim
    return xp.take(sim, twin, axis=1)


def row_norms(z: Array, xp: Namespace) -> Array:
    """The Euclidean norm of each row of the 2-D ``z``, without overflow.

    Where the sum of squares overflows (a float32 row with entries near 1e20 has a finite norm),
    the row is scaled by its largest magnitude first. Elsewhere the plain norm is kept: the
    scaled one rounds differently, and the published code's numbers are the reference.
    """
    plain = xp.linalg.vector_norm(z, axis=1)
    peak = xp.max(xp.abs(z), axis=1, keepdims=True)
    peak = xp.where(peak > 0, peak, 1.0)
    scaled = xp.linalg.vector_norm(z / peak, axis=1) * peak[:, 0]
    return xp.where(xp.isinf(plain), scaled, plain)


def cast_gradient(g: Array, dtype: Any, xp: Namespace) -> Array:
    """``g`` in ``dtype``; into a narrower float, saturated at its largest finite value.

    The gradient of a row of zeros is ``dL/du / 1e-8`` (the norm's floor): finite in float32,
    but beyond float16's range, where rounding would make it infinite.
    """
    if xp.finfo(dtype).bits < xp.finfo(g.dtype).bits:
        largest_value = float(xp.finfo(dtype).max)
        g = xp.clip(g, min=-largest_value, max=largest_value)
    return xp.astype(g, dtype, copy=False)


def similarity(u: Array, v: Array, xp: Namespace) -> Array:
    """``u @ v^T`` to full float32 accuracy at least, whatever the caller's global precision.

    The shortfall coordinate divides by ``1 - s``: the 10-bit mantissa of TF32 (JAX's default
    for float32 products on NVIDIA GPUs; PyTorch's with ``allow_tf32`` or a float32 matmul
    precision below ``"highest"``) puts an error of 1e-3 in ``s``, of order 1 in the logits near
    the cap. JAX is asked for its highest precision; PyTorch, where its settings allow reduced
    precision, multiplies the operands split into a TF32 part and a remainder (three products,
    exact to float32 accuracy even when each is made in TF32).
    """
    if is_jax_namespace(xp):
        lax = sys.modules["jax"].lax
        return sys.modules["jax.numpy"].matmul(u, v.T, precision=lax.Precision.HIGHEST)
    if is_torch_namespace(xp) and u.dtype == sys.modules["torch"].float32 and _torch_reduced(u):
        u_high, v_high = _tf32_part(u), _tf32_part(v)
        u_low, v_low = u - u_high, v - v_high
        return _product(u_high, v_high) + (_product(u_high, v_low) + _product(u_low, v_high))
    return u @ v.T


def _product(a: Array, b: Array) -> Array:
    """``a @ b^T`` as the framework makes it (a seam for tests that emulate TF32)."""
    return a @ b.T


def _torch_reduced(like: Array) -> bool:
    """Whether PyTorch may multiply float32 matrices on ``like``'s device in reduced precision
    (read from its global settings: no tensor value, no synchronisation)."""
    torch = sys.modules["torch"]
    if torch.compiler.is_compiling():
        # The settings are strings a graph cannot hold: a compiled GPU product always splits
        # (exact either way); CPU float32 products are full precision.
        return like.device.type != "cpu"
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return True
        return like.device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:  # the per-backend fp32_precision settings are in use: read those
        return like.device.type != "cpu" or torch.backends.mkldnn.matmul.fp32_precision != "ieee"


def _tf32_part(x: Array) -> Array:
    """float32 ``x`` with the 13 low mantissa bits cleared: exact in TF32 (10-bit mantissa)."""
    torch = sys.modules["torch"]
    return (x.view(torch.int32) & -(1 << 13)).view(torch.float32)
