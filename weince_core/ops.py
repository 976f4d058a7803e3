"""The few operations the Array API standard lacks, in one place.

Each has a generic version written only against the standard (what ``array_api_strict`` runs)
and, where a backend has a native kernel that is faster, a fast path to it. The native modules
are taken from ``sys.modules``: an array of a framework can only exist once that framework has
been imported, so nothing here ever imports one.
"""

from __future__ import annotations

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


def mask_from_indices(indices: Array, num_columns: int, xp: Namespace) -> Array:
    """Boolean ``(R, num_columns)`` mask, True at ``indices[r, m]`` of each row ``r``."""
    rows, width = indices.shape
    if is_torch_namespace(xp):
        torch = sys.modules["torch"]
        mask = torch.zeros((rows, num_columns), dtype=torch.bool, device=indices.device)
        return mask.scatter_(1, indices, True)
    if is_jax_namespace(xp):
        jnp = sys.modules["jax.numpy"]
        mask = jnp.zeros((rows, num_columns), dtype=bool)
        return mask.at[jnp.arange(rows)[:, None], indices].set(True)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        native = sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]
        mask = native.zeros((rows, num_columns), dtype=bool)
        mask[native.arange(rows)[:, None], indices] = True
        return mask
    columns = xp.arange(num_columns, device=device(indices))
    mask = xp.zeros((rows, num_columns), dtype=xp.bool, device=device(indices))
    for m in range(width):
        mask = mask | (columns[None, :] == indices[:, m : m + 1])
    return mask
