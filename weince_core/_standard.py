"""The operations of ``ops`` written only against the Array API standard.

What every namespace can run (``array_api_strict`` included), and the reference the fast paths
(``_fast_torch``, ``_fast_jax``, ``_fast_numpy``) must agree with. ``ops`` picks between them.
"""

from __future__ import annotations

import math

from array_api_compat import device

from ._types import Array, DType, Namespace


def sigmoid(x: Array, xp: Namespace) -> Array:
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def zero_where_not_finite(x: Array, xp: Namespace) -> Array:
    return xp.where(xp.isfinite(x), x, 0.0)


def selection_keys(x: Array, cap: float, xp: Namespace) -> Array:
    """``min(x, cap)`` with ``-0.0`` as ``0.0``: a new array, the key of ``top_k``'s order."""
    keys = xp.clip(x, max=cap)
    return xp.where(keys == 0, 0.0, keys)  # not ``+ 0.0``: XLA folds that away


def top_k_columns(keys: Array, k: int, xp: Namespace) -> Array:
    """The columns of the ``k`` largest ``keys`` of each row, equal keys in column order."""
    return xp.argsort(keys, axis=-1, descending=True, stable=True)[..., :k]


def top_k_last_axis(x: Array, k: int, xp: Namespace) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis and their indices, equal values in index
    order."""
    indices = xp.argsort(x, axis=-1, descending=True, stable=True)[..., :k]
    return xp.take_along_axis(x, indices, axis=-1), indices


def take_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    return xp.take_along_axis(matrix, columns, axis=1)


def mask_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    """``matrix`` with ``-inf`` at ``(r, columns[r, m])``, one ``where`` per column of
    ``columns`` (no scatter in the standard)."""
    all_columns = xp.arange(matrix.shape[1], device=device(matrix))[None, :]
    for m in range(columns.shape[1]):
        matrix = xp.where(all_columns == columns[:, m : m + 1], -math.inf, matrix)
    return matrix


def add_at_columns(matrix: Array, columns: Array, values: Array, xp: Namespace) -> Array:
    """``matrix`` with ``values[r, m]`` added at ``(r, columns[r, m])``, one ``where`` per
    column of ``columns``."""
    all_columns = xp.arange(matrix.shape[1], device=device(matrix))[None, :]
    for m in range(columns.shape[1]):
        matrix = matrix + xp.where(all_columns == columns[:, m : m + 1], values[:, m : m + 1], 0.0)
    return matrix


def first_copies(u: Array, bits: Array | None, xp: Namespace) -> tuple[Array, Array]:
    """``ops.first_copies`` given ``u``'s floats as integers (``bits``), or ``None`` where the
    backend cannot read them so: the floats are then hashed, column by column in one fixed
    order, so that equal rows hash equally."""
    rows = u.shape[0]
    index = xp.arange(rows, device=device(u))
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


def cast_gradient(g: Array, dtype: DType, xp: Namespace) -> Array:
    """``g`` in ``dtype``; into a narrower float, saturated at its largest finite value.

    The gradient of a row of zeros is ``dL/du / 1e-8`` (the norm's floor): finite in float32,
    but beyond float16's range, where rounding would make it infinite.
    """
    if xp.finfo(dtype).bits < xp.finfo(g.dtype).bits:
        largest_value = float(xp.finfo(dtype).max)
        g = xp.clip(g, min=-largest_value, max=largest_value)
    return xp.astype(g, dtype, copy=False)
