"""The pairing forms of docs/math.md section 9: two-view (SimCLR, NT-Xent), two-tower (CLIP),
explicit negatives (a MoCo queue, a memory bank, mined negatives) and multi-positive (SupCon).

Each form only lays its inputs out as rows (``rows.py``): a similarity matrix, each row's
positive column(s) and negative columns. The loss, the statistics and ``dL/dsim`` are the
rows code's, the same for every form; the form turns ``dL/dsim`` back into gradients of its
inputs. Every form has four functions, with the library's one calling convention:

=============================  ================================================
``<form>(..., state, config)``  ``(loss, new_state, stats)``, no gradient
``<form>_forward``              ``(loss, new_state, stats, residuals)``, O(inputs) residuals
``<form>_backward(residuals)``  the gradients, ``S`` recomputed from the residuals
``<form>_value_and_grad``       ``(loss, grads, new_state, stats)`` in one pass
=============================  ================================================

``grads`` are in the order of the form's differentiable inputs: ``(g_i, g_j)``,
``(g_x, g_y, g_scale)``, ``(g_q, g_k, g_n)``, ``(g_z,)``. ``stats`` has the keys
``STAT_KEYS``. The ``nt_xent*`` names are the two-view form's old names, kept for one release.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

from array_api_compat import array_namespace, device, is_numpy_array

from ._types import Array, Namespace
from .collectives import Collectives, total
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
from .validation import (
    check_config,
    check_floating,
    check_pair,
    check_residuals,
    check_same_device,
    compute_dtype,
    namespace_of,
)

NORM_FLOOR = 1e-8  # rows are divided by max(||row||, NORM_FLOOR)
# Two-view: S is kept for the backward pass while it has at most this many times the entries
# of the unit rows (2N <= 4 d): a matrix product saved, and memory still O(N d). Larger, it is
# recomputed.
KEPT_SIM_RATIO = 4


class FormResiduals(NamedTuple):
    """What a pairing form's backward pass keeps from its forward pass: O(inputs) memory."""

    units: tuple[Array, ...]  # the unit rows of each differentiable input (this rank's)
    norms: tuple[Array, ...]  # max(||row||, 1e-8) of each, the shape of the input less d
    columns: tuple[Array, ...]  # two-tower over ranks: the unit rows of every rank, else ()
    labels: Array | None  # multi-positive: the labels
    in_batch_negatives: bool  # explicit negatives: the option
    rows: RowsResiduals


class _Rows(NamedTuple):
    """A form's rows, the arguments of ``rows_forward``."""

    sim: Array
    positive: Array
    negatives: Array | None
    num_negatives: int
    # Whether every negative similarity is finite, where the inputs tell it cheaply (finite
    # unit rows have finite products); None: counted in sim.
    negatives_finite: Array | None = None


# ---------------------------------------------------------------------------------------------
# Input checks (shapes, dtypes, devices; never values on a device)


def _check_state(state: Array, like: Array, like_name: str, xp: Namespace) -> None:
    if state.ndim != 0:
        raise ValueError(
            f"state must be a 0-d array (beta_t) from init_state; got shape {tuple(state.shape)}"
        )
    check_floating("state", state, xp)
    check_same_device(("state", like_name), state, like)


def _check_rows(name: str, x: Array, xp: Namespace, *, ndim: int = 2) -> None:
    if x.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(N, P, d)"
        raise ValueError(
            f"{name} must be a {ndim}-D array of shape {shape}; got shape {tuple(x.shape)}"
        )
    if x.shape[-1] < 1:
        raise ValueError(f"{name} needs at least one column; got shape {tuple(x.shape)}")
    check_floating(name, x, xp)


def _check_like(name: str, x: Array, first: str, like: Array) -> None:
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of {first} ({like.dtype}); got {x.dtype}")
    check_same_device((name, first), x, like)


def _check_two_tower(x: Array, y: Array, state: Array, scale: Any) -> Namespace:
    xp = namespace_of(x=x, y=y, state=state)
    _check_rows("x", x, xp)
    _check_rows("y", y, xp)
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            f"y must have the shape of x {tuple(x.shape)} (N matched pairs of the same width); "
            f"got {tuple(y.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"x and y need N >= 2 pairs (rows); got N = {x.shape[0]}")
    _check_like("y", y, "x", x)
    _check_state(state, x, "x", xp)
    if scale is None or isinstance(scale, bool):
        if scale is not None:
            raise TypeError("scale must be a positive number, a 0-d array or None; got bool")
        return xp
    if isinstance(scale, numbers.Real):
        if not float(scale) > 0:
            raise ValueError(f"scale must be positive (CLIP's logit_scale.exp()); got {scale}")
        return xp
    namespace_of(scale=scale, x=x)
    if scale.ndim != 0:
        raise ValueError(f"scale must be a 0-d array; got shape {tuple(scale.shape)}")
    check_floating("scale", scale, xp)
    check_same_device(("scale", "x"), scale, x)
    if is_numpy_array(scale) and not scale > 0:  # a host value: read without synchronising
        raise ValueError(f"scale must be positive (CLIP's logit_scale.exp()); got {scale}")
    return xp


def _check_explicit(q: Array, k: Array, n: Array, state: Array, in_batch: Any) -> Namespace:
    xp = namespace_of(q=q, k=k, n=n, state=state)
    _check_rows("q", q, xp)
    _check_rows("k", k, xp)
    if tuple(k.shape) != tuple(q.shape):
        raise ValueError(
            f"k must have the shape of q {tuple(q.shape)} (one positive key per query); "
            f"got {tuple(k.shape)}"
        )
    rows, width = q.shape
    if rows < 1:
        raise ValueError("q and k need at least one row")
    if n.ndim not in (2, 3):
        raise ValueError(
            f"n must be (L, d) negatives shared by every query or (N, P, d) per query; "
            f"got shape {tuple(n.shape)}"
        )
    if n.shape[-1] != width:
        raise ValueError(f"n must have d = {width} columns like q; got shape {tuple(n.shape)}")
    if n.ndim == 3 and n.shape[0] != rows:
        raise ValueError(
            f"paired n must have shape (N, P, d) with N = {rows} like q; got {tuple(n.shape)}"
        )
    if n.shape[-2] < 1:
        raise ValueError(f"n needs at least one negative; got shape {tuple(n.shape)}")
    check_floating("n", n, xp)
    _check_like("k", k, "q", q)
    _check_like("n", n, "q", q)
    _check_state(state, q, "q", xp)
    if not isinstance(in_batch, bool):
        raise TypeError(f"in_batch_negatives must be True or False; got {type(in_batch).__name__}")
    return xp


def _check_multi_positive(z: Array, labels: Array, state: Array) -> Namespace:
    xp = namespace_of(z=z, labels=labels, state=state)
    _check_rows("z", z, xp)
    if z.shape[0] < 2:
        raise ValueError(f"z needs R >= 2 rows; got shape {tuple(z.shape)}")
    if tuple(labels.shape) != (z.shape[0],):
        raise ValueError(
            f"labels must have shape (R,) = ({z.shape[0]},), one per row of z; "
            f"got {tuple(labels.shape)}"
        )
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"labels must have an integer dtype; got {labels.dtype}")
    check_same_device(("labels", "z"), labels, z)
    _check_state(state, z, "z", xp)
    return xp


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _unit_rows(x: Array, dtype: Any, xp: Namespace) -> tuple[Array, Array]:
    """``x`` in ``dtype`` with unit rows (last axis), and the norms it was divided by."""
    x = xp.astype(detached(x, xp), dtype, copy=False)
    flat = xp.reshape(x, (-1, x.shape[-1]))
    norms = xp.reshape(xp.clip(row_norms(flat, xp), min=NORM_FLOOR), x.shape[:-1])
    return x / norms[..., None], norms


def _input_gradient(g_u: Array, u: Array, norm: Array, xp: Namespace) -> Array:
    """``dL/dx`` from ``dL/du`` through ``u = x / max(||x||, 1e-8)`` (docs/math.md section 6)."""
    return (g_u - u * xp.sum(u * g_u, axis=-1, keepdims=True)) / norm[..., None]


def _canonical(sim: Array, candidates: Array, xp: Namespace) -> Array:
    """``sim`` with bitwise-equal candidate rows given bitwise-equal columns (docs/math.md
    section 8)."""
    return canonical_columns(sim, *first_copies(candidates, xp), xp)


def _as_scale(scale: Any, config: WEINCEConfig, dtype: Any, like: Array, xp: Namespace) -> Array:
    """``scale`` as a 0-d array in the compute dtype; ``None`` is ``1 / tau``."""
    if scale is None:
        scale = 1.0 / config.temperature
    if isinstance(scale, numbers.Real):
        return xp.full((), float(scale), dtype=dtype, device=device(like))
    return xp.astype(detached(scale, xp), dtype)


def _finish(
    grads: list[Array], dtypes: list[Any], grad_output: Array | None, xp: Namespace
) -> tuple[Array, ...]:
    if grad_output is not None:
        grads = [g * grad_output for g in grads]
    return tuple(
        g if dtype is None else cast_gradient(g, dtype, xp)
        for g, dtype in zip(grads, dtypes, strict=True)
    )


def _run_rows(
    layout: _Rows,
    state: Array,
    config: WEINCEConfig,
    xp: Namespace,
    *,
    with_grad: bool,
    collectives: Collectives | None = None,
    scale: Array | None = None,
) -> tuple[Array, Array, dict[str, Array], Any]:
    """``rows_value_and_grad`` (``with_grad``) or ``rows_forward`` on a form's rows:
    ``(loss, new_state, stats, dL/dsim or the rows' residuals)``, the state in ``state``'s
    dtype."""
    beta_t = xp.astype(state, layout.sim.dtype)  # a copy
    args = (layout.sim, layout.positive, None, beta_t, config)
    options: dict[str, Any] = dict(
        num_negatives=layout.num_negatives,
        collectives=collectives,
        negatives=layout.negatives,
        scale=scale,
        negatives_finite=layout.negatives_finite,
    )
    if with_grad:
        loss, extra, new_beta_t, stats = rows_value_and_grad(*args, **options)
    else:
        loss, new_beta_t, stats, extra = rows_forward(*args, **options)
    return loss, xp.astype(new_beta_t, state.dtype), stats, extra


def _world_size(collectives: Collectives | None) -> int:
    return 1 if collectives is None else collectives.world_size


# ---------------------------------------------------------------------------------------------
# Two-view (SimCLR, NT-Xent): Z = [z_i; z_j], S = U U^T, positive column a + N (mod 2N)


class TwoViewResiduals(NamedTuple):
    """What ``two_view_backward`` keeps from ``two_view_forward``: O(N d) memory."""

    u: Array  # (2n, d) this rank's unit rows, z_i's first
    scale: Array  # (2n,) max(||Z_a||, 1e-8)
    u_all: Array  # (2N, d) the unit rows of every rank, [U_i; U_j] (u itself on one device)
    anchors: Array  # (2n,) the rows of u_all that u's rows are
    sim: Array | None  # (2n, 2N) S = u u_all^T where that is small (KEPT_SIM_RATIO), else None
    rows: RowsResiduals


NTXentResiduals = TwoViewResiduals  # the old name, kept for one release


def _two_view_columns(anchors: Array, total_rows: int) -> tuple[Array, Array]:
    """Positive columns ``(a + N) mod 2N`` of the anchors, and each anchor's own column."""
    return (anchors + total_rows // 2) % total_rows, anchors[:, None]


def _join_views(u_i: Array, u_j: Array, collectives: Collectives | None, xp: Namespace) -> Array:
    if collectives is None:
        return xp.concat([u_i, u_j], axis=0)
    return xp.concat([collectives.gather(u_i), collectives.gather(u_j)], axis=0)


def _two_view(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None,
    collectives: Collectives | None,
    grad_dtype: Any,
) -> tuple[Array, Array, dict[str, Array], Any]:
    """``(loss, new_state, stats, residuals)``, or with ``grad_dtype`` (not None) the gradients
    in that dtype in place of the residuals."""
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
    total_rows = u_all.shape[0]
    if collectives is None:
        anchors = xp.arange(total_rows, device=device(u))
    else:
        own = xp.arange(n, device=device(u)) + collectives.rank * n
        anchors = xp.concat([own, own + total_rows // 2])
    positive, excluded = _two_view_columns(anchors, total_rows)
    rows_args = (positive, excluded, xp.astype(state, dtype), config)  # the state: a copy
    # Every column is a negative of some row, and unit rows that are finite have finite
    # products: the negatives are finite exactly where U is.
    options: dict[str, Any] = dict(
        num_negatives=total_rows - 2,
        collectives=collectives,
        negatives_finite=xp.all(xp.isfinite(u_all)),
    )
    if grad_dtype is not None:
        # S is passed as a temporary, so that it is freed before the gradient's products.
        loss, d_sim, beta_t, stats = rows_value_and_grad(
            canonical_columns(similarity(u, u_all, xp), *copies, xp), *rows_args, **options
        )
        g_z = _two_view_gradient(d_sim, u, scale, u_all, collectives)
        g_z = cast_gradient(g_z, grad_dtype, xp)
        return loss, xp.astype(beta_t, state.dtype), stats, (g_z[:n, :], g_z[n:, :])
    sim = canonical_columns(similarity(u, u_all, xp), *copies, xp)
    loss, beta_t, stats, rows = rows_forward(sim, *rows_args, **options)
    kept_sim = sim if total_rows <= KEPT_SIM_RATIO * u.shape[1] else None
    residuals = TwoViewResiduals(u, scale, u_all, anchors, kept_sim, rows)
    return loss, xp.astype(beta_t, state.dtype), stats, residuals


def _two_view_gradient(
    d_sim: Array, u: Array, scale: Array, u_all: Array, collectives: Collectives | None
) -> Array:
    """``dL/dZ`` (``(2n, d)``, this rank's rows) from ``dL/dS``, through ``S = U U_all^T`` and
    ``U = Z / scale`` (docs/math.md section 6)."""
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
    return _input_gradient(g_u, u, scale, xp)


def two_view_forward(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    collectives: Collectives | None = None,
) -> tuple[Array, Array, dict[str, Array], TwoViewResiduals]:
    """The two-view (SimCLR, NT-Xent) WEINCE loss, keeping O(N d) residuals for the gradient
    (docs/math.md sections 1-5 and 9).

    Half-precision inputs are computed in float32. PyTorch tensors are read as values
    (detached): the gradient is ``two_view_backward``'s, or autograd's through
    ``weince_torch``, which uses it.

    Args:
        z_i: ``(N, d)`` embeddings of the first view, ``N >= 2``.
        z_j: ``(N, d)`` embeddings of the second view; row ``a`` is the pair of ``z_i``'s row ``a``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        collectives: ``z_i`` and ``z_j`` are this rank's ``n`` rows of a global batch joined in
            rank order (see ``Collectives``); the loss, ``beta_t`` and the summary statistics
            are then those of the global batch, the per-anchor statistics those of this rank's
            anchors.

    Returns:
        ``(loss, new_state, stats, residuals)``: a 0-d loss, ``beta_t`` after this step in
        ``state``'s dtype, the statistics (``STAT_KEYS``; per-anchor ones for ``z_i``'s rows,
        then ``z_j``'s) and the residuals of ``two_view_backward``.

    Raises:
        TypeError: an argument is not an array of a floating dtype, or ``config`` is not a
            ``WEINCEConfig``.
        ValueError: shapes or devices do not match.
    """
    return _two_view(z_i, z_j, state, config, collectives, None)


def two_view_backward(
    residuals: TwoViewResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
    collectives: Collectives | None = None,
) -> tuple[Array, Array]:
    """The gradient of the two-view loss from ``two_view_forward``'s residuals (docs/math.md
    section 6).

    Args:
        residuals: from ``two_view_forward``.
        config: the configuration of the forward pass.
        dtype: the dtype to return the gradients in (the inputs'); ``None``: the compute dtype.
        grad_output: the upstream gradient of the loss, scaling the gradients.
        collectives: as in the forward pass. The gradient is then that of the global loss with
            respect to this rank's rows: the terms of every rank's anchors that involve them as
            candidates come home through ``collectives.sum_scatter``.

    Returns:
        ``(dL/dz_i, dL/dz_j)``.

    Raises:
        TypeError: ``residuals`` are not ``two_view_forward``'s.
    """
    config = check_config(config)
    check_residuals(residuals, TwoViewResiduals, "two_view_forward")
    u, scale, u_all = residuals.u, residuals.scale, residuals.u_all
    xp = array_namespace(u)
    n = u.shape[0] // 2
    total_rows = u_all.shape[0]
    positive, excluded = _two_view_columns(residuals.anchors, total_rows)
    if residuals.sim is None:
        sim = canonical_columns(similarity(u, u_all, xp), *first_copies(u_all, xp), xp)
    else:
        sim = residuals.sim
    d_sim = rows_backward(sim, positive, excluded, residuals.rows, config, total_rows=total_rows)
    g_z = _two_view_gradient(d_sim, u, scale, u_all, collectives)
    if grad_output is not None:
        g_z = g_z * grad_output
    if dtype is not None:
        g_z = cast_gradient(g_z, dtype, xp)
    return g_z[:n, :], g_z[n:, :]


def two_view_value_and_grad(
    z_i: Array,
    z_j: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    collectives: Collectives | None = None,
) -> tuple[Array, tuple[Array, Array], Array, dict[str, Array]]:
    """The two-view loss and its gradient in one pass, with ``S`` and the blended logits made
    once for both (docs/math.md sections 1-6 and 9).

    Args:
        z_i: as in ``two_view_forward``.
        z_j: as in ``two_view_forward``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        dtype: the dtype of the gradients; ``None``: the inputs'.
        collectives: as in ``two_view_forward``; the gradient is then the global loss's with
            respect to this rank's rows.

    Returns:
        ``(loss, (dL/dz_i, dL/dz_j), new_state, stats)``.

    Raises:
        TypeError: as ``two_view_forward``.
        ValueError: as ``two_view_forward``.
    """
    check_pair(z_i, z_j, state)  # before z_i.dtype is read: a list gets a clear error
    grad_dtype = z_i.dtype if dtype is None else dtype
    loss, new_state, stats, grads = _two_view(z_i, z_j, state, config, collectives, grad_dtype)
    return loss, grads, new_state, stats


def two_view(
    z_i: Array, z_j: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array]]:
    """The two-view loss without its gradient.

    Args:
        z_i: as in ``two_view_forward``.
        z_j: as in ``two_view_forward``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.

    Returns:
        ``(loss, new_state, stats)``.
    """
    loss, new_state, stats, _ = two_view_forward(z_i, z_j, state, config)
    return loss, new_state, stats


# The old names of the two-view form (NT-Xent), kept for one release.
nt_xent = two_view
nt_xent_forward = two_view_forward
nt_xent_backward = two_view_backward
nt_xent_value_and_grad = two_view_value_and_grad


# ---------------------------------------------------------------------------------------------
# Two-tower (CLIP): rows [U_x U_y^T ; U_y U_x^T], positive column a mod N


def _two_tower_rows(
    u_x: Array,
    u_y: Array,
    columns: tuple[Array, ...],
    collectives: Collectives | None,
    xp: Namespace,
) -> _Rows:
    n = u_x.shape[0]
    own = xp.arange(n, device=device(u_x))
    if collectives is None:
        # One product for both blocks: the texts' block is the images' transposed. Copies are
        # canonicalised along both axes, so that both blocks have canonical columns.
        by_y = _canonical(_canonical(similarity(u_x, u_y, xp), u_y, xp).T, u_x, xp)  # (N_y, N_x)
        sim = xp.concat([by_y.T, by_y], axis=0)
        pairs = n
        finite = xp.all(xp.isfinite(u_x)) & xp.all(xp.isfinite(u_y))
    else:
        x_all, y_all = columns
        own = own + collectives.rank * n
        sim = xp.concat(
            [
                _canonical(similarity(u_x, y_all, xp), y_all, xp),
                _canonical(similarity(u_y, x_all, xp), x_all, xp),
            ],
            axis=0,
        )
        pairs = x_all.shape[0]
        finite = xp.all(xp.isfinite(x_all)) & xp.all(xp.isfinite(y_all))
    # Every row has N - 1 >= 1 negatives: they are finite exactly where the unit rows are.
    return _Rows(sim, xp.concat([own, own]), None, pairs - 1, finite)


def _two_tower_unit_gradients(
    d_sim: Array,
    u_x: Array,
    u_y: Array,
    columns: tuple[Array, ...],
    collectives: Collectives | None,
) -> tuple[Array, Array]:
    """``dL/dU_x`` and ``dL/dU_y`` (this rank's rows) from ``dL/dS`` of its ``2n`` rows."""
    n = u_x.shape[0]
    images, texts = d_sim[:n, :], d_sim[n:, :]
    if collectives is None:
        d_pairs = images + texts.T  # dL/d(U_x U_y^T): the texts' rows are its transpose
        return d_pairs @ u_y, d_pairs.T @ u_x
    x_all, y_all = columns
    # This rank's rows are also columns of every rank's rows: those terms come home summed.
    g_x = images @ y_all + collectives.sum_scatter(texts.T @ u_y)
    g_y = texts @ x_all + collectives.sum_scatter(images.T @ u_x)
    return g_x, g_y


def _two_tower(
    x: Array,
    y: Array,
    state: Array,
    config: WEINCEConfig | None,
    scale: Any,
    collectives: Collectives | None,
    grad_dtype: Any,
) -> tuple[Array, Array, dict[str, Array], Any]:
    config = check_config(config)
    xp = _check_two_tower(x, y, state, scale)
    dtype = compute_dtype(x.dtype, xp)
    (u_x, norm_x), (u_y, norm_y) = _unit_rows(x, dtype, xp), _unit_rows(y, dtype, xp)
    columns: tuple[Array, ...] = ()
    if collectives is not None:
        columns = (collectives.gather(u_x), collectives.gather(u_y))
    layout = _two_tower_rows(u_x, u_y, columns, collectives, xp)
    scale_array = _as_scale(scale, config, dtype, x, xp)
    run = dict(collectives=collectives, scale=scale_array)
    if grad_dtype is None:
        loss, new_state, stats, rows = _run_rows(layout, state, config, xp, with_grad=False, **run)
        residuals = FormResiduals((u_x, u_y), (norm_x, norm_y), columns, None, False, rows)
        return loss, new_state, stats, residuals
    loss, new_state, stats, (d_sim, d_scale) = _run_rows(
        layout, state, config, xp, with_grad=True, **run
    )
    g_ux, g_uy = _two_tower_unit_gradients(d_sim, u_x, u_y, columns, collectives)
    grads = [
        _input_gradient(g_ux, u_x, norm_x, xp),
        _input_gradient(g_uy, u_y, norm_y, xp),
        total(d_scale, collectives),
    ]
    scale_dtype = scale.dtype if hasattr(scale, "dtype") else dtype
    return loss, new_state, stats, _finish(grads, [grad_dtype, grad_dtype, scale_dtype], None, xp)


def two_tower_forward(
    x: Array,
    y: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    scale: Any = None,
    collectives: Collectives | None = None,
) -> tuple[Array, Array, dict[str, Array], FormResiduals]:
    """The two-tower (CLIP) loss, keeping O(N d) residuals for the gradient (docs/math.md
    section 9).

    Args:
        x: ``(N, d)`` rows of one tower (e.g. images), ``N >= 2``.
        y: ``(N, d)`` rows of the other (e.g. texts); row ``a`` is the pair of ``x``'s row ``a``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.
        scale: CLIP's ``exp(logit_scale)``, a positive 0-d array or number that replaces
            ``1 / tau`` in the blend's softmax part and the softmax top-M logits (never in
            the shortfall coordinate); ``None`` is ``1 / config.temperature``. A Python
            number or a NumPy array is checked to be positive; an array on a device or under
            ``jit`` is not (reading it would synchronise), and a non-positive one gives a
            meaningless loss.
        collectives: ``x`` and ``y`` are this rank's ``n`` rows of a batch joined in rank
            order: this rank's ``2n`` rows against every rank's columns, with the statistics
            (``rho0``, the ``beta_t`` tail, the mean) of the whole batch.

    Returns:
        ``(loss, new_state, stats, residuals)``; ``stats["lambda"]`` (and ``rho``, ``d_aic``)
        per row: the rows of ``x``, then those of ``y``. ``residuals`` are
        ``two_tower_backward``'s (the unit rows, O(N d)).

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    return _two_tower(x, y, state, config, scale, collectives, None)


def two_tower_backward(
    residuals: FormResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
    collectives: Collectives | None = None,
) -> tuple[Array, Array, Array]:
    """``(dL/dx, dL/dy, dL/dscale)`` from ``two_tower_forward``'s residuals.

    Args:
        residuals: from ``two_tower_forward``.
        config: the configuration of the forward pass.
        dtype: the dtype of ``dL/dx`` and ``dL/dy`` (the inputs'); ``dL/dscale`` stays in the
            compute dtype.
        grad_output: the upstream gradient of the loss, scaling all three.
        collectives: as in the forward pass; ``dL/dscale`` is then the whole loss's.

    Returns:
        ``(dL/dx, dL/dy, dL/dscale)``; ``dL/dscale`` a 0-d array, the derivative at the scale
        used (``1 / tau`` where the forward had ``scale=None``).
    """
    config = check_config(config)
    u_x, u_y = residuals.units
    norm_x, norm_y = residuals.norms
    xp = namespace_of(u_x=u_x)
    layout = _two_tower_rows(u_x, u_y, residuals.columns, collectives, xp)
    total_rows = layout.sim.shape[0] * _world_size(collectives)
    d_sim, d_scale = rows_backward(
        layout.sim, layout.positive, None, residuals.rows, config, total_rows=total_rows
    )
    g_ux, g_uy = _two_tower_unit_gradients(d_sim, u_x, u_y, residuals.columns, collectives)
    grads = [
        _input_gradient(g_ux, u_x, norm_x, xp),
        _input_gradient(g_uy, u_y, norm_y, xp),
        total(d_scale, collectives),
    ]
    return _finish(grads, [dtype, dtype, None], grad_output, xp)


def two_tower_value_and_grad(
    x: Array,
    y: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    scale: Any = None,
    dtype: Any = None,
    collectives: Collectives | None = None,
) -> tuple[Array, tuple[Array, Array, Array], Array, dict[str, Array]]:
    """The two-tower loss and its gradients in one pass (docs/math.md sections 6 and 9).

    Args:
        x: as in ``two_tower_forward``.
        y: as in ``two_tower_forward``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        scale: as in ``two_tower_forward``.
        dtype: the dtype of ``dL/dx`` and ``dL/dy``; ``None``: the inputs'.
        collectives: as in ``two_tower_forward``.

    Returns:
        ``(loss, (dL/dx, dL/dy, dL/dscale), new_state, stats)``; ``dL/dscale`` in ``scale``'s
        dtype (the compute dtype for a number or ``None``, where it is the derivative at
        ``1 / tau``).

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, or a non-positive number as ``scale``.
    """
    grad_dtype = x.dtype if dtype is None else dtype
    loss, new_state, stats, grads = _two_tower(x, y, state, config, scale, collectives, grad_dtype)
    return loss, grads, new_state, stats


def two_tower(
    x: Array, y: Array, state: Array, config: WEINCEConfig | None = None, *, scale: Any = None
) -> tuple[Array, Array, dict[str, Array]]:
    """The two-tower loss without its gradient; see ``two_tower_forward``.

    Args:
        x: ``(N, d)`` rows of one tower.
        y: ``(N, d)`` rows of the other.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        scale: as in ``two_tower_forward``.

    Returns:
        ``(loss, new_state, stats)``.
    """
    loss, new_state, stats, _ = two_tower_forward(x, y, state, config, scale=scale)
    return loss, new_state, stats


# ---------------------------------------------------------------------------------------------
# Explicit negatives (a queue, a memory bank, mined negatives): row a is query a against
# [k_a, n_1..n_L(, k_b for b != a)]


def _explicit_rows(u_q: Array, u_k: Array, u_n: Array, in_batch: bool, xp: Namespace) -> _Rows:
    rows = u_q.shape[0]
    width_n = u_n.shape[-2]
    index = xp.arange(rows, device=device(u_q))
    paired = u_n.ndim == 3
    # Each query has negatives, each negative a query: finite exactly where the unit rows are.
    finite = xp.all(xp.isfinite(u_q)) & xp.all(xp.isfinite(u_n))
    if in_batch:
        finite = finite & xp.all(xp.isfinite(u_k))
    if paired:  # each query against its own P (elementwise: equal rows give equal values)
        against_n = xp.sum(u_n * u_q[:, None, :], axis=-1)
    if in_batch:
        # The keys as columns after the negatives, the positive among them at width_n + a:
        # the negatives keep the order of docs/math.md section 9 (the n's, then the other keys).
        if paired:
            sim = xp.concat([against_n, _canonical(similarity(u_q, u_k, xp), u_k, xp)], axis=1)
        else:
            candidates = xp.concat([u_n, u_k], axis=0)
            sim = _canonical(similarity(u_q, candidates, xp), candidates, xp)
        return _Rows(sim, width_n + index, None, width_n + rows - 1, finite)
    if not paired:
        against_n = _canonical(similarity(u_q, u_n, xp), u_n, xp)
    positive_sim = xp.sum(u_q * u_k, axis=1)[:, None]
    sim = xp.concat([positive_sim, against_n], axis=1)
    return _Rows(sim, xp.zeros_like(index), None, width_n, finite)


def _explicit_unit_gradients(
    d_sim: Array, u_q: Array, u_k: Array, u_n: Array, in_batch: bool, xp: Namespace
) -> tuple[Array, Array, Array]:
    width_n = u_n.shape[-2]
    if in_batch:
        d_n, d_k = d_sim[:, :width_n], d_sim[:, width_n:]
        g_q, g_k = d_k @ u_k, d_k.T @ u_q
    else:
        d_positive, d_n = d_sim[:, :1], d_sim[:, 1:]
        g_q, g_k = d_positive * u_k, d_positive * u_q
    if u_n.ndim == 3:
        g_q = g_q + xp.sum(d_n[:, :, None] * u_n, axis=1)
        g_n = d_n[:, :, None] * u_q[:, None, :]
    else:
        g_q = g_q + d_n @ u_n
        g_n = d_n.T @ u_q
    return g_q, g_k, g_n


def _explicit(
    q: Array,
    k: Array,
    n: Array,
    state: Array,
    config: WEINCEConfig | None,
    in_batch: Any,
    grad_dtype: Any,
) -> tuple[Array, Array, dict[str, Array], Any]:
    config = check_config(config)
    xp = _check_explicit(q, k, n, state, in_batch)
    dtype = compute_dtype(q.dtype, xp)
    units = [_unit_rows(a, dtype, xp) for a in (q, k, n)]
    (u_q, _), (u_k, _), (u_n, _) = units
    layout = _explicit_rows(u_q, u_k, u_n, in_batch, xp)
    if grad_dtype is None:
        loss, new_state, stats, rows = _run_rows(layout, state, config, xp, with_grad=False)
        residuals = FormResiduals(
            tuple(u for u, _ in units), tuple(s for _, s in units), (), None, in_batch, rows
        )
        return loss, new_state, stats, residuals
    del layout  # S goes with the rows' call (a temporary): rebuilt inside the expression
    loss, new_state, stats, d_sim = _run_rows(
        _explicit_rows(u_q, u_k, u_n, in_batch, xp), state, config, xp, with_grad=True
    )
    unit_grads = _explicit_unit_gradients(d_sim, u_q, u_k, u_n, in_batch, xp)
    grads = [_input_gradient(g, u, s, xp) for g, (u, s) in zip(unit_grads, units, strict=True)]
    return loss, new_state, stats, _finish(grads, [grad_dtype] * 3, None, xp)


def explicit_negatives_forward(
    q: Array,
    k: Array,
    n: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
) -> tuple[Array, Array, dict[str, Array], FormResiduals]:
    """The explicit-negatives loss, keeping O(inputs) residuals for the gradient (docs/math.md
    section 9).

    Args:
        q: ``(N, d)`` queries.
        k: ``(N, d)`` their positive keys.
        n: negatives, ``(L, d)`` shared by every query (a queue or a memory bank: its filled
            entries) or ``(N, P, d)``, query ``a`` against its own ``P`` (paired).
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.
        in_batch_negatives: the other queries' keys are negatives too (``K = L + N - 1``).

    Returns:
        ``(loss, new_state, stats, residuals)``, the statistics per query.

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    return _explicit(q, k, n, state, config, in_batch_negatives, None)


def explicit_negatives_backward(
    residuals: FormResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
) -> tuple[Array, Array, Array]:
    """``(dL/dq, dL/dk, dL/dn)`` from ``explicit_negatives_forward``'s residuals.

    Args:
        residuals: from ``explicit_negatives_forward``.
        config: the configuration of the forward pass.
        dtype: the dtype to return the gradients in (the inputs').
        grad_output: the upstream gradient of the loss.

    Returns:
        ``(dL/dq, dL/dk, dL/dn)`` (a queue's gradient is there too: detach it to drop it).
    """
    config = check_config(config)
    u_q, u_k, u_n = residuals.units
    xp = namespace_of(u_q=u_q)
    in_batch = residuals.in_batch_negatives
    layout = _explicit_rows(u_q, u_k, u_n, in_batch, xp)
    d_sim = rows_backward(layout.sim, layout.positive, None, residuals.rows, config)
    unit_grads = _explicit_unit_gradients(d_sim, u_q, u_k, u_n, in_batch, xp)
    grads = [
        _input_gradient(g, u, s, xp)
        for g, u, s in zip(unit_grads, residuals.units, residuals.norms, strict=True)
    ]
    return _finish(grads, [dtype] * 3, grad_output, xp)


def explicit_negatives_value_and_grad(
    q: Array,
    k: Array,
    n: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
    dtype: Any = None,
) -> tuple[Array, tuple[Array, Array, Array], Array, dict[str, Array]]:
    """The explicit-negatives loss and its gradients in one pass (docs/math.md sections 6 and 9).

    Args:
        q: as in ``explicit_negatives_forward``.
        k: as in ``explicit_negatives_forward``.
        n: as in ``explicit_negatives_forward``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        in_batch_negatives: as in ``explicit_negatives_forward``.
        dtype: the dtype of the gradients; ``None``: the inputs'.

    Returns:
        ``(loss, (dL/dq, dL/dk, dL/dn), new_state, stats)``.

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    grad_dtype = q.dtype if dtype is None else dtype
    loss, new_state, stats, grads = _explicit(
        q, k, n, state, config, in_batch_negatives, grad_dtype
    )
    return loss, grads, new_state, stats


def explicit_negatives(
    q: Array,
    k: Array,
    n: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
) -> tuple[Array, Array, dict[str, Array]]:
    """The explicit-negatives loss without its gradient; see ``explicit_negatives_forward``.

    Args:
        q: ``(N, d)`` queries.
        k: ``(N, d)`` their positive keys.
        n: ``(L, d)`` shared or ``(N, P, d)`` paired negatives.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        in_batch_negatives: the other queries' keys are negatives too.

    Returns:
        ``(loss, new_state, stats)``.
    """
    loss, new_state, stats, _ = explicit_negatives_forward(
        q, k, n, state, config, in_batch_negatives=in_batch_negatives
    )
    return loss, new_state, stats


# ---------------------------------------------------------------------------------------------
# Multi-positive (SupCon L_out): row a against every other row; positives share its label


def _multi_positive_rows(u: Array, labels: Array, xp: Namespace) -> _Rows:
    rows = u.shape[0]
    same = labels[:, None] == labels[None, :]
    index = xp.arange(rows, device=device(u))
    own = index[:, None] == index[None, :]
    sim = _canonical(similarity(u, u, xp), u, xp)
    return _Rows(sim, same & ~own, ~same, rows - 1)


def _multi_positive(
    z: Array,
    labels: Array,
    state: Array,
    config: WEINCEConfig | None,
    grad_dtype: Any,
) -> tuple[Array, Array, dict[str, Array], Any]:
    config = check_config(config)
    xp = _check_multi_positive(z, labels, state)
    labels = detached(labels, xp)
    u, norm = _unit_rows(z, compute_dtype(z.dtype, xp), xp)
    if grad_dtype is None:
        layout = _multi_positive_rows(u, labels, xp)
        loss, new_state, stats, rows = _run_rows(layout, state, config, xp, with_grad=False)
        return loss, new_state, stats, FormResiduals((u,), (norm,), (), labels, False, rows)
    loss, new_state, stats, d_sim = _run_rows(
        _multi_positive_rows(u, labels, xp), state, config, xp, with_grad=True
    )
    g_z = _input_gradient(symmetrized_product(d_sim, u, xp), u, norm, xp)
    return loss, new_state, stats, _finish([g_z], [grad_dtype], None, xp)


def multi_positive_forward(
    z: Array, labels: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array], FormResiduals]:
    """``(loss, new_state, stats, residuals)`` of the multi-positive (SupCon ``L_out``) form.

    Args:
        z: ``(R, d)`` rows, ``R >= 2`` (several views of each sample).
        labels: ``(R,)`` integers (any values): rows with equal labels are positives of each
            other, rows with different labels negatives.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset unless given.

    Returns:
        ``(loss, new_state, stats, residuals)``. A row without a positive adds nothing to the
        loss (0 if no row has one) but enters ``rho0`` and the ``beta_t`` pool; a row without
        a negative has ``lambda = 0``, ``rho = NaN`` and ``dAIC = 0`` (no kept points: the
        rule for ``n_a < 2``, as the reference vectors have it).

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    return _multi_positive(z, labels, state, config, None)


def multi_positive_backward(
    residuals: FormResiduals,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
    grad_output: Array | None = None,
) -> tuple[Array]:
    """The gradient of the multi-positive loss from ``multi_positive_forward``'s residuals.

    Args:
        residuals: from ``multi_positive_forward``.
        config: the configuration of the forward pass.
        dtype: the dtype to return the gradient in (the inputs').
        grad_output: the upstream gradient of the loss.

    Returns:
        ``(dL/dz,)``.
    """
    config = check_config(config)
    (u,), (norm,) = residuals.units, residuals.norms
    xp = namespace_of(u=u)
    layout = _multi_positive_rows(u, residuals.labels, xp)
    d_sim = rows_backward(
        layout.sim, layout.positive, None, residuals.rows, config, negatives=layout.negatives
    )
    g_z = _input_gradient(symmetrized_product(d_sim, u, xp), u, norm, xp)
    return _finish([g_z], [dtype], grad_output, xp)


def multi_positive_value_and_grad(
    z: Array,
    labels: Array,
    state: Array,
    config: WEINCEConfig | None = None,
    *,
    dtype: Any = None,
) -> tuple[Array, tuple[Array], Array, dict[str, Array]]:
    """The multi-positive loss and its gradient in one pass (docs/math.md sections 6 and 9).

    Args:
        z: as in ``multi_positive_forward``.
        labels: as in ``multi_positive_forward``.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        dtype: the dtype of the gradient; ``None``: ``z``'s.

    Returns:
        ``(loss, (dL/dz,), new_state, stats)``.

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    grad_dtype = z.dtype if dtype is None else dtype
    loss, new_state, stats, grads = _multi_positive(z, labels, state, config, grad_dtype)
    return loss, grads, new_state, stats


def multi_positive(
    z: Array, labels: Array, state: Array, config: WEINCEConfig | None = None
) -> tuple[Array, Array, dict[str, Array]]:
    """The multi-positive loss without its gradient; see ``multi_positive_forward``.

    Args:
        z: ``(R, d)`` rows.
        labels: ``(R,)`` integers.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.

    Returns:
        ``(loss, new_state, stats)``.
    """
    loss, new_state, stats, _ = multi_positive_forward(z, labels, state, config)
    return loss, new_state, stats
