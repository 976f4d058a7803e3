"""PyTorch's fast paths of the operations in ``ops`` (which picks them by namespace).

PyTorch is taken from ``sys.modules``, never imported: these run only on PyTorch tensors,
which exist only once the user has imported it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from ._types import Array, DType


def _torch() -> Any:
    return sys.modules["torch"]


def detached(x: Array) -> Array:
    """``x`` outside any autograd graph."""
    return x.detach()


def sigmoid(x: Array) -> Array:
    return _torch().sigmoid(x)


def logsumexp(x: Array) -> Array:
    """``log(sum(exp(x)))`` over the last axis, PyTorch's own kernel."""
    return _torch().logsumexp(x, dim=-1)


def softmax_(x: Array) -> tuple[Array, Array]:
    """``(softmax(x), logsumexp(x))`` over the last axis, the softmax in place of ``x``: fewer
    kernel launches than the generic passes (the faster on a GPU)."""
    lse = _torch().logsumexp(x, dim=-1)
    return x.sub_(lse[..., None]).exp_(), lse


def zero_where_not_finite_(x: Array) -> Array:
    """``x`` with 0 where it is not finite, in place: one kernel (isfinite and where make five)."""
    return x.nan_to_num_(0.0, 0.0, 0.0)


def add_product_(out: Array, a: Array, b: Array) -> Array:
    """``out + a * b`` in place of ``out``."""
    return out.addcmul_(a, b)


def fill_at_most_(x: Array, threshold: float, value: float) -> Array:
    """``x`` with ``value`` where ``x <= threshold``, in place: one pass, no boolean tensor."""
    return _torch().threshold_(x, threshold, value)


def take_columns(matrix: Array, columns: Array) -> Array:
    # torch.gather itself: array_api_compat's take_along_axis adds five kernels per call to
    # wrap negative indices, which these never are.
    return _torch().gather(matrix, 1, columns)


def mask_columns(matrix: Array, columns: Array) -> Array:
    return matrix.scatter_(1, columns, -math.inf)


def add_at_columns(matrix: Array, columns: Array, values: Array) -> Array:
    return matrix.scatter_add_(1, columns, values)


def float_bits(u: Array, integer: str) -> Array:
    """The floats of ``u`` as the signed integers ``integer`` (``"int32"`` or ``"int64"``)."""
    return u.view(getattr(_torch(), integer))


def canonical_columns(sim: Array, twin: Array, has_copies: Array) -> Array:
    """``sim``'s columns replaced by their first copies' (see ``ops.canonical_columns``); on a
    CPU, eagerly, the gather is skipped where there are no copies (a branch costs nothing)."""
    torch = _torch()
    if sim.device.type == "cpu":
        if not torch.compiler.is_compiling() and type(has_copies) is torch.Tensor:
            return torch.index_select(sim, 1, twin) if bool(has_copies) else sim
    return torch.index_select(sim, 1, twin)


def top_k_last_axis(x: Array, k: int) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis and their indices (order of equal values
    unspecified)."""
    return _torch().topk(x, k, dim=-1, sorted=True)


def top_k_columns(x: Array, k: int, excluded: Array | None, cap: float) -> Array:
    """The columns of ``ops.top_k``.

    ``torch.topk`` orders equal values as it likes. On a CPU the keys are selected as they are
    (a float topk: ``-0.0 == 0.0`` there), and only where a row's ``k + 1`` largest hold equal
    keys (duplicated rows, clamped similarities) is that row's selection made again by the
    exact rule. On a GPU every row takes the exact rule (no branch on a value there).
    """
    torch = _torch()
    keys = torch.clamp(x, max=cap)
    if excluded is not None:
        keys.scatter_(1, excluded, -math.inf)
    exact = partial(exact_top_k_columns, k=k)
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


def exact_top_k_columns(keys: Array, k: int) -> Array:
    """The columns of the ``k`` largest float ``keys`` of each row, equal keys (``-0.0`` and
    ``0.0`` too) in column order, through integer keys in the floats' order.

    float32: one 64-bit key, the float's key then the column reversed, so no two are equal and
    one topk settles the order; float64 keys fill 64 bits, so those rows are sorted stably.
    """
    torch = _torch()
    width = keys.shape[1]
    keys = ordered_key(keys)
    keys -= keys >> (keys.dtype.itemsize * 8 - 1)  # negative keys up by one: -0.0 meets 0.0
    if keys.dtype == torch.int32:
        composite = keys.to(torch.int64) << 32
        composite |= width - 1 - torch.arange(width, device=keys.device)
        return torch.topk(composite, k, dim=-1, sorted=True).indices
    return torch.sort(keys, dim=-1, descending=True, stable=True).indices[:, :k]


def sort_descending_cpu(x: Array) -> Array:
    """The entries of the 1-D CPU tensor ``x`` in descending order: by integer keys in the
    floats' order (``~`` reverses it), which PyTorch radix-sorts ten times faster."""
    return from_key(~_torch().sort(~ordered_key(x)).values, x.dtype)


def largest_cpu(x: Array | Callable[[], Array], k: int, row_top: Array | None) -> Array:
    """``ops.largest`` on the CPU, where a branch on a value costs no device synchronisation
    (under ``torch.compile`` it is a ``torch.cond``, so the graph does not break):

    1. the ``k`` largest of ``row_top``, exact when no row's smallest kept entry exceeds
       their ``k``-th largest (as on JAX);
    2. otherwise the ``k`` largest of the ``k`` largest of a few chunks, selected in parallel
       (one long row is one thread), then of those.
    """
    torch = _torch()

    def largest_of(values: Array) -> Array:
        # Selected unsorted, then sorted by integer keys: a float sort on a CPU is ten times slower.
        return sort_descending_cpu(torch.topk(values, k, sorted=False).values)

    def from_chunks() -> Array:
        flat = (x() if callable(x) else x).reshape(-1)
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


def ordered_key(x: Array) -> Array:
    """Signed integers in the order of the floats ``x`` (NaN aside; -0.0 below 0.0; float32 or
    float64). Applied to such integers instead, the map returns the floats' bits: it is its
    own inverse."""
    torch = _torch()
    if x.is_floating_point():
        x = x.view(torch.int64 if x.dtype == torch.float64 else torch.int32)
    key = x >> (x.dtype.itemsize * 8 - 1)  # all ones for negative floats: flip the rest
    key &= torch.iinfo(x.dtype).max
    key ^= x
    return key


def from_key(key: Array, dtype: DType) -> Array:
    """The floats of ``dtype`` whose ``ordered_key`` is ``key``."""
    return ordered_key(key).view(dtype)


def similarity(u: Array, v: Array) -> Array:
    """``u @ v^T`` to full float32 accuracy, whatever PyTorch's global precision settings.

    Where the settings allow reduced precision (TF32) for float32 products on ``u``'s device,
    the operands are split into a TF32 part and a remainder: three products, exact to float32
    accuracy even when each is made in TF32.
    """
    if u.dtype == _torch().float32 and reduced_precision(u):
        u_high, v_high = tf32_part(u), tf32_part(v)
        u_low, v_low = u - u_high, v - v_high
        return product(u_high, v_high) + (product(u_high, v_low) + product(u_low, v_high))
    return u @ v.T


def product(a: Array, b: Array) -> Array:
    """``a @ b^T`` as the framework makes it (a seam for tests that emulate TF32)."""
    return a @ b.T


def reduced_precision(like: Array) -> bool:
    """Whether PyTorch may multiply float32 matrices on ``like``'s device in reduced precision
    (read from its global settings: no tensor value, no synchronisation)."""
    torch = _torch()
    if torch.compiler.is_compiling():
        # The settings are strings a graph cannot hold: a compiled GPU product always splits
        # (exact either way); CPU float32 products are full precision.
        return bool(like.device.type != "cpu")
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return True
        return like.device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:  # the per-backend fp32_precision settings are in use: read those
        return bool(
            like.device.type != "cpu" or torch.backends.mkldnn.matmul.fp32_precision != "ieee"
        )


def tf32_part(x: Array) -> Array:
    """float32 ``x`` with the 13 low mantissa bits cleared: exact in TF32 (10-bit mantissa)."""
    torch = _torch()
    return (x.view(torch.int32) & -(1 << 13)).view(torch.float32)
