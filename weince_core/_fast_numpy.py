"""NumPy's and CuPy's fast paths of the operations in ``ops`` (which picks them by namespace).

CuPy mirrors NumPy's API, so one function serves both, given the native module (``numpy`` or
``cupy``, from ``ops.native_module``). On CuPy nothing here reads a value back to the host:
no boolean index (it would synchronise), scatters instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._types import Array, Namespace


def mask_columns(matrix: Array, columns: Array, native: Any) -> Array:
    matrix[native.arange(matrix.shape[0])[:, None], columns] = -math.inf
    return matrix


def add_at_columns(matrix: Array, columns: Array, values: Array, native: Any) -> Array:
    matrix[native.arange(matrix.shape[0])[:, None], columns] += values
    return matrix


def fill_at_most_(x: Array, threshold: float, value: float, native: Any) -> Array:
    """``x`` with ``value`` where ``x <= threshold``, in place: an elementwise kernel (a mask
    index synchronises CuPy)."""
    native.copyto(x, value, where=x <= threshold)
    return x


def top_k_last_axis(x: Array, k: int, native: Any) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis (``k`` less than its length) and their
    indices: a partition first, then a sort of the ``k`` survivors only."""
    part = native.argpartition(x, -k, axis=-1)[..., -k:]
    values = native.take_along_axis(x, part, axis=-1)
    order = native.argsort(-values, axis=-1)
    return native.take_along_axis(values, order, axis=-1), native.take_along_axis(
        part, order, axis=-1
    )


def top_k_columns_by_partition(keys: Array, k: int, xp: Namespace, native: Any) -> Array:
    """``ops.top_k``'s columns from a partition, without sorting whole rows.

    The ``k``-th largest key ``T`` of a row is the same whichever equal keys a partition moves:
    every key above ``T`` is taken, and of the keys equal to ``T`` the lowest columns, as many
    as are missing. Those columns, compacted in column order (a scatter: a boolean index would
    synchronise CuPy), are then sorted stably by key.
    """
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


def largest_from_row_top(row_top: Array, k: int) -> Array | None:
    """NumPy: the ``k`` largest of ``row_top`` where they are those of the whole array (no
    row's smallest kept entry exceeds their ``k``-th largest: nothing left out is larger), else
    ``None``. A branch on a value costs nothing on the host."""
    flat = np.reshape(row_top, (-1,))
    candidates = -np.sort(-np.partition(flat, flat.size - k)[flat.size - k :])
    if np.all(np.min(row_top, axis=1) <= candidates[k - 1]):
        return candidates
    return None
