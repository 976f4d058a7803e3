"""Tail statistics and the gate (SPEC.md sections 1 and 4).

Everything here is a function of similarity *values* only and is never differentiated: the
adapters differentiate through the core's analytic gradient, which treats ``lambda`` and
``beta_t`` as constants. Sizes (``k``, ``n``, ``k_g``) are Python ints decided from shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import device

from .config import WEINCEConfig
from .ops import sigmoid

Array = Any
Namespace = Any

MIN_TAIL_FLOOR = 10  # a tail never has fewer points than this (if there are that many negatives)
WRONG_SIGN_PENALTY = 1e6  # added to the SSE of a fit whose slope has the wrong sign
TINY = 1e-12  # floor of sums of squares


def tail_size(num_negatives: int, config: WEINCEConfig) -> int:
    """``k``: how many of an anchor's largest negatives enter its tail fit."""
    k = min(max(config.min_tail, round(config.tail_fraction * num_negatives)), num_negatives)
    return min(max(MIN_TAIL_FLOOR, k), num_negatives)


def burn_in(k: int) -> int:
    """How many of the smallest shortfalls a fit drops."""
    return max(1, k // 20)


def beta_tail_size(num_values: int, config: WEINCEConfig) -> int:
    """``k_g``: how many of all negatives enter the ``beta_t`` fit."""
    return min(int(max(config.beta_min_tail, config.beta_tail_fraction * num_values)), num_values)


def rho0_index(num_anchors: int, k: int, config: WEINCEConfig) -> int:
    """Position of ``rho0`` in the ascending ``rho``: the ``q`` quantile, or the lower median."""
    if k - burn_in(k) < 2:
        return (num_anchors - 1) // 2
    return round(config.quantile * (num_anchors - 1))


def _log_shortfall(similarity: Array, eps: float, xp: Namespace) -> Array:
    return xp.log(xp.clip(1.0 - similarity, min=eps))


def _centered_ols(xc: Array, y: Array, sxx: Array, xp: Namespace) -> tuple[Array, Array, Array]:
    """Slope, SSE and total sum of squares of ``y`` on ``x`` (``xc`` is ``x`` centred)."""
    yc = y - xp.mean(y, axis=-1, keepdims=True)
    slope = xp.sum(xc * yc, axis=-1) / sxx
    residual = yc - slope[..., None] * xc
    sse = xp.clip(xp.sum(residual * residual, axis=-1), min=TINY)
    return slope, sse, xp.sum(yc * yc, axis=-1)


def _levels(k: int, first: int, eps: float, like: Array, xp: Namespace) -> Array:
    """``F_r = max(r / (k + 1), eps)`` for ``r = first + 1 .. k``."""
    r = xp.arange(first + 1, k + 1, dtype=like.dtype, device=device(like))
    return xp.clip(r / (k + 1), min=eps)


def tail_fit(top: Array, config: WEINCEConfig, xp: Namespace) -> tuple[Array, Array]:
    """Per-anchor ``rho`` and ``dAIC`` from the ``k`` largest negatives of each row.

    ``top`` is ``(R, k)``, each row in descending order. ``dAIC > 0`` favours a Weibull tail.
    The wrong-sign penalties apply exactly where all kept shortfalls are equal (then both
    slopes are 0 in exact arithmetic, and both fits have the wrong sign), never by the sign of
    a rounded slope (the degenerate-tail rule of the math page's exact-arithmetic section).
    """
    eps = config.eps
    k = top.shape[-1]
    first = burn_in(k)
    n = k - first
    rho = xp.clip(1.0 - top[:, 0], min=eps)
    if n < 2:
        return rho, xp.zeros_like(rho)
    x = _log_shortfall(top[:, first:], eps, xp)
    constant = xp.max(x, axis=-1) == xp.min(x, axis=-1)
    xc = _centered(x, constant, xp)
    sxx = xp.clip(xp.sum(xc * xc, axis=-1), min=TINY)
    log_levels = xp.log(_levels(k, first, eps, top, xp))
    # Both fits at once: y is (2, 1, n), the Weibull levels then the Gumbel ones.
    y = xp.stack([log_levels, xp.log(-log_levels)])[:, None, :]
    _, sses, _ = _centered_ols(xc, y, sxx, xp)
    sse_w, sse_g = (
        xp.where(constant, sse + WRONG_SIGN_PENALTY, sse) for sse in (sses[0, :], sses[1, :])
    )
    # AIC = n log(SSE / n) + 4 for each fit; the constants cancel in the difference.
    d_aic = n * (xp.log(sse_g / n) - xp.log(sse_w / n))
    return rho, d_aic


def _centered(x: Array, constant: Array, xp: Namespace) -> Array:
    """``x - mean(x)`` along the last axis, exactly 0 where all of ``x`` is equal (a rounded
    mean of equal numbers need not equal them)."""
    xc = x - xp.mean(x, axis=-1, keepdims=True)
    return xp.where(constant[..., None], 0.0, xc)


def gate(rho: Array, d_aic: Array, rho0: Array, config: WEINCEConfig, xp: Namespace) -> Array:
    """``lambda`` per anchor: ``sigma(kappa_rho log(rho0 / rho)) * sigma(kappa_aic (dAIC - m))``."""
    eps = config.eps
    log_ratio = xp.log(xp.clip(rho0, min=eps)) - xp.log(xp.clip(rho, min=eps))
    lam_rho = sigmoid(config.kappa_rho * log_ratio, xp)
    lam_aic = sigmoid(config.kappa_aic * (d_aic - config.aic_margin), xp)
    if config.gate == "rho":
        return lam_rho
    if config.gate == "aic":
        return lam_aic
    return lam_rho * lam_aic


def gate_statistics(
    top: Array,
    config: WEINCEConfig,
    xp: Namespace,
    gather: Callable[[Array], Array] = lambda rho: rho,
) -> dict[str, Array]:
    """``rho``, ``d_aic``, ``rho0`` and ``lambda`` of the anchors whose tails are ``top``.

    ``rho0`` is taken over ``gather(rho)``: the anchors of every rank.
    """
    rho, d_aic = tail_fit(top, config, xp)
    every_rho = gather(rho)
    rho0 = xp.sort(every_rho)[rho0_index(every_rho.shape[0], top.shape[-1], config)]
    return {"rho": rho, "d_aic": d_aic, "rho0": rho0, "lambda": gate(rho, d_aic, rho0, config, xp)}


def update_beta(
    top_global: Array,
    beta_t: Array,
    config: WEINCEConfig,
    xp: Namespace,
    *,
    finite: Array | None = None,
) -> dict[str, Array]:
    """One online step of ``beta_t`` from the ``k_g`` largest negatives of the batch.

    ``top_global`` is 1-D and descending. ``finite`` (0-d boolean): whether every negative
    similarity of the step is finite; where not, ``beta_t`` stays (so it never becomes
    non-finite, whichever entries a backend's selection let through). Constant shortfalls
    make the slope 0, hence no update. Returns the new ``beta_t`` (used in this same step),
    the fit's ``beta_hat`` and ``R2``, and whether the update was taken.
    """
    k_g = top_global.shape[0]
    first = burn_in(k_g)
    if k_g < MIN_TAIL_FLOOR or k_g - first < 2:
        nan = xp.full((), math.nan, dtype=beta_t.dtype, device=device(beta_t))
        updated = xp.zeros((), dtype=xp.bool, device=device(beta_t))
        return {"beta_t": beta_t, "beta_hat": nan, "beta_r2": nan, "beta_updated": updated}
    x = _log_shortfall(top_global[first:], config.eps, xp)
    xc = _centered(x, xp.max(x) == xp.min(x), xp)
    sxx = xp.clip(xp.sum(xc * xc), min=TINY)
    r = xp.arange(first + 1, k_g + 1, dtype=x.dtype, device=device(x))
    slope, sse, sst = _centered_ols(xc, xp.log(r / (k_g + 1)), sxx, xp)
    beta_hat = xp.clip(slope, min=0.0)
    r2 = xp.clip(1.0 - sse / xp.clip(sst, min=TINY), 0.0, 1.0)
    updated = (r2 >= config.beta_min_r2) & (beta_hat > 0)
    if finite is not None:
        updated = updated & finite
    low, high = config.beta_clip
    m = config.beta_momentum
    moved = m * beta_t + (1.0 - m) * xp.clip(beta_hat, low, high)
    return {
        "beta_t": xp.where(updated, moved, beta_t),
        "beta_hat": beta_hat,
        "beta_r2": r2,
        "beta_updated": updated,
    }
