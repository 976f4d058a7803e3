"""The two-view (SimCLR / NT-Xent) form: ``Z = [z_i; z_j]``, ``S = U U^T``, positive ``a + N``.

``nt_xent_forward`` keeps O(N d) residuals; ``nt_xent_backward`` recomputes ``S`` from them
(unless ``S`` is no larger than a few times ``U``: then it is kept, see ``KEPT_SIM_RATIO``).
``nt_xent_value_and_grad`` computes the loss and its gradient in one pass, recomputing nothing.
Spread over ranks, each rank's rows of ``S`` are its anchors against every rank's rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

from .collectives import Collectives
from .config import WEINCEConfig
from .ops import (
    canonical_columns,
    cast_gradient,
    detached,
    first_copies,
    row_norms,
    similarity,
    symmetrized_product,
)
from .rows import RowsResiduals, rows_backward, rows_forward, rows_value_and_grad
from .validation import check_config, check_pair, check_residuals, compute_dtype

Array = Any
Namespace = Any

NORM_FLOOR = 1e-8
# S is kept for the backward pass while it has at most this many times the entries of the
# unit rows (2N <= 4 d): a matrix product saved, and memory still O(N d). Larger, it is
# recomputed.
KEPT_SIM_RATIO = 4


class NTXentResiduals(NamedTuple):
    """Everything the backward pass keeps from the forward pass: O(N d)."""

    u: Array  # (2n, d) this rank's unit rows, z_i's first
    scale: Array  # (2n,) max(||Z_a||, 1e-8)
    u_all: Array  # (2N, d) the unit rows of every rank, [U_i; U_j] (u itself on one device)
    anchors: Array  # (2n,) the rows of u_all that u's rows are
    sim: Array | None  # (2n, 2N) S = u u_all^T where that is small (KEPT_SIM_RATIO), else None
    rows: RowsResiduals


def _two_view_rows(anchors: Array, total: int) -> tuple[Array, Array]:
    """Positive columns ``(a + N) mod 2N`` of the anchors, and each anchor's own column."""
    return (anchors + total // 2) % total, anchors[:, None]


def _join_views(u_i: Array, u_j: Array, collectives: Collectives | None, xp: Namespace) -> Array:
    if collectives is None:
        return xp.concat([u_i, u_j], axis=0)
    return xp.concat([collectives.gather(u_i), collectives.gather(u_j)], axis=0)


def nt_xent_forward(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    collectives: Collectives | None = None,
) -> tuple[Array, Array, dict[str, Array], NTXentResiduals]:
    """``(loss, new_state, stats, residuals)`` of the two-view WEINCE loss.

    ``z_i``, ``z_j``: ``(N, d)`` embeddings of the two views, ``N >= 2``; ``state``: ``beta_t``
    from ``init_state``. Half-precision inputs are computed in float32. PyTorch tensors are read
    as values (detached): the gradient is ``nt_xent_backward``'s, or autograd's through
    ``weince_torch``, which uses it.

    With ``collectives`` (see ``Collectives``), ``z_i`` and ``z_j`` are this rank's ``n`` rows
    of a global batch joined in rank order; the loss, ``beta_t`` and the summary statistics are
    those of the global batch, the per-anchor statistics those of this rank's anchors.
    """
    loss, new_state, stats, residuals = _nt_xent(z_i, z_j, state, config, collectives, None)
    return loss, new_state, stats, residuals


def _nt_xent(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None,
    collectives: Collectives | None,
    grad_dtype: Any,
) -> tuple[Array, Array, dict[str, Array], Any]:
    """``nt_xent_forward``, or with ``grad_dtype`` (not None) ``nt_xent_value_and_grad`` with
    the gradient in that dtype in place of the residuals."""
    config = check_config(config)
    xp = check_pair(z_i, z_j, state)
    z_i, z_j, state = (detached(array, xp) for array in (z_i, z_j, state))
    dtype = compute_dtype(z_i.dtype, xp)
    n = z_i.shape[0]
    z = xp.astype(xp.concat([z_i, z_j], axis=0), dtype, copy=False)
    scale = xp.clip(row_norms(z, xp), min=NORM_FLOOR)
    u = z / scale[:, None]
    u_all = u if collectives is None else _join_views(u[:n, :], u[n:, :], collectives, xp)
    copies = first_copies(u_all, xp)
    total = u_all.shape[0]
    if collectives is None:
        anchors = xp.arange(total, device=device(u))
    else:
        own = xp.arange(n, device=device(u)) + collectives.rank * n
        anchors = xp.concat([own, own + total // 2])
    positive, excluded = _two_view_rows(anchors, total)
    rows_args = (positive, excluded, xp.astype(state, dtype), config)  # the state: a copy
    # Every column is a negative of some row, and unit rows that are finite have finite
    # products: the negatives are finite exactly where U is.
    finite = xp.all(xp.isfinite(u_all))
    if grad_dtype is not None:
        # S is passed as a temporary, so that it is freed before the gradient's products.
        loss, beta_t, stats, d_sim = rows_value_and_grad(
            canonical_columns(similarity(u, u_all, xp), *copies, xp),
            *rows_args,
            num_negatives=total - 2,
            collectives=collectives,
            negatives_finite=finite,
        )
        g_z = cast_gradient(
            _embedding_gradient(d_sim, u, scale, u_all, collectives), grad_dtype, xp
        )
        return loss, xp.astype(beta_t, state.dtype), stats, (g_z[:n, :], g_z[n:, :])
    sim = canonical_columns(similarity(u, u_all, xp), *copies, xp)
    loss, beta_t, stats, rows = rows_forward(
        sim, *rows_args, num_negatives=total - 2, collectives=collectives, negatives_finite=finite
    )
    kept_sim = sim if total <= KEPT_SIM_RATIO * u.shape[1] else None
    residuals = NTXentResiduals(u, scale, u_all, anchors, kept_sim, rows)
    return loss, xp.astype(beta_t, state.dtype), stats, residuals


def nt_xent_backward(
    residuals: NTXentResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
    collectives: Collectives | None = None,
) -> tuple[Array, Array]:
    """``(dL/dz_i, dL/dz_j)`` from the forward residuals (SPEC.md section 6).

    ``grad_output`` scales the gradient (the upstream gradient of the loss); ``dtype`` is the
    dtype to return it in (the inputs' dtype). With ``collectives``, the gradient is that of
    the global loss with respect to this rank's rows: the terms of every rank's anchors that
    involve them as candidates come home through ``collectives.sum_scatter``.
    """
    config = check_config(config)
    check_residuals(residuals, NTXentResiduals, "nt_xent_forward")
    u, scale, u_all = residuals.u, residuals.scale, residuals.u_all
    xp = array_namespace(u)
    n = u.shape[0] // 2
    total = u_all.shape[0]
    positive, excluded = _two_view_rows(residuals.anchors, total)
    if residuals.sim is None:
        sim = canonical_columns(similarity(u, u_all, xp), *first_copies(u_all, xp), xp)
    else:
        sim = residuals.sim
    d_sim = rows_backward(sim, positive, excluded, residuals.rows, config, total_rows=total)
    g_z = _embedding_gradient(d_sim, u, scale, u_all, collectives)
    if grad_output is not None:
        g_z = g_z * grad_output
    if dtype is not None:
        g_z = cast_gradient(g_z, dtype, xp)
    return g_z[:n, :], g_z[n:, :]


def nt_xent(
    z_i: Array, z_j: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array]]:
    """``(loss, new_state, stats)`` of the two-view WEINCE loss (no gradient)."""
    loss, new_state, stats, _ = nt_xent_forward(z_i, z_j, state, config)
    return loss, new_state, stats


def nt_xent_value_and_grad(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    collectives: Collectives | None = None,
) -> tuple[Array, tuple[Array, Array], Array, dict[str, Array]]:
    """``(loss, (dL/dz_i, dL/dz_j), new_state, stats)``: ``nt_xent_forward`` and
    ``nt_xent_backward`` in one call, with ``S`` and the blended logits made once for both.

    The gradient comes in ``dtype``, by default the inputs'. ``collectives`` as in
    ``nt_xent_forward``: the gradient is then the global loss's with respect to this rank's rows.
    """
    check_pair(z_i, z_j, state)  # before z_i.dtype is read: a list gets a clear error
    grad_dtype = z_i.dtype if dtype is None else dtype
    loss, new_state, stats, grads = _nt_xent(z_i, z_j, state, config, collectives, grad_dtype)
    return loss, grads, new_state, stats


def _embedding_gradient(
    d_sim: Array, u: Array, scale: Array, u_all: Array, collectives: Collectives | None
) -> Array:
    """``dL/dZ`` (``(2n, d)``, this rank's rows) from ``dL/dS``, through ``S = U U_all^T`` and
    ``U = Z / scale``."""
    xp = array_namespace(u)
    if collectives is None:  # u_all is u: dL/dS and (dL/dS)^T both multiply u
        g_u = symmetrized_product(d_sim, u, xp)
    else:
        half = u_all.shape[0] // 2
        as_candidates = d_sim.T @ u
        as_candidates = xp.concat(
            [
                collectives.sum_scatter(as_candidates[:half, :]),
                collectives.sum_scatter(as_candidates[half:, :]),
            ],
            axis=0,
        )
        g_u = d_sim @ u_all + as_candidates
    return (g_u - u * xp.sum(u * g_u, axis=1, keepdims=True)) / scale[:, None]
