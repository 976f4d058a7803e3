"""The loss on the general rows form (SPEC.md sections 2, 3 and 6).

Every pairing form reduces to rows: a similarity matrix ``sim`` (anchors x candidates), the column
of each row's positive, and the columns each row excludes (not candidates at all, like an anchor
itself). The remaining columns are the row's negatives, ``num_negatives`` of them in every row.

``rows_forward`` keeps only per-row residuals; ``rows_backward`` recomputes the rest from
``sim`` and returns ``dL/dsim``. ``rows_value_and_grad`` does both at once, reusing the
forward's ``(R, C)`` arrays instead of recomputing them. The pairing forms turn ``dL/dsim``
into gradients of embeddings.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from . import stats as tail
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
    softmax_,
    take_columns,
    top_k,
)

Array = Any
Namespace = Any


class RowsResiduals(NamedTuple):
    """What the backward pass needs besides ``sim``: O(rows) memory."""

    lam: Array  # (R,) the gate, a constant for the gradient
    lse: Array  # (R,) logsumexp of each row's blended logits
    beta_t: Array  # () the beta_t used in this step
    top_index: Array | None  # (R, M') columns of the hard negatives; None without top-M terms
    lse_weibit: Array | None  # (R,) logsumexp of the Weibit top-M logits
    lse_softmax: Array | None  # (R,) logsumexp of the softmax top-M logits


class _Dense(NamedTuple):
    """The ``(R, C)`` arrays the forward hands the backward (overwritten there)."""

    matrix: Array  # the softmax P of the blended logits, or with ``scaled`` P * dG/dsim / R
    distance: Array | None  # 1 - clip_s(sim) (None with the gate off or ``scaled``)
    scaled: bool


def shortfall_logit(sim: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``-log(1 - clip_s(sim))``, the shortfall coordinate (without its slope)."""
    return -xp.log(_distance_to_ceiling(sim, config, xp))


def shortfall_slope(sim: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``d/dsim`` of the shortfall coordinate: ``1 / (1 - sim)`` below the cap, 0 above."""
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


def _blend(
    sim: Array, lam: Array, config: WEINCEConfig, xp: Namespace, *, keep_distance: bool = False
) -> tuple[Array, Array | None]:
    """The blended logits ``G = (1 - lam) sim / tau + lam beta_w (-log(1 - clip_s(sim)))``, ``lam``
    per row (a new array), and, with ``keep_distance``, ``1 - clip_s(sim)``
    (``None`` with the gate off).

    The ``(R, C)`` arithmetic reuses the arrays it makes (in place where the backend allows,
    see ``ops.log_``).
    """
    if config.gate == "off":
        return sim / config.temperature, None
    distance = _distance_to_ceiling(sim, config, xp)
    if keep_distance:
        logits = xp.log(distance)
    else:
        logits, distance = log_(distance, xp), None
    logits *= -(lam * config.beta_w)[:, None]
    logits = add_product_(logits, sim, ((1.0 - lam) / config.temperature)[:, None], xp)
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
    config: WEINCEConfig,
    *,
    num_negatives: int,
    collectives: Collectives | None = None,
    negatives_finite: Array | None = None,
) -> tuple[Array, Array, dict[str, Array], RowsResiduals]:
    """The WEINCE loss of rows: ``(loss, new_beta_t, stats, residuals)``.

    ``sim`` is ``(R, C)`` in the compute dtype, ``positive`` ``(R,)`` integer columns,
    ``excluded`` ``(R, E)`` integer columns that are not candidates of their row (each row's
    distinct, none its positive) or ``None``, ``beta_t`` a 0-d array in ``sim``'s dtype. Every
    row has ``num_negatives`` negatives (columns neither excluded nor positive).

    With ``collectives``, these are this rank's rows of a batch whose rows are spread over
    ranks: per-row statistics stay local, while ``rho0``, the ``beta_t`` tail, the loss and the
    summary statistics are those of all rows of all ranks.

    ``negatives_finite``: whether every negative similarity of every rank is finite (a 0-d
    boolean; where not, ``beta_t`` stays), when the caller knows it cheaply (from its inputs);
    by default it is counted in ``sim``.
    """
    args = (sim, positive, excluded, beta_t, config, num_negatives, collectives, negatives_finite)
    return _rows_forward(*args, keep_dense=False)[:4]


def rows_value_and_grad(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array,
    config: WEINCEConfig,
    *,
    num_negatives: int,
    collectives: Collectives | None = None,
    negatives_finite: Array | None = None,
) -> tuple[Array, Array, dict[str, Array], Array]:
    """``(loss, new_beta_t, stats, dL/dsim)``: ``rows_forward`` and ``rows_backward`` in one.

    The same numbers as the two calls (to rounding), with the rows' softmax of the blended
    logits and ``1 - clip_s(sim)`` made once for both: these ``(R, C)`` arrays live only during
    this call. Arguments as in ``rows_forward``.
    """
    args = (sim, positive, excluded, beta_t, config, num_negatives, collectives, negatives_finite)
    loss, beta_t, stats, residuals, dense = _rows_forward(*args, keep_dense=True)
    total_rows = sim.shape[0] * world_size(collectives)
    d_sim = _rows_backward(sim, positive, excluded, residuals, config, total_rows, dense)
    return loss, beta_t, stats, d_sim


def _rows_forward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array,
    config: WEINCEConfig,
    num_negatives: int,
    collectives: Collectives | None,
    negatives_finite: Array | None,
    *,
    keep_dense: bool,
) -> tuple[Array, Array, dict[str, Array], RowsResiduals, _Dense | None]:
    """``rows_forward``, and with ``keep_dense`` the rows' softmax of the blended logits and
    ``1 - clip_s(sim)`` (``None`` with the gate off), or the dense gradient itself, for
    ``_rows_backward``."""
    xp = array_namespace(sim, positive, beta_t)
    sim, beta_t = detached(sim, xp), detached(beta_t, xp)
    rows = sim.shape[0]
    total_rows = rows * world_size(collectives)
    k = tail.tail_size(num_negatives, config) if config.uses_tail_statistics else 0
    m = min(config.top_m, num_negatives) if config.uses_top_m else 0
    if max(k, m) or config.estimate_beta:
        not_negative = positive[:, None]
        if excluded is not None:
            not_negative = xp.concat([not_negative, excluded], axis=1)
    if max(k, m):
        top, top_index = top_k(sim, max(k, m), xp, excluded=not_negative, cap=1.0 - config.eps)

    nan = _scalar(math.nan, sim, xp)
    if config.uses_tail_statistics:
        stats = tail.gate_statistics(top[:, :k], config, xp, lambda rho: gather(rho, collectives))
    else:
        stats = {
            "rho": xp.full((rows,), math.nan, dtype=sim.dtype, device=device(sim)),
            "d_aic": xp.full((rows,), math.nan, dtype=sim.dtype, device=device(sim)),
            "rho0": nan,
            "lambda": xp.zeros((rows,), dtype=sim.dtype, device=device(sim)),
        }
    lam = stats["lambda"]

    if config.estimate_beta:
        k_g = tail.beta_tail_size(total_rows * num_negatives, config)
        # Each rank's k_g largest hold the global k_g largest: select, gather, select again.
        # Most often they are among the rows' own largest, selected already (see largest).
        row_top = top if max(k, m) else None

        def negative_sim() -> Array:  # made only where the rows' largest do not settle it
            return mask_columns(xp.asarray(sim, copy=True), not_negative, xp)

        local = largest(negative_sim, min(k_g, rows * num_negatives), xp, row_top=row_top)
        if collectives is not None:
            local = largest(gather(local, collectives), k_g, xp)
        finite = negatives_finite
        if finite is None:
            finite = _negatives_finite(sim, not_negative, collectives, xp)
        stats.update(tail.update_beta(local, beta_t, config, xp, finite=finite))
    else:
        no_update = xp.zeros((), dtype=xp.bool, device=device(sim))
        stats.update(beta_t=beta_t, beta_hat=nan, beta_r2=nan, beta_updated=no_update)
    beta_used = stats["beta_t"]

    # A native kernel (ops.register_kernel) may make the dense gradient in one pass over sim.
    fused = (
        kernel_result("row_pass", sim, lam, excluded, config, total_rows) if keep_dense else None
    )
    if fused is None:
        logits, distance = _blend(sim, lam, config, xp, keep_distance=keep_dense)
        logits = _without(logits, excluded, xp)
        positive_logit = _row_values(logits, positive, xp)
        if keep_dense:
            probabilities, lse = softmax_(logits, xp)
            dense = _Dense(probabilities, distance, scaled=False)
        else:
            lse = logsumexp(logits, xp, overwrite=True)
    else:
        gradient, lse = fused
        positive_logit = _blend(_row_values(sim, positive, xp)[:, None], lam, config, xp)[0][:, 0]
        dense = _Dense(gradient, None, scaled=True)
    loss_blend = _mean_over_rows(lse - positive_logit, total_rows, collectives, xp)
    loss = loss_blend
    zero = _scalar(0.0, sim, xp)
    loss_weibit, loss_softmax, lse_weibit, lse_softmax = zero, zero, None, None
    if m:
        candidates = xp.concat([take_columns(sim, positive[:, None], xp), top[:, :m]], axis=1)
    if config.weibit_weight > 0:
        weibit = beta_used * shortfall_logit(candidates, config, xp)
        loss_weibit, lse_weibit = _cross_entropy_first(weibit, total_rows, collectives, xp)
        loss = loss + config.weibit_weight * loss_weibit
    if config.softmax_weight > 0:
        scaled = candidates / config.temperature
        loss_softmax, lse_softmax = _cross_entropy_first(scaled, total_rows, collectives, xp)
        loss = loss + config.softmax_weight * loss_softmax

    stats.update(
        lambda_mean=_mean_over_rows(lam, total_rows, collectives, xp),
        frac_lambda_above_half=_mean_over_rows(
            xp.astype(lam > 0.5, sim.dtype), total_rows, collectives, xp
        ),
        loss_blend=loss_blend,
        loss_weibit=loss_weibit,
        loss_softmax=loss_softmax,
    )
    residuals = RowsResiduals(
        lam=lam,
        lse=lse,
        beta_t=beta_used,
        top_index=top_index[:, :m] if m else None,
        lse_weibit=lse_weibit,
        lse_softmax=lse_softmax,
    )
    return loss, beta_used, stats, residuals, dense if keep_dense else None


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
    config: WEINCEConfig,
    *,
    total_rows: int | None = None,
) -> Array:
    """``dL/dsim`` (``(R, C)``) of the loss that ``rows_forward`` computed on the same ``sim``.

    ``total_rows``: the rows of all ranks that the loss averages over (default: ``R``).

    Dense part: ``P_ab * dG_ab/dsim_ab / R`` over the candidates. The ``- [b = p(a)]`` of the
    main term and the whole top-M terms touch at most ``M' + 1`` columns per row, so they are
    computed on those columns only and added there.
    """
    return _rows_backward(sim, positive, excluded, residuals, config, total_rows, None)


def _rows_backward(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    residuals: RowsResiduals,
    config: WEINCEConfig,
    total_rows: int | None,
    dense: _Dense | None,
) -> Array:
    """``rows_backward``, on ``_rows_forward``'s ``dense`` arrays when given (overwritten)."""
    xp = array_namespace(sim, positive)
    sim = detached(sim, xp)
    rows = sim.shape[0] if total_rows is None else total_rows
    lam = residuals.lam
    if dense is None:
        logits, distance = _blend(sim, lam, config, xp, keep_distance=True)
        logits = _without(logits, excluded, xp)
        logits -= residuals.lse[:, None]
        d_sim = exp_(logits, xp)  # the probabilities, times dG/dsim in place below
        dense = _Dense(d_sim, distance, scaled=False)
    d_sim = dense.matrix
    softmax_slope = (1.0 - lam) / (config.temperature * rows)
    positive_slope = softmax_slope
    if config.gate != "off":
        weight = lam * (config.beta_w / rows)
        positive_sim = _row_values(sim, positive, xp)
        positive_slope = softmax_slope + weight * shortfall_slope(positive_sim, config, xp)
    if not dense.scaled:  # (scaled: a kernel made P * dG/dsim / R already)
        if dense.distance is None:
            d_sim *= softmax_slope[:, None]
        else:
            slope = _slope_from_distance(dense.distance, config, xp)
            slope *= weight[:, None]
            slope += softmax_slope[:, None]
            d_sim *= slope

    if residuals.top_index is None:
        return add_at_columns(d_sim, positive[:, None], -positive_slope[:, None], xp)
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
        scaled = candidates / config.temperature
        d_logit = _minus_target(xp.exp(scaled - residuals.lse_softmax[:, None]), xp)
        coefficient = coefficient + (config.softmax_weight / config.temperature) * d_logit
    coefficient = coefficient / rows
    head = coefficient[:, :1] - positive_slope[:, None]
    coefficient = xp.concat([head, coefficient[:, 1:]], axis=1)
    return add_at_columns(d_sim, columns, coefficient, xp)


def _minus_target(prob: Array, xp: Namespace) -> Array:
    """``prob - onehot(0)``: the softmax cross-entropy gradient when column 0 is the target."""
    return xp.concat([prob[:, :1] - 1.0, prob[:, 1:]], axis=1)
