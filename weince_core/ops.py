"""The few operations the Array API standard lacks, and the one place that picks how each runs.

Each operation has a version written only against the standard (``_standard``, what
``array_api_strict`` runs) and, where a framework has a faster native path, that path in the
framework's own module (``_fast_torch``, ``_fast_jax``, ``_fast_numpy`` for NumPy and CuPy).
The functions here only choose, by the namespace ``xp`` the caller found once: the way
array-api-extra keeps its delegation apart from its generic functions. Native modules are
taken from ``sys.modules``: an array of a framework can only exist once that framework has been
imported, so nothing here ever imports one.

Adapters may route an operation through a native kernel of their own (``register_kernel``):
the fused GPU kernels of ``weince_torch`` (Triton) and ``weince_cupy`` (CUDA C).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from array_api_compat import (
    device,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from . import _fast_jax, _fast_numpy, _fast_torch, _standard
from ._standard import cast_gradient, row_norms, selection_keys
from ._types import Array, Namespace

__all__ = [
    "add_at_columns",
    "add_product_",
    "canonical_columns",
    "cast_gradient",
    "detached",
    "device",
    "exp_",
    "fill_at_most_",
    "first_copies",
    "kernel_result",
    "largest",
    "log_",
    "logsumexp",
    "mask_columns",
    "one_minus_",
    "reciprocal_",
    "register_kernel",
    "row_norms",
    "selection_keys",
    "sigmoid",
    "similarity",
    "softmax_",
    "sort_descending",
    "symmetrized_product",
    "take_columns",
    "top_k",
]

# ---------------------------------------------------------------------------------------------
# Native kernels that adapters register, by operation; each returns ``None`` where it does not
# apply to its arguments (another framework's arrays, say), and the next one, or the core's own
# path, runs.

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
    """The result of the first kernel registered for ``name`` that applies.

    Args:
        name: the operation, as in ``register_kernel``.
        *args: its arguments.

    Returns:
        The kernel's result, or ``None`` where no registered kernel applies.
    """
    for kernel in _KERNELS.get(name, ()):
        result = kernel(*args)
        if result is not None:
            return result
    return None


# ---------------------------------------------------------------------------------------------
# Dispatch


def native_module(xp: Namespace) -> Any:
    """The native module behind NumPy's or CuPy's namespace.

    Args:
        xp: a NumPy or CuPy namespace.

    Returns:
        ``numpy`` or ``cupy``.
    """
    return sys.modules["cupy" if is_cupy_namespace(xp) else "numpy"]


def _in_place_module(xp: Namespace) -> Any:
    """The native module of a backend whose arrays can be updated in place (not JAX's): its
    elementwise functions take ``out=``."""
    if is_torch_namespace(xp):
        return sys.modules["torch"]
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        return native_module(xp)
    return None


def _numpy_like(xp: Namespace) -> bool:
    return bool(is_numpy_namespace(xp) or is_cupy_namespace(xp))


def _made(x: Array | Callable[[], Array]) -> Array:
    return x() if callable(x) else x


def detached(x: Array, xp: Namespace) -> Array:
    """``x``'s values outside any autograd graph (a PyTorch tensor is detached).

    The core's gradient is its analytic backward pass, never autograd through its operations:
    those select by integer keys and update arrays in place, which autograd cannot follow.

    Args:
        x: the array.
        xp: its namespace.

    Returns:
        ``x``, detached where the framework has autograd.
    """
    return _fast_torch.detached(x) if is_torch_namespace(xp) else x


def sigmoid(x: Array, xp: Namespace) -> Array:
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    Args:
        x: the array.
        xp: its namespace.

    Returns:
        A new array of ``x``'s shape.
    """
    if is_torch_namespace(xp):
        return _fast_torch.sigmoid(x)
    if is_jax_namespace(xp):
        return _fast_jax.sigmoid(x)
    return _standard.sigmoid(x, xp)


def logsumexp(x: Array, xp: Namespace, *, overwrite: bool = False) -> Array:
    """``log(sum(exp(x)))`` over the last axis; entries of ``-inf`` are left out.

    Args:
        x: the array.
        xp: its namespace.
        overwrite: ``x`` is a temporary the call may clobber, so no array of its size is made
            (where that pays: on a GPU, PyTorch's own kernel, with fewer launches, is the faster).

    Returns:
        ``x``'s shape less its last axis.
    """
    if is_jax_namespace(xp):
        return _fast_jax.logsumexp(x)
    if is_torch_namespace(xp) and not (overwrite and x.device.type == "cpu"):
        return _fast_torch.logsumexp(x)
    return _exp_shifted(x, xp, in_place=overwrite)[2]


def softmax_(x: Array, xp: Namespace) -> tuple[Array, Array]:
    """The softmax over the last axis, in place of ``x`` where the backend allows.

    Args:
        x: a temporary; entries of ``-inf`` get probability 0.
        xp: its namespace.

    Returns:
        ``(softmax(x), logsumexp(x))``.
    """
    if is_torch_namespace(xp) and x.device.type != "cpu":
        return _fast_torch.softmax_(x)  # on a CPU the passes below make no new array
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
        peak = _fast_torch.zero_where_not_finite_(peak)
    else:
        peak = _standard.zero_where_not_finite(peak, xp)
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
    """The ``k`` entries of each row of the 2-D ``x`` with the largest keys ``min(x, cap)``.

    Equal keys come in column order and, where they straddle the cut, the lower columns are
    taken: the order of a stable descending sort (docs/math.md section 8). ``-0.0`` and ``0.0``
    are equal keys.

    Args:
        x: ``(R, C)`` values.
        k: how many per row.
        xp: ``x``'s namespace.
        excluded: ``(R, E)`` integer columns left out of their rows, or ``None``.
        cap: the keys are ``min(x, cap)``.

    Returns:
        ``(values, columns)``, both ``(R, k)``: ``x``'s own values (not clipped) at the chosen
        columns, in descending order of their keys.
    """
    native = kernel_result("top_k", x, k, excluded, cap)
    if native is not None:
        return native
    if is_torch_namespace(xp):
        columns = _fast_torch.top_k_columns(x, k, excluded, cap)
    else:
        keys = selection_keys(x, cap, xp)
        if excluded is not None:
            keys = mask_columns(keys, excluded, xp)
        if is_jax_namespace(xp):
            columns = _fast_jax.top_k_columns(keys, k)
        elif _numpy_like(xp):
            columns = _fast_numpy.top_k_columns_by_partition(keys, k, xp, native_module(xp))
        else:
            columns = _standard.top_k_columns(keys, k, xp)
    return take_columns(x, columns, xp), columns


def _top_k_last_axis(x: Array, k: int, xp: Namespace) -> tuple[Array, Array]:
    """The ``k`` largest entries along the last axis (any leading axes), no exclusions."""
    if is_torch_namespace(xp):
        return _fast_torch.top_k_last_axis(x, k)
    if is_jax_namespace(xp):
        return _fast_jax.top_k_last_axis(x, k)
    if _numpy_like(xp) and k < x.shape[-1]:
        return _fast_numpy.top_k_last_axis(x, k, native_module(xp))
    return _standard.top_k_last_axis(x, k, xp)


def largest(
    x: Array | Callable[[], Array], k: int, xp: Namespace, *, row_top: Array | None = None
) -> Array:
    """The ``k`` largest entries of ``x`` (1-D or 2-D), in descending order (values only).

    Args:
        x: the array, or a function that makes it (with ``row_top``: called only when the
            answer is not among ``row_top``).
        k: how many.
        xp: the namespace.
        row_top: for a 2-D ``x``, some of the largest entries of each row, every entry left
            out of a row no larger than the least kept (most often the answer is among them).

    Returns:
        The ``k`` largest values, 1-D, descending.
    """
    if is_jax_namespace(xp):
        return _fast_jax.largest(x, k, row_top)
    if is_numpy_namespace(xp) and row_top is not None and row_top.size >= k:
        # As on PyTorch's CPU: x is not made where row_top settles it.
        candidates = _fast_numpy.largest_from_row_top(row_top, k)
        if candidates is not None:
            return candidates
    if is_torch_namespace(xp):
        if row_top is None:
            x = _made(x)
        on: Array = x if row_top is None else row_top  # the device that picks the path
        if on.device.type == "cpu":
            return _fast_torch.largest_cpu(x, k, row_top)
    return _top_k_last_axis(xp.reshape(_made(x), (-1,)), k, xp)[0]


def sort_descending(x: Array, xp: Namespace) -> Array:
    """The entries of the 1-D ``x`` in descending order.

    Args:
        x: a 1-D float array.
        xp: its namespace.

    Returns:
        A new sorted array.
    """
    if is_jax_namespace(xp):
        return _fast_jax.sort_descending(x)
    if is_torch_namespace(xp) and x.device.type == "cpu":
        return _fast_torch.sort_descending_cpu(x)
    return xp.sort(x, descending=True)


def symmetrized_product(matrix: Array, x: Array, xp: Namespace) -> Array:
    """``(matrix + matrix^T) @ x`` for a square ``matrix``.

    On a CPU two products are faster than one product and a transposed pass over ``matrix``
    (BLAS reads the transpose in place); on a GPU the pass is the cheaper of the two.

    Args:
        matrix: ``(R, R)``.
        x: ``(R, d)``.
        xp: their namespace.

    Returns:
        ``(R, d)``.
    """
    on_cpu = (is_torch_namespace(xp) and matrix.device.type == "cpu") or is_numpy_namespace(xp)
    if on_cpu:
        return matrix @ x + matrix.T @ x
    return (matrix + matrix.T) @ x


# In-place elementwise operations. On a CPU an ``N x N`` matrix outgrows the caches, and every
# new one is another trip to memory: the elementwise passes of the loss reuse the matrices they
# made. Each argument so updated must be a temporary.


def log_(x: Array, xp: Namespace) -> Array:
    """``log(x)``, in place where the backend allows.

    Args:
        x: a temporary.
        xp: its namespace.

    Returns:
        The result (``x`` itself where updated in place).
    """
    native = _in_place_module(xp)
    return xp.log(x) if native is None else native.log(x, out=x)


def exp_(x: Array, xp: Namespace) -> Array:
    """``exp(x)``, in place where the backend allows.

    Args:
        x: a temporary.
        xp: its namespace.

    Returns:
        The result (``x`` itself where updated in place).
    """
    native = _in_place_module(xp)
    return xp.exp(x) if native is None else native.exp(x, out=x)


def reciprocal_(x: Array, xp: Namespace) -> Array:
    """``1 / x``, in place where the backend allows.

    Args:
        x: a temporary.
        xp: its namespace.

    Returns:
        The result (``x`` itself where updated in place).
    """
    native = _in_place_module(xp)
    return 1.0 / x if native is None else native.reciprocal(x, out=x)


def one_minus_(x: Array, xp: Namespace) -> Array:
    """``1 - x``, in place where the backend allows.

    Args:
        x: a temporary.
        xp: its namespace.

    Returns:
        The result (``x`` itself where updated in place).
    """
    native = _in_place_module(xp)
    return 1.0 - x if native is None else native.subtract(1.0, x, out=x)


def add_product_(out: Array, a: Array, b: Array, xp: Namespace) -> Array:
    """``out + a * b``, in place of ``out`` where the backend allows.

    Args:
        out: a temporary.
        a: broadcast against ``out``.
        b: broadcast against ``out``.
        xp: their namespace.

    Returns:
        The result (``out`` itself where updated in place).
    """
    if is_torch_namespace(xp):
        return _fast_torch.add_product_(out, a, b)
    if _in_place_module(xp) is None:
        return out + a * b
    out += a * b
    return out


def fill_at_most_(x: Array, threshold: float, value: float, xp: Namespace) -> Array:
    """``x`` with ``value`` where ``x <= threshold``, in place where the backend allows (one pass on
    PyTorch, no boolean array).

    Args:
        x: a temporary.
        threshold: the largest value replaced.
        value: what replaces it.
        xp: its namespace.

    Returns:
        The result (``x`` itself where updated in place).
    """
    if is_torch_namespace(xp):
        return _fast_torch.fill_at_most_(x, threshold, value)
    if _numpy_like(xp):
        return _fast_numpy.fill_at_most_(x, threshold, value, native_module(xp))
    return xp.where(x <= threshold, value, x)


# Columns of each row, by integer index.


def take_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    """``out[r, m] = matrix[r, columns[r, m]]``.

    Args:
        matrix: ``(R, C)``.
        columns: ``(R, M)`` non-negative integer columns.
        xp: their namespace.

    Returns:
        ``(R, M)``.
    """
    if is_torch_namespace(xp):
        return _fast_torch.take_columns(matrix, columns)
    return _standard.take_columns(matrix, columns, xp)


def mask_columns(matrix: Array, columns: Array, xp: Namespace) -> Array:
    """``matrix`` with ``-inf`` at ``(r, columns[r, m])``: columns that are no candidates.

    Like ``add_at_columns``, ``matrix`` must be a temporary: it is updated in place where the
    backend allows, which costs a pass over the ``R x E`` entries instead of the ``R x C``.

    Args:
        matrix: ``(R, C)``, a temporary.
        columns: ``(R, E)`` integer columns.
        xp: their namespace.

    Returns:
        The masked matrix (``matrix`` itself where updated in place).
    """
    if is_torch_namespace(xp):
        return _fast_torch.mask_columns(matrix, columns)
    if is_jax_namespace(xp):
        return _fast_jax.mask_columns(matrix, columns)
    if _numpy_like(xp):
        return _fast_numpy.mask_columns(matrix, columns, native_module(xp))
    return _standard.mask_columns(matrix, columns, xp)


def add_at_columns(matrix: Array, columns: Array, values: Array, xp: Namespace) -> Array:
    """``matrix`` with ``values[r, m]`` added at ``(r, columns[r, m])``.

    The columns of one row must be distinct (they are: hard negatives, or one positive), so
    the native scatters need not accumulate duplicates. ``matrix`` must be a temporary: the
    NumPy, CuPy and PyTorch paths update it in place (a copy of an N x N matrix is a full pass).

    Args:
        matrix: ``(R, C)``, a temporary.
        columns: ``(R, M)`` integer columns, distinct within a row.
        values: ``(R, M)``.
        xp: their namespace.

    Returns:
        The sum (``matrix`` itself where updated in place).
    """
    if is_torch_namespace(xp):
        return _fast_torch.add_at_columns(matrix, columns, values)
    if is_jax_namespace(xp):
        return _fast_jax.add_at_columns(matrix, columns, values)
    if _numpy_like(xp):
        return _fast_numpy.add_at_columns(matrix, columns, values, native_module(xp))
    return _standard.add_at_columns(matrix, columns, values, xp)


# Bitwise-equal rows (docs/math.md section 8).


def first_copies(u: Array, xp: Namespace) -> tuple[Array, Array]:
    """Bitwise-equal rows (docs/math.md section 8).

    Rows are grouped by a hash of their bits (a stable sort puts each group's first row first),
    and a row's candidate is checked entry by entry, so a hash collision only leaves a row as
    its own. Backends whose arrays cannot be read as integers hash the floats.

    Args:
        u: a 2-D float array.
        xp: its namespace.

    Returns:
        ``(twin, has_copies)``: for each row the first row bitwise equal to it (itself if none),
        and whether any row has an earlier copy (a 0-d boolean).
    """
    integer = "int64" if xp.finfo(u.dtype).bits == 64 else "int32"
    bits = None
    if is_torch_namespace(xp):
        bits = _fast_torch.float_bits(u, integer)
    elif is_jax_namespace(xp):
        bits = _fast_jax.float_bits(u, integer)
    elif _numpy_like(xp):
        bits = u.view(integer)
    return _standard.first_copies(u, bits, xp)


def canonical_columns(sim: Array, twin: Array, has_copies: Array, xp: Namespace) -> Array:
    """``sim`` with each column replaced by its first copy's: bitwise-equal candidates then have
    bitwise-equal similarities, which a matrix product does not promise (a blocked product may
    round two equal dot products apart; docs/math.md section 8).

    The gather is skipped where there are no copies and a branch costs no synchronisation.

    Args:
        sim: ``(R, C)``.
        twin: from ``first_copies`` of the candidates.
        has_copies: from ``first_copies``.
        xp: their namespace.

    Returns:
        ``(R, C)``.
    """
    if is_numpy_namespace(xp):
        return xp.take(sim, twin, axis=1) if bool(has_copies) else sim
    if is_jax_namespace(xp):
        return _fast_jax.canonical_columns(sim, twin, has_copies)
    if is_torch_namespace(xp):
        return _fast_torch.canonical_columns(sim, twin, has_copies)
    return xp.take(sim, twin, axis=1)


def similarity(u: Array, v: Array, xp: Namespace) -> Array:
    """``u @ v^T`` to full float32 accuracy at least, whatever the caller's global precision.

    The shortfall coordinate divides by ``1 - s``: the 10-bit mantissa of TF32 (JAX's default
    for float32 products on NVIDIA GPUs; PyTorch's with ``allow_tf32`` or a float32 matmul
    precision below ``"highest"``) puts an error of 1e-3 in ``s``, of order 1 in the logits near
    the cap (docs/math.md section 7). JAX is asked for its highest precision; PyTorch splits the
    operands where its settings allow reduced precision (``_fast_torch.similarity``).

    Args:
        u: ``(R, d)``.
        v: ``(C, d)``.
        xp: their namespace.

    Returns:
        ``(R, C)``.
    """
    if is_jax_namespace(xp):
        return _fast_jax.similarity(u, v)
    if is_torch_namespace(xp):
        return _fast_torch.similarity(u, v)
    return u @ v.T
