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
        return sys.modules["jax"].lax.top_k(x, k)
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


def largest(x: Array, k: int, xp: Namespace) -> Array:
    """The ``k`` largest entries of the 1-D ``x``, in descending order (values only)."""
    if is_torch_namespace(xp) and x.device.type == "cpu":
        torch = sys.modules["torch"]
        chunks = min(8, x.shape[0] // (4 * k))
        if chunks >= 2:
            # The k largest of each chunk hold the k largest of all, and torch selects in the
            # chunks in parallel (one long row is one thread); the values are the same.
            size = -(-x.shape[0] // chunks)
            padded = torch.nn.functional.pad(x, (0, size * chunks - x.shape[0]), value=-math.inf)
            x = torch.topk(padded.view(chunks, size), k, sorted=False).values.reshape(-1)
    return top_k(x, k, xp)[0]


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
