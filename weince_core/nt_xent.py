"""The two-view (SimCLR / NT-Xent) form: ``Z = [z_i; z_j]``, ``S = U U^T``, positive ``a + N``.

``nt_xent_forward`` keeps O(N d) residuals; ``nt_xent_backward`` recomputes ``S`` from them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

from .config import WEINCEConfig
from .rows import RowsResiduals, rows_backward, rows_forward
from .validation import check_pair, compute_dtype

Array = Any
Namespace = Any

NORM_FLOOR = 1e-8


class NTXentResiduals(NamedTuple):
    """Everything the backward pass keeps from the forward pass."""

    u: Array  # (2N, d) unit rows U
    scale: Array  # (2N,) max(||Z_a||, 1e-8)
    rows: RowsResiduals


def _two_view_rows(n: int, like: Array, xp: Namespace) -> tuple[Array, Array]:
    """Positive columns ``(a + N) mod 2N`` and the excluded diagonal."""
    anchors = xp.arange(2 * n, device=device(like))
    return (anchors + n) % (2 * n), anchors[:, None] == anchors[None, :]


def nt_xent_forward(
    z_i: Array, z_j: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array], NTXentResiduals]:
    """``(loss, new_state, stats, residuals)`` of the two-view WEINCE loss.

    ``z_i``, ``z_j``: ``(N, d)`` embeddings of the two views, ``N >= 2``; ``state``: ``beta_t``
    from ``init_state``. Half-precision inputs are computed in float32.
    """
    config = WEINCEConfig() if config is None else config
    xp = check_pair(z_i, z_j, state)
    dtype = compute_dtype(z_i.dtype, xp)
    n = z_i.shape[0]
    z = xp.astype(xp.concat([z_i, z_j], axis=0), dtype)
    scale = xp.clip(xp.linalg.vector_norm(z, axis=1), min=NORM_FLOOR)
    u = z / scale[:, None]
    positive, excluded = _two_view_rows(n, u, xp)
    loss, beta_t, stats, rows = rows_forward(
        u @ u.T,
        positive,
        excluded,
        xp.astype(state, dtype),
        config,
        num_negatives=2 * n - 2,
    )
    return loss, xp.astype(beta_t, state.dtype), stats, NTXentResiduals(u, scale, rows)


def nt_xent_backward(
    residuals: NTXentResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
) -> tuple[Array, Array]:
    """``(dL/dz_i, dL/dz_j)`` from the forward residuals (SPEC.md section 6).

    ``grad_output`` scales the gradient (the upstream gradient of the loss); ``dtype`` is the
    dtype to return it in (the inputs' dtype).
    """
    config = WEINCEConfig() if config is None else config
    u, scale = residuals.u, residuals.scale
    xp = array_namespace(u)
    n = u.shape[0] // 2
    positive, excluded = _two_view_rows(n, u, xp)
    d_sim = rows_backward(u @ u.T, positive, excluded, residuals.rows, config)
    g_u = d_sim @ u + d_sim.T @ u
    g_z = (g_u - u * xp.sum(u * g_u, axis=1, keepdims=True)) / scale[:, None]
    if grad_output is not None:
        g_z = g_z * grad_output
    if dtype is not None:
        g_z = xp.astype(g_z, dtype)
    return g_z[:n, :], g_z[n:, :]


def nt_xent(
    z_i: Array, z_j: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array]]:
    """``(loss, new_state, stats)`` of the two-view WEINCE loss (no gradient)."""
    loss, new_state, stats, _ = nt_xent_forward(z_i, z_j, state, config)
    return loss, new_state, stats


def nt_xent_value_and_grad(
    z_i: Array, z_j: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, tuple[Array, Array], Array, dict[str, Array]]:
    """``(loss, (grad_i, grad_j), new_state, stats)``; gradients in the inputs' dtype."""
    loss, new_state, stats, residuals = nt_xent_forward(z_i, z_j, state, config)
    grads = nt_xent_backward(residuals, config, dtype=z_i.dtype)
    return loss, grads, new_state, stats
