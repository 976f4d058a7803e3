"""Per-row top-k selection in one Triton program per row (docs/math.md section 8's order).

For each row of ``sim`` (``R x C``): the ``k`` columns with the largest keys
``clip_s(sim) = min(sim, cap)`` among the row's candidates (the columns not in ``excluded``),
in the order of a stable descending sort by key (equal keys: the lower column first), and the
values of ``sim`` (not clipped) at those columns.

The floats become signed integers in their order (``_ordered_key``), so every comparison is
exact and NaN cannot stall a loop. A row lives in registers: the ``k``-th largest key ``T`` is
found by a bisection on its bits (one count per bit), every key above ``T`` is taken and, of
the keys equal to ``T``, the lowest columns; the ``k`` taken columns are compacted in column
order and sorted by one 64-bit key (the 32-bit key, then the column reversed). float32 only:
a float64 key leaves no bits for the column (the caller falls back to the framework).
"""

import numpy as np
import torch
import triton
import triton.language as tl

# A row must fit in one program's registers (a power of two of columns, at most this many).
MAX_COLUMNS = 1 << 15
_INF_KEY = tl.constexpr(0x7F800000)  # the key of +inf: positive NaN keys lie above it
_LOWEST = tl.constexpr(-(2**31))  # excluded and padding columns: below every float's key


@triton.jit
def _ordered_key(x, cap_key):
    """float32 -> int32 in the order of the floats, at most ``cap_key``, ``-0.0`` as ``0.0``.
    NaN is left as a float clamp leaves it: positive NaN above every key (above the cap, as
    the core's paths place it), negative NaN below ``-inf``."""
    bits = x.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: reverse the magnitude bits
    key = tl.where(key > _INF_KEY, key, tl.minimum(key, cap_key))
    return key - (key >> 31)  # negative keys up by one: -0.0 (key -1) meets 0.0 (key 0)


@triton.jit
def _select_kernel(
    sim_ptr,
    excluded_ptr,
    columns_ptr,
    values_ptr,
    n_columns,
    n_excluded,
    k,
    cap_key,
    stride_sim,
    stride_excluded,
    stride_out,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    sim_row = sim_ptr + row * stride_sim
    out_columns = columns_ptr + row * stride_out
    cols = tl.arange(0, BLOCK_C)
    inside = cols < n_columns
    key = _ordered_key(tl.load(sim_row + cols, mask=inside, other=0.0), cap_key)
    key = tl.where(inside, key, _LOWEST)
    for e in range(n_excluded):
        excluded = tl.load(excluded_ptr + row * stride_excluded + e)
        key = tl.where(cols == excluded, _LOWEST, key)

    # T: the largest t with at least k keys >= t, bit by bit from the sign bit down.
    threshold = tl.where(tl.sum((key >= 0).to(tl.int32), axis=0) >= k, 0, _LOWEST)
    for i in range(31):
        candidate = threshold + (1 << (30 - i))
        enough = tl.sum((key >= candidate).to(tl.int32), axis=0) >= k
        threshold = tl.where(enough, candidate, threshold)

    # Every key above T, and of the keys equal to T the lowest columns: exactly k in all.
    above = key > threshold
    at = key == threshold
    missing = k - tl.sum(above.to(tl.int32), axis=0)
    taken = above | (at & (tl.cumsum(at.to(tl.int32), axis=0) <= missing))
    slot = tl.cumsum(taken.to(tl.int32), axis=0) - 1
    tl.store(out_columns + slot, cols.to(tl.int64), mask=taken)
    tl.debug_barrier()  # the compacted columns, read back by other threads of the program

    # The k taken columns by (key descending, column ascending): one 64-bit key each.
    slots = tl.arange(0, BLOCK_K)
    filled = slots < k
    column = tl.load(out_columns + slots, mask=filled, other=0)
    key = _ordered_key(tl.load(sim_row + column, mask=filled, other=0.0), cap_key)
    order = ((key.to(tl.int64) + 2**31) << 31) | (2**31 - 1 - column)
    order = tl.sort(tl.where(filled, order, -1), descending=True)
    column = 2**31 - 1 - (order & (2**31 - 1))
    tl.debug_barrier()  # every thread has read its compacted column before any is overwritten
    tl.store(out_columns + slots, column, mask=filled)
    values = tl.load(sim_row + column, mask=filled, other=0.0)
    tl.store(values_ptr + row * stride_out + slots, values, mask=filled)


def supports(sim: torch.Tensor, k: int) -> bool:
    """Whether ``select_top_k`` handles ``sim`` (2-D float32, a row within ``MAX_COLUMNS``)."""
    return (
        sim.dtype == torch.float32
        and sim.ndim == 2
        and 0 < k <= sim.shape[1] <= MAX_COLUMNS
        and sim.shape[0] > 0
    )


def select_top_k(
    sim: torch.Tensor, excluded: torch.Tensor | None, k: int, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, columns)`` (``R x k``; float32, int64) of the ``k`` largest keys
    ``min(sim, cap)`` of each row's candidates, ties by the lower column.

    Args:
        sim: ``(R, C)`` float32, ``C <= MAX_COLUMNS``.
        excluded: ``(R, E)`` integer columns that are no candidates, or ``None``; each row must
            keep at least ``k`` candidates.
        k: how many columns per row.
        cap: the largest key (keys above it tie with it).

    Returns:
        The values of ``sim`` at the chosen columns and the columns, in the order (key
        descending, column ascending).
    """
    rows, width = sim.shape
    sim = sim.contiguous()
    if excluded is None:
        excluded = torch.empty((rows, 0), dtype=torch.int64, device=sim.device)
    excluded = excluded.to(torch.int64).contiguous()
    columns = torch.empty((rows, k), dtype=torch.int64, device=sim.device)
    values = torch.empty((rows, k), dtype=sim.dtype, device=sim.device)
    block_c = triton.next_power_of_2(width)
    _select_kernel[(rows,)](
        sim,
        excluded,
        columns,
        values,
        width,
        excluded.shape[1],
        k,
        cap_key(cap),
        sim.stride(0),
        excluded.stride(0),
        k,
        BLOCK_C=block_c,
        BLOCK_K=triton.next_power_of_2(k),
        num_warps=min(16, max(4, block_c // 1024)),
    )
    return values, columns


def cap_key(cap: float) -> int:
    """The ordered integer key of ``cap`` rounded to float32 (as ``_ordered_key`` makes it)."""
    bits = int(np.asarray(cap, dtype=np.float32).view(np.int32))
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return key + 1 if key < 0 else key


def select_top_k_reference(
    sim: torch.Tensor, excluded: torch.Tensor | None, k: int, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``select_top_k`` by the definition: a stable descending sort of the keys
    ``min(sim, cap)`` (``-0.0`` as ``0.0``, excluded columns last). NaN rows aside."""
    keys = torch.clamp(sim, max=cap)
    keys = torch.where(keys == 0, 0.0, keys)
    if excluded is not None:
        keys = keys.scatter(1, excluded.to(torch.int64), -torch.inf)
    columns = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(sim, 1, columns), columns
