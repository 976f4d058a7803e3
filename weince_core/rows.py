"""The loss on the general rows form (docs/math.md sections 2, 3 and 6).

Every pairing form reduces to rows: a similarity matrix ``sim`` (anchors x candidates), the column
of each row's positive, and the columns each row excludes (not candidates at all, like an anchor
itself). The remaining columns are the row's negatives, ``num_negatives`` of them in every row.

``rows_forward`` returns ``(loss, new_beta_t, stats, residuals)``, keeping only per-row
residuals; ``rows_backward(sim, ..., residuals)`` recomputes the rest from ``sim`` and returns
``dL/dsim``. ``rows_value_and_grad`` returns ``(loss, dL/dsim, new_beta_t, stats)``, both at
once, reusing the forward's ``(R, C)`` arrays instead of recomputing them: the library's calling
convention (see ``weince_core``). The pairing forms turn ``dL/dsim`` into gradients of
embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from . import stats as tail
from ._types import Array, Namespace
from .collectives import Collectives, gather, total, world_size
from .config import WEINCEConfig
from .ops import (
    add_at_columns,
    add_product_,
    detached,
    exp_,
    fill_at_most_,
    kernel_result,
    largest,
    log_,
    logsumexp,
    mask_columns,
    one_minus_,
    reciprocal_,
    sigmoid,
    softmax_,
    take_columns,
    top_k,
)
from .validation import check_config, check_residuals, check_rows


class RowsResiduals(NamedTuple):
    """What the backward pass needs besides ``sim``: O(rows) memory."""

    lam: Array  # (R,) the gate, a constant for the gradient
    lse: Array  # (R,) logsumexp of each row's blended logits
    beta_t: Array  # () the beta_t used in this step
    top_index: Array | None  # (R, M') columns of the hard negatives; None without top-M terms
    lse_weibit: Array | None  # (R,) logsumexp of the Weibit top-M logits
    lse_softmax: Array | None  # (R,) logsumexp of the softmax top-M logits
    # The scale that replaces 1 / tau (two-tower), a 0-d array, or None for 1 / tau.
    scale: Array | None = None
    # Per-row weights in the mean over anchors, (R,), where they differ between rows (rows
    # without a positive weigh 0: the multi-positive form); None: 1 / (rows of every rank).
    row_weight: Array | None = None


class _Dense(NamedTuple):
    """The ``(R, C)`` arrays the forward hands the backward (overwritten there)."""

    matrix: Array  # the softmax P of the blended logits, or with ``scaled`` P * dG/dsim / R
    distance: Array | None  # 1 - clip_s(sim) (None with the gate off or ``scaled``)
    scaled: bool


def shortfall_logit(sim: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``-log(1 - clip_s(sim))``, the shortfall coordinate without its slope (docs/math.md
    section 2).

    Args:
        sim: similarities.
        config: ``eps`` (``clip_s`` caps at ``1 - eps``).
        xp: the namespace.

    Returns:
        A new array of ``sim``'s shape.
    """
    return -xp.log(_distance_to_ceiling(sim, config, xp))


def shortfall_slope(sim: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``d/dsim`` of the shortfall coordinate (docs/math.md section 6).

    Args:
        sim: similarities.
        config: ``eps``.
        xp: the namespace.

    Returns:
        ``1 / (1 - sim)`` below the cap, 0 above, a new array.
    """
    return _slope_from_distance(_distance_to_ceiling(sim, config, xp), config, xp)


def _distance_to_ceiling(sim: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``1 - clip_s(sim)``, at least ``eps``: a new array."""
    return one_minus_(xp.clip(sim, max=1.0 - config.eps), xp)


def _slope_from_distance(distance: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``1 / distance``, 0 where ``sim`` was clamped (its slope is 0 there, not ``1 / eps``); in
    place of ``distance``.

    The clamped entries are exactly those at the least distance, ``1 - fl(1 - eps)``: ``1 - s``
    is exact for ``s >= 1/2`` (Sterbenz), so any ``s`` below the cap is strictly farther.
    """
    clamped = 1.0 - float(np.asarray(1.0 - config.eps, dtype=_numpy_dtype(distance.dtype, xp)))
    return reciprocal_(fill_at_most_(distance, clamped, math.inf, xp), xp)


def _numpy_dtype(dtype: Any, xp: Namespace) -> Any:
    """The NumPy float dtype of ``dtype``'s width (float32 or float64, the compute dtypes)."""
    return np.float32 if xp.finfo(dtype).bits == 32 else np.float64


def _scaled(sim: Array, scale: Array | None, config: WEINCEConfig) -> Array:
    """``sim / tau``, or ``scale * sim`` where a scale replaces ``1 / tau`` (two-tower): a new
    array."""
    return sim / config.temperature if scale is None else sim * scale


def _inverse_temperature(scale: Array | None, config: WEINCEConfig) -> Any:
    return 1.0 / config.temperature if scale is None else scale


def _blend(
    sim: Array,
    lam: Array,
    config: WEINCEConfig,
    xp: Namespace,
    *,
    keep_distance: bool = False,
    scale: Array | None = None,
) -> tuple[Array, Array | None]:
    """The blended logits ``G = (1 - lam) sim / tau + lam beta_w (-log(1 - clip_s(sim)))``, ``lam``
    per row (a new array), and, with ``keep_distance``, ``1 - clip_s(sim)``
    (``None`` with the gate off).

    The ``(R, C)`` arithmetic reuses the arrays it makes (in place where the backend allows,
    see ``ops.log_``).
    """
    if config.gate == "off":
        return _scaled(sim, scale, config), None
    distance = _distance_to_ceiling(sim, config, xp)
    if keep_distance:
        logits = xp.log(distance)
    else:
        logits, distance = log_(distance, xp), None
    logits *= -(lam * config.beta_w)[:, None]
    softmax_weight = (1.0 - lam) / config.temperature if scale is None else (1.0 - lam) * scale
    logits = add_product_(logits, sim, softmax_weight[:, None], xp)
    return logits, distance


def _without(matrix: Array, excluded: Array | None, xp: Namespace) -> Array:
    """The temporary ``matrix`` with ``-inf`` at the excluded columns (in place where possible)."""
    return matrix if excluded is None else mask_columns(matrix, excluded, xp)


def _row_values(matrix: Array, columns: Array, xp: Namespace) -> Array:
    return take_columns(matrix, columns[:, None], xp)[:, 0]


def _scalar(value: float, like: Array, xp: Namespace) -> Array:
    return xp.full((), value, dtype=like.dtype, device=device(like))


def _cross_entropy_first(
    logits: Array, total_rows: int, collectives: Collectives | None, xp: Namespace
) -> tuple[Array, Array]:
    """Mean cross-entropy of rows whose target is column 0, and each row's logsumexp."""
    lse = logsumexp(logits, xp)
    return _mean_over_rows(lse - logits[:, 0], total_rows, collectives, xp), lse


def _mean_over_rows(
    values: Array, total_rows: int, collectives: Collectives | None, xp: Namespace
) -> Array:
    """The mean over the rows of every rank."""
    return total(xp.sum(values) / total_rows, collectives)


def rows_forward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array,
    config: WEINCEConfig | None = None,
    *,
    num_negatives: int,
    collectives: Collectives | None = None,
    negatives: Array | None = None,
    scale: Array | None = None,
    negatives_finite: Array | None = None,
) -> tuple[Array, Array, dict[str, Array], RowsResiduals]:
    """The WEINCE loss of rows (docs/math.md sections 1-4 and 9), keeping O(rows) residuals.

    Rows come in two kinds (docs/math.md section 9):

    - One positive and the same number of negatives per row (two-view, two-tower, explicit
      negatives; the fast path): ``positive`` ``(R,)`` integer columns, ``excluded`` ``(R, E)``
      integer columns that are not candidates of their row (each row's distinct, none its
      positive) or ``None``, ``negatives`` ``None``; every row has ``num_negatives`` negatives.
    - Per-row sets (multi-positive): ``positive`` and ``negatives`` ``(R, C)`` boolean masks
      (disjoint; the candidates are their union), ``excluded`` ``None``, ``num_negatives`` the
      largest number of negatives a row can have. A row may have no positive (it adds nothing
      to the loss) or no negative (``lambda = 0``).

    Args:
        sim: ``(R, C)`` similarities in the compute dtype.
        positive: each row's positive column(s), as above.
        excluded: each row's excluded columns, or ``None``.
        beta_t: the 0-d state, in ``sim``'s dtype.
        config: the paper preset when ``None``.
        num_negatives: the negatives per row (per-row sets: the most a row can have).
        collectives: these are this rank's rows of a batch whose rows are spread over ranks:
            per-row statistics stay local, while ``rho0``, the ``beta_t`` tail, the loss and
            the summary statistics are those of all rows of all ranks.
        negatives: the per-row negatives mask, or ``None``.
        scale: a 0-d array that replaces ``1 / tau`` (the two-tower form's), or ``None``.
        negatives_finite: 0-d boolean, whether every negative similarity of every rank is finite
            (where not, ``beta_t`` stays), when the caller knows it cheaply; ``None``: counted in
            ``sim``.

    Returns:
        ``(loss, new_beta_t, stats, residuals)``; ``residuals`` for ``rows_backward``.

    Raises:
        TypeError: an argument of a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    check_rows(sim, positive, excluded, beta_t, negatives)
    config = check_config(config)
    args = (sim, positive, excluded, beta_t, config, num_negatives, collectives, negatives, scale)
    return _rows_forward(*args, negatives_finite, keep_dense=False)[:4]


def rows_value_and_grad(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array,
    config: WEINCEConfig | None = None,
    *,
    num_negatives: int,
    collectives: Collectives | None = None,
    negatives: Array | None = None,
    scale: Array | None = None,
    negatives_finite: Array | None = None,
) -> tuple[Array, Any, Array, dict[str, Array]]:
    """``rows_forward`` and ``rows_backward`` in one pass.

    The same numbers as the two calls (to rounding), with the rows' softmax of the blended
    logits and ``1 - clip_s(sim)`` made once for both: these ``(R, C)`` arrays live only during
    this call.

    Args:
        sim: as in ``rows_forward``.
        positive: as in ``rows_forward``.
        excluded: as in ``rows_forward``.
        beta_t: as in ``rows_forward``.
        config: as in ``rows_forward``.
        num_negatives: as in ``rows_forward``.
        collectives: as in ``rows_forward``.
        negatives: as in ``rows_forward``.
        scale: as in ``rows_forward``.
        negatives_finite: as in ``rows_forward``.

    Returns:
        ``(loss, dL/dsim, new_beta_t, stats)``; with a ``scale``, ``(dL/dsim, dL/dscale)`` in
        place of ``dL/dsim`` (``dL/dscale`` this rank's rows' part).

    Raises:
        TypeError: as ``rows_forward``.
        ValueError: as ``rows_forward``.
    """
    check_rows(sim, positive, excluded, beta_t, negatives)
    config = check_config(config)
    args = (sim, positive, excluded, beta_t, config, num_negatives, collectives, negatives, scale)
    loss, beta_t, stats, residuals, dense = _rows_forward(*args, negatives_finite, keep_dense=True)
    total_rows = sim.shape[0] * world_size(collectives)
    d_sim, d_scale = _rows_backward(
        sim, positive, excluded, residuals, config, total_rows, dense, negatives
    )
    return loss, d_sim if scale is None else (d_sim, d_scale), beta_t, stats


class _Selection(NamedTuple):
    """Each row's largest negatives, and what tells a row's negatives apart."""

    top: Array | None  # (R, max(k, M')) the largest negative similarities (None: none needed)
    top_index: Array | None  # their columns
    # One positive per row: the columns that are no negatives, (R, 1 + E); None where unused.
    not_negative: Array | None
    negative_sim: Array | None  # per-row sets: ``sim`` at the negatives, ``-inf`` elsewhere
    negative_counts: Array | None  # per-row sets: each row's number of negatives


class _Blended(NamedTuple):
    """The blended part of the loss, per row (docs/math.md section 2)."""

    lse: Array  # (R,) logsumexp of the blended logits over the candidates
    positive_logit: Array  # (R,) the positive's logit (per-row sets: the positives' mean)
    dense: _Dense | None  # for the backward pass, where asked for
    row_weight: Array | None  # per-row sets: each row's weight in the mean over anchors
    positive_counts: Array | None  # per-row sets: each row's positives, at least 1


class _TopM(NamedTuple):
    """The top-M terms (docs/math.md section 3): their losses and per-row logsumexps."""

    loss_weibit: Array
    loss_softmax: Array
    lse_weibit: Array | None
    lse_softmax: Array | None


def _rows_forward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array,
    config: WEINCEConfig,
    num_negatives: int,
    collectives: Collectives | None,
    negatives: Array | None,
    scale: Array | None,
    negatives_finite: Array | None,
    *,
    keep_dense: bool,
) -> tuple[Array, Array, dict[str, Array], RowsResiduals, _Dense | None]:
    """``rows_forward``, and with ``keep_dense`` the rows' softmax of the blended logits and
    ``1 - clip_s(sim)`` (``None`` with the gate off), or the dense gradient itself, for
    ``_rows_backward``.

    The steps: each row's largest negatives (``_select``), the gate (``_gate_statistics``),
    ``beta_t`` (``_beta_statistics``), the blended loss (``_blended_rows``), the top-M terms
    (``_top_m_terms``), then the summary statistics.
    """
    xp = array_namespace(sim, positive, beta_t)
    sim, beta_t = detached(sim, xp), detached(beta_t, xp)
    if scale is not None:
        scale = xp.astype(detached(scale, xp), sim.dtype)
    total_rows = sim.shape[0] * world_size(collectives)
    k = tail.tail_size(num_negatives, config) if config.uses_tail_statistics else 0
    m = min(config.top_m, num_negatives) if config.uses_top_m else 0

    selection = _select(sim, positive, excluded, negatives, max(k, m), config, xp)
    stats = _gate_statistics(sim, selection, k, num_negatives, collectives, config, xp)
    lam = stats["lambda"]
    stats.update(
        _beta_statistics(
            sim,
            selection,
            beta_t,
            total_rows,
            num_negatives,
            negatives,
            negatives_finite,
            collectives,
            config,
            xp,
        )
    )
    beta_used = stats["beta_t"]
    blended = _blended_rows(
        sim,
        positive,
        excluded,
        negatives,
        lam,
        scale,
        total_rows,
        collectives,
        config,
        xp,
        keep_dense=keep_dense,
    )
    mean = partial(
        _mean, row_weight=blended.row_weight, total_rows=total_rows, collectives=collectives
    )
    loss_blend = mean(blended.lse - blended.positive_logit, xp)
    if m:
        top_m = _top_m_terms(
            sim,
            positive,
            selection,
            m,
            beta_used,
            scale,
            blended.positive_counts,
            mean,
            config,
            xp,
        )
    else:
        zero = _scalar(0.0, sim, xp)
        top_m = _TopM(zero, zero, None, None)
    loss = loss_blend
    if config.weibit_weight > 0:
        loss = loss + config.weibit_weight * top_m.loss_weibit
    if config.softmax_weight > 0:
        loss = loss + config.softmax_weight * top_m.loss_softmax

    stats.update(
        lambda_mean=_mean_over_rows(lam, total_rows, collectives, xp),
        frac_lambda_above_half=_mean_over_rows(
            xp.astype(lam > 0.5, sim.dtype), total_rows, collectives, xp
        ),
        loss_blend=loss_blend,
        loss_weibit=top_m.loss_weibit,
        loss_softmax=top_m.loss_softmax,
    )
    top_index = selection.top_index
    residuals = RowsResiduals(
        lam=lam,
        lse=blended.lse,
        beta_t=beta_used,
        top_index=top_index[:, :m] if m and top_index is not None else None,
        lse_weibit=top_m.lse_weibit,
        lse_softmax=top_m.lse_softmax,
        scale=scale,
        row_weight=blended.row_weight,
    )
    return loss, beta_used, stats, residuals, blended.dense if keep_dense else None


def _select(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    negatives: Array | None,
    width: int,
    config: WEINCEConfig,
    xp: Namespace,
) -> _Selection:
    """Each row's ``width`` largest negatives by the keys ``min(sim, 1 - eps)`` (none for
    ``width = 0``), ties by the lower column (docs/math.md section 8)."""
    top = top_index = not_negative = None
    if negatives is not None:
        # The negatives alone, -inf elsewhere: a row's selections end in -inf where it has
        # fewer negatives than the widest row (its own k_a, M'_a are then smaller).
        negative_sim = xp.where(negatives, sim, -math.inf)
        negative_counts = xp.sum(xp.astype(negatives, xp.int32), axis=1)
        if width:
            top, top_index = top_k(negative_sim, width, xp, cap=1.0 - config.eps)
        return _Selection(top, top_index, None, negative_sim, negative_counts)
    if width or config.estimate_beta:
        not_negative = positive[:, None]
        if excluded is not None:
            not_negative = xp.concat([not_negative, excluded], axis=1)
    if width:
        top, top_index = top_k(sim, width, xp, excluded=not_negative, cap=1.0 - config.eps)
    return _Selection(top, top_index, not_negative, None, None)


def _gate_statistics(
    sim: Array,
    selection: _Selection,
    k: int,
    num_negatives: int,
    collectives: Collectives | None,
    config: WEINCEConfig,
    xp: Namespace,
) -> dict[str, Array]:
    """``rho``, ``d_aic`` and ``lambda`` per row and ``rho0`` from each row's ``k`` largest
    negatives (docs/math.md section 1); with the gate off, ``lambda = 0`` and NaN."""
    rows = sim.shape[0]
    if not config.uses_tail_statistics:
        return {
            "rho": xp.full((rows,), math.nan, dtype=sim.dtype, device=device(sim)),
            "d_aic": xp.full((rows,), math.nan, dtype=sim.dtype, device=device(sim)),
            "rho0": _scalar(math.nan, sim, xp),
            "lambda": xp.zeros((rows,), dtype=sim.dtype, device=device(sim)),
        }
    top: Any = selection.top
    gather_rows = partial(gather, collectives=collectives)
    if selection.negative_counts is not None:
        k_rows = tail.tail_sizes(selection.negative_counts, num_negatives, config)
        return tail.gate_statistics_rows(top[:, :k], k_rows, config, xp, gather_rows)
    return tail.gate_statistics(top[:, :k], config, xp, gather_rows)


def _beta_statistics(
    sim: Array,
    selection: _Selection,
    beta_t: Array,
    total_rows: int,
    num_negatives: int,
    negatives: Array | None,
    negatives_finite: Array | None,
    collectives: Collectives | None,
    config: WEINCEConfig,
    xp: Namespace,
) -> dict[str, Array]:
    """``beta_t`` after this step and its fit, from the ``k_g`` largest negatives of all rows
    of all ranks (docs/math.md section 4); without the estimate, ``beta_t`` as it was."""
    if not config.estimate_beta:
        nan = _scalar(math.nan, sim, xp)
        no_update = xp.zeros((), dtype=xp.bool, device=device(sim))
        return dict(beta_t=beta_t, beta_hat=nan, beta_r2=nan, beta_updated=no_update)
    rows = sim.shape[0]
    k_g = tail.beta_tail_size(total_rows * num_negatives, config)
    # Each rank's k_g largest hold the global k_g largest: select, gather, select again.
    # Most often they are among the rows' own largest, selected already (see largest).
    negative_sim, not_negative = selection.negative_sim, selection.not_negative
    pool: Any
    if negative_sim is not None:
        pool = negative_sim
    else:

        def pool() -> Array:  # made only where the rows' largest do not settle it
            return mask_columns(xp.asarray(sim, copy=True), not_negative, xp)

    local = largest(pool, min(k_g, rows * num_negatives), xp, row_top=selection.top)
    if collectives is not None:
        local = largest(gather(local, collectives), k_g, xp)
    finite = negatives_finite
    if negatives is not None:
        if finite is None:
            finite = _negatives_finite_masked(negative_sim, negatives, collectives, xp)
        pool_size = total(xp.sum(selection.negative_counts), collectives)
        return tail.update_beta_pool(local, pool_size, beta_t, config, xp, finite=finite)
    if finite is None:
        finite = _negatives_finite(sim, not_negative, collectives, xp)
    return tail.update_beta(local, beta_t, config, xp, finite=finite)


def _blended_rows(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    negatives: Array | None,
    lam: Array,
    scale: Array | None,
    total_rows: int,
    collectives: Collectives | None,
    config: WEINCEConfig,
    xp: Namespace,
    *,
    keep_dense: bool,
) -> _Blended:
    """Each row's logsumexp of the blended logits over its candidates and its positive logit
    (docs/math.md section 2), and with ``keep_dense`` what ``_rows_backward`` reuses."""
    per_row = negatives is not None
    # A native kernel (ops.register_kernel) may make the dense gradient in one pass over sim
    # (rows with excluded columns and 1 / tau: neither per-row masks nor a scale).
    if keep_dense and not per_row and scale is None:
        fused = kernel_result("row_pass", sim, lam, excluded, config, total_rows)
        if fused is not None:
            gradient, lse = fused
            at_positive = _row_values(sim, positive, xp)[:, None]
            positive_logit = _blend(at_positive, lam, config, xp)[0][:, 0]
            return _Blended(lse, positive_logit, _Dense(gradient, None, scaled=True), None, None)
    logits, distance = _blend(sim, lam, config, xp, keep_distance=keep_dense, scale=scale)
    row_weight = positive_counts = None
    if negatives is not None:
        logits = xp.where(positive | negatives, logits, -math.inf)
        counts = xp.sum(xp.astype(positive, sim.dtype), axis=1)
        has_positive = counts > 0
        anchors = total(xp.sum(xp.astype(has_positive, sim.dtype)), collectives)
        row_weight = xp.where(has_positive, 1.0 / xp.clip(anchors, min=1.0), 0.0)
        positive_counts = xp.clip(counts, min=1.0)
        positive_logit = xp.sum(xp.where(positive, logits, 0.0), axis=1) / positive_counts
    else:
        logits = _without(logits, excluded, xp)
        positive_logit = _row_values(logits, positive, xp)
    dense = None
    if keep_dense:
        probabilities, lse = softmax_(logits, xp)
        dense = _Dense(probabilities, distance, scaled=False)
    else:
        lse = logsumexp(logits, xp, overwrite=True)
    return _Blended(lse, positive_logit, dense, row_weight, positive_counts)


def _top_m_terms(
    sim: Array,
    positive: Array,
    selection: _Selection,
    m: int,
    beta_t: Array,
    scale: Array | None,
    positive_counts: Array | None,
    mean: Callable[[Array, Namespace], Array],
    config: WEINCEConfig,
    xp: Namespace,
) -> _TopM:
    """The Weibit and softmax top-M terms (docs/math.md section 3): each a cross-entropy of the
    positive over itself and the row's ``M'`` hardest negatives."""
    zero = _scalar(0.0, sim, xp)
    loss_weibit, loss_softmax, lse_weibit, lse_softmax = zero, zero, None, None
    top: Any = selection.top
    per_row = selection.negative_sim is not None
    if per_row:
        hard = top[:, :m]  # -inf past a row's M'_a
    else:
        candidates = xp.concat([take_columns(sim, positive[:, None], xp), top[:, :m]], axis=1)
    if config.weibit_weight > 0:
        if per_row:
            weibit = beta_t * shortfall_logit(sim, config, xp)
            lse_weibit = logsumexp(beta_t * shortfall_logit(hard, config, xp), xp)
            terms = _mean_positive_terms(weibit, lse_weibit, positive, positive_counts, xp)
            loss_weibit = mean(terms, xp)
        else:
            weibit = beta_t * shortfall_logit(candidates, config, xp)
            lse_weibit = logsumexp(weibit, xp)
            loss_weibit = mean(lse_weibit - weibit[:, 0], xp)
    if config.softmax_weight > 0:
        if per_row:
            lse_softmax = logsumexp(_scaled(hard, scale, config), xp)
            scaled = _scaled(sim, scale, config)
            terms = _mean_positive_terms(scaled, lse_softmax, positive, positive_counts, xp)
            loss_softmax = mean(terms, xp)
        else:
            scaled = _scaled(candidates, scale, config)
            lse_softmax = logsumexp(scaled, xp)
            loss_softmax = mean(lse_softmax - scaled[:, 0], xp)
    return _TopM(loss_weibit, loss_softmax, lse_weibit, lse_softmax)


def _mean(
    values: Array,
    xp: Namespace,
    *,
    row_weight: Array | None,
    total_rows: int,
    collectives: Collectives | None,
) -> Array:
    """The mean over the anchors of every rank: all rows, or by ``row_weight`` (rows without a
    positive weigh 0; their ``values`` may be anything)."""
    if row_weight is None:
        return _mean_over_rows(values, total_rows, collectives, xp)
    return total(xp.sum(xp.where(row_weight > 0, values * row_weight, 0.0)), collectives)


def _mean_positive_terms(
    logits: Array, lse_hard: Array, positive: Array, positive_counts: Array, xp: Namespace
) -> Array:
    """Per row, the mean over its positives ``p`` of the cross-entropy of ``p`` over
    ``{p} ∪ H_a``: ``softplus(lse_H - l_p)`` (0 for a row without negatives, ``lse_H = -inf``)."""
    terms = xp.logaddexp(xp.zeros_like(lse_hard)[:, None], lse_hard[:, None] - logits)
    return xp.sum(xp.where(positive, terms, 0.0), axis=1) / positive_counts


def _negatives_finite_masked(
    negative_sim: Array, negatives: Array, collectives: Collectives | None, xp: Namespace
) -> Array:
    """``_negatives_finite`` of per-row negatives (``negative_sim`` is ``-inf`` elsewhere)."""
    count = xp.sum(xp.astype(negatives & ~xp.isfinite(negative_sim), xp.int32))
    return total(count, collectives) == 0


def _negatives_finite(
    sim: Array, not_negative: Array, collectives: Collectives | None, xp: Namespace
) -> Array:
    """Whether every negative similarity of every rank is finite (a 0-d boolean): the
    non-finite entries of ``sim`` less those at the columns that are no negatives."""
    count = xp.sum(xp.astype(~xp.isfinite(sim), xp.int32))
    count = count - xp.sum(xp.astype(~xp.isfinite(take_columns(sim, not_negative, xp)), xp.int32))
    return total(count, collectives) == 0


def rows_backward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    residuals: RowsResiduals,
    config: WEINCEConfig | None = None,
    *,
    total_rows: int | None = None,
    negatives: Array | None = None,
) -> Any:
    """The gradient of the loss that ``rows_forward`` computed on the same ``sim`` (docs/math.md
    section 6).

    Dense part: ``P_ab * dG_ab/dsim_ab / R`` over the candidates. The ``- [b = p(a)]`` of the
    main term and the whole top-M terms touch at most ``M' + 1`` columns per row, so they are
    computed on those columns only and added there (with several positives per row, the
    positives' parts are dense).

    Args:
        sim: the ``sim`` of the forward pass.
        positive: as in the forward pass.
        excluded: as in the forward pass.
        residuals: from ``rows_forward``.
        config: the configuration of the forward pass.
        total_rows: the rows of all ranks that the loss averages over (default: ``R``).
        negatives: the mask ``rows_forward`` had (per-row sets), else ``None``.

    Returns:
        ``dL/dsim`` (``(R, C)``); ``(dL/dsim, dL/dscale)`` where the forward pass had a ``scale``
        (``dL/dscale`` this rank's rows' part).

    Raises:
        TypeError: ``residuals`` are not ``rows_forward``'s, or an argument of a wrong type.
        ValueError: a wrong shape or device, named.
    """
    check_rows(sim, positive, excluded, negatives=negatives)
    config = check_config(config)
    check_residuals(residuals, RowsResiduals, "rows_forward")
    d_sim, d_scale = _rows_backward(
        sim, positive, excluded, residuals, config, total_rows, None, negatives
    )
    return d_sim if residuals.scale is None else (d_sim, d_scale)


def _rows_backward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    residuals: RowsResiduals,
    config: WEINCEConfig,
    total_rows: int | None,
    dense: _Dense | None,
    negatives: Array | None,
) -> tuple[Array, Array | None]:
    """``rows_backward``'s ``(dL/dsim, dL/dscale or None)``, on ``_rows_forward``'s ``dense``
    pair when given (overwritten)."""
    xp = array_namespace(sim, positive)
    sim = detached(sim, xp)
    per_row = negatives is not None
    scale = residuals.scale
    inverse_tau = _inverse_temperature(scale, config)
    lam = residuals.lam
    rows = sim.shape[0] if total_rows is None else total_rows
    row_weight = residuals.row_weight

    def per_anchor(values: Any) -> Any:  # the mean's weight: 1 / rows, or per row
        if row_weight is None:
            return values / rows
        return values * (row_weight if values.ndim == 1 else row_weight[:, None])

    if dense is None:
        logits, distance = _blend(sim, lam, config, xp, keep_distance=True, scale=scale)
        if per_row:
            logits = xp.where(positive | negatives, logits, -math.inf)
        else:
            logits = _without(logits, excluded, xp)
        logits -= residuals.lse[:, None]
        d_sim = exp_(logits, xp)  # the probabilities, times dG/dsim in place below
        dense = _Dense(d_sim, distance, scaled=False)
    d_sim, distance = dense.matrix, dense.distance
    if per_row:
        positive_counts = xp.clip(xp.sum(xp.astype(positive, sim.dtype), axis=1), min=1.0)
        d_sim = d_sim - xp.where(positive, 1.0 / positive_counts[:, None], 0.0)
    d_scale = None
    if scale is not None:  # d/dscale of the blend: (1 - lam) sim (P - target), summed
        along_sim = xp.sum(d_sim * sim, axis=1)
        if not per_row:
            along_sim = along_sim - _row_values(sim, positive, xp)
        d_scale = xp.sum(per_anchor((1.0 - lam) * along_sim))
    if scale is None and row_weight is None:
        softmax_slope = (1.0 - lam) / (config.temperature * rows)
    else:
        softmax_slope = per_anchor((1.0 - lam) * inverse_tau)
    gated = config.gate != "off"
    if gated:
        weight = (
            lam * (config.beta_w / rows) if row_weight is None else lam * config.beta_w * row_weight
        )
    if not dense.scaled:  # (scaled: a kernel made P * dG/dsim / R already)
        if distance is None:
            d_sim *= softmax_slope[:, None]
        else:
            slope = _slope_from_distance(distance, config, xp)
            slope *= weight[:, None]
            slope += softmax_slope[:, None]
            d_sim *= slope
    positive_slope = softmax_slope
    if gated and not per_row:
        positive_sim = _row_values(sim, positive, xp)
        positive_slope = softmax_slope + weight * shortfall_slope(positive_sim, config, xp)

    if per_row:
        return _per_row_top_m(d_sim, d_scale, sim, positive, negatives, residuals, config, xp)
    if residuals.top_index is None:
        return add_at_columns(d_sim, positive[:, None], -positive_slope[:, None], xp), d_scale
    columns = xp.concat([positive[:, None], residuals.top_index], axis=1)
    candidates = take_columns(sim, columns, xp)
    coefficient = xp.zeros_like(candidates)
    if residuals.lse_weibit is not None:
        beta_t = residuals.beta_t
        weibit = beta_t * shortfall_logit(candidates, config, xp)
        d_logit = _minus_target(xp.exp(weibit - residuals.lse_weibit[:, None]), xp)
        slope = beta_t * shortfall_slope(candidates, config, xp)
        coefficient = coefficient + config.weibit_weight * d_logit * slope
    if residuals.lse_softmax is not None:
        scaled = _scaled(candidates, scale, config)
        d_logit = _minus_target(xp.exp(scaled - residuals.lse_softmax[:, None]), xp)
        if scale is None:
            coefficient = coefficient + (config.softmax_weight / config.temperature) * d_logit
        else:
            coefficient = coefficient + (config.softmax_weight * scale) * d_logit
            along = xp.sum(d_logit * candidates, axis=1)
            d_scale = d_scale + config.softmax_weight * xp.sum(per_anchor(along))
    coefficient = per_anchor(coefficient)
    head = coefficient[:, :1] - positive_slope[:, None]
    coefficient = xp.concat([head, coefficient[:, 1:]], axis=1)
    return add_at_columns(d_sim, columns, coefficient, xp), d_scale


def _per_row_top_m(
    d_sim: Array,
    d_scale: Array | None,
    sim: Array,
    positive: Array,
    negatives: Array,
    residuals: RowsResiduals,
    config: WEINCEConfig,
    xp: Namespace,
) -> tuple[Array, Array | None]:
    """The top-M terms' part of ``dL/dsim`` with several positives per row, added to ``d_sim``.

    Row ``a``'s term is ``mean_p softplus(lse_H - l_p)``: ``d/dl_p = -sigma(lse_H - l_p) / |P_a|``
    at each positive, ``d/dl_h = softmax_H(l_h) * mean_p sigma(lse_H - l_p)`` at each hard
    negative ``h`` (a padding slot past ``M'_a`` gets 0).
    """
    if residuals.top_index is None:
        return d_sim, d_scale
    row_weight: Any = residuals.row_weight
    top_index = residuals.top_index
    counts = xp.clip(xp.sum(xp.astype(positive, sim.dtype), axis=1), min=1.0)
    valid = take_columns(negatives, top_index, xp)
    hard = xp.where(valid, take_columns(sim, top_index, xp), -math.inf)
    hard_coefficient = xp.zeros_like(hard)
    scale = residuals.scale
    parts = []
    if residuals.lse_weibit is not None:
        beta_t = residuals.beta_t
        parts.append(
            (
                config.weibit_weight,
                residuals.lse_weibit,
                lambda s: beta_t * shortfall_logit(s, config, xp),
                lambda s: beta_t * shortfall_slope(s, config, xp),
                False,
            )
        )
    if residuals.lse_softmax is not None:
        inverse_tau = _inverse_temperature(scale, config)
        parts.append(
            (
                config.softmax_weight,
                residuals.lse_softmax,
                lambda s: _scaled(s, scale, config),
                lambda s: inverse_tau,
                scale is not None,
            )
        )
    for weight, lse_hard, logit_of, slope_of, scaled in parts:
        pull = xp.where(positive, sigmoid(lse_hard[:, None] - logit_of(sim), xp), 0.0)
        mean_pull = xp.sum(pull, axis=1) / counts
        row = weight * row_weight
        d_positive = -(pull / counts[:, None]) * row[:, None]
        share = xp.where(valid, xp.exp(logit_of(hard) - lse_hard[:, None]), 0.0)
        d_hard = share * (mean_pull * row)[:, None]
        d_sim = d_sim + d_positive * slope_of(sim)
        hard_coefficient = hard_coefficient + xp.where(valid, d_hard * slope_of(hard), 0.0)
        if scaled and d_scale is not None:
            d_scale = (
                d_scale + xp.sum(d_positive * sim) + xp.sum(xp.where(valid, d_hard * hard, 0.0))
            )
    return add_at_columns(d_sim, top_index, hard_coefficient, xp), d_scale


def _minus_target(prob: Array, xp: Namespace) -> Array:
    """``prob - onehot(0)``: the softmax cross-entropy gradient when column 0 is the target."""
    return xp.concat([prob[:, :1] - 1.0, prob[:, 1:]], axis=1)
