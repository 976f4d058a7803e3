"""Tail statistics and the gate (docs/math.md sections 1 and 4).

Everything here is a function of similarity *values* only and is never differentiated: the
adapters differentiate through the core's analytic gradient, which treats ``lambda`` and
``beta_t`` as constants. Sizes (``k``, ``n``, ``k_g``) are Python ints decided from shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from array_api_compat import array_namespace, device

from ._types import Array, Namespace
from .config import WEINCEConfig
from .ops import sigmoid

MIN_TAIL_FLOOR = 10  # a tail never has fewer points than this (if there are that many negatives)
WRONG_SIGN_PENALTY = 1e6  # added to the SSE of a fit whose slope has the wrong sign
TINY = 1e-12  # floor of sums of squares

# The names of the statistics every loss returns (its ``stats`` dict), in one fixed order: the
# order in which PyTorch's autograd Functions return them as a flat tuple. Per anchor:
# ``lambda``, ``d_aic``, ``rho``; the rest are 0-d.
STAT_KEYS = (
    "lambda",
    "d_aic",
    "rho",
    "rho0",
    "beta_t",
    "beta_hat",
    "beta_r2",
    "beta_updated",
    "lambda_mean",
    "frac_lambda_above_half",
    "loss_blend",
    "loss_weibit",
    "loss_softmax",
)


def tail_size(num_negatives: int, config: WEINCEConfig) -> int:
    """``k``: how many of an anchor's largest negatives enter its tail fit (docs/math.md
    section 1).

    Args:
        num_negatives: the anchor's number of negatives ``K``.
        config: ``min_tail`` and ``tail_fraction``.

    Returns:
        ``min(max(10, min_tail, round(tail_fraction K)), K)`` (at most ``K``).
    """
    k = min(max(config.min_tail, round(config.tail_fraction * num_negatives)), num_negatives)
    return min(max(MIN_TAIL_FLOOR, k), num_negatives)


def burn_in(k: int) -> int:
    """How many of the smallest shortfalls a fit drops (docs/math.md section 1).

    Args:
        k: the number of points of the tail.

    Returns:
        ``max(1, k // 20)``.
    """
    return max(1, k // 20)


def beta_tail_size(num_values: int, config: WEINCEConfig) -> int:
    """``k_g``: how many of all negatives enter the ``beta_t`` fit (docs/math.md section 4).

    Args:
        num_values: the number of negatives of the whole batch.
        config: ``beta_min_tail`` and ``beta_tail_fraction``.

    Returns:
        ``min(int(max(beta_min_tail, beta_tail_fraction num_values)), num_values)``.
    """
    return min(int(max(config.beta_min_tail, config.beta_tail_fraction * num_values)), num_values)


def rho0_index(num_anchors: int, k: int, config: WEINCEConfig) -> int:
    """Position of ``rho0`` in the ascending ``rho`` (docs/math.md section 1).

    Args:
        num_anchors: the number of anchors (of every rank).
        k: the tail size.
        config: ``quantile``.

    Returns:
        ``round(quantile (num_anchors - 1))``, or the lower median where no fit has two points.
    """
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
    """Per-anchor ``rho`` and ``dAIC`` from the ``k`` largest negatives of each row
    (docs/math.md section 1).

    ``dAIC > 0`` favours a Weibull tail. The wrong-sign penalties apply exactly where all kept
    shortfalls are equal (then both slopes are 0 in exact arithmetic, and both fits have the
    wrong sign), never by the sign of a rounded slope (docs/math.md section 8).

    Args:
        top: ``(R, k)``, each row's largest negative similarities in descending order.
        config: ``eps``.
        xp: the namespace.

    Returns:
        ``(rho, d_aic)``, each ``(R,)``.
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
    """``lambda`` per anchor: ``sigma(kappa_rho log(rho0 / rho)) * sigma(kappa_aic (dAIC - m))``, or
    one of the two factors (``config.gate``; docs/math.md section 1).

    Args:
        rho: ``(R,)`` per-anchor shortfalls.
        d_aic: ``(R,)`` per-anchor ``dAIC``.
        rho0: the 0-d reference shortfall.
        config: ``gate``, ``kappa_rho``, ``kappa_aic``, ``aic_margin``, ``eps``.
        xp: the namespace.

    Returns:
        ``(R,)`` gates in ``[0, 1]``.
    """
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
    """``rho``, ``d_aic``, ``rho0`` and ``lambda`` of the anchors whose tails are ``top``
    (docs/math.md section 1).

    Args:
        top: ``(R, k)``, as in ``tail_fit``.
        config: the loss's configuration.
        xp: the namespace.
        gather: joins every rank's ``rho`` (``rho0`` is taken over all anchors); one rank: the
            identity.

    Returns:
        The statistics by name: ``rho``, ``d_aic``, ``lambda`` per row, ``rho0`` 0-d.
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
    """One online step of ``beta_t`` from the ``k_g`` largest negatives of the batch
    (docs/math.md section 4).

    Constant shortfalls make the slope 0, hence no update.

    Args:
        top_global: 1-D, the ``k_g`` largest negative similarities, descending.
        beta_t: the 0-d state before this step.
        config: ``beta_min_r2``, ``beta_clip``, ``beta_momentum``, ``eps``.
        xp: the namespace.
        finite: 0-d boolean, whether every negative similarity of the step is finite; where not,
            ``beta_t`` stays (so it never becomes non-finite, whichever entries a backend's
            selection let through).

    Returns:
        ``beta_t`` (the new one, used in this same step), the fit's ``beta_hat`` and ``beta_r2``,
        and ``beta_updated`` (whether the update was taken), by name.
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


# Per-row sizes (docs/math.md section 9): rows with different numbers of negatives, as in the
# multi-positive form. Every shape is still decided by Python ints (the largest sizes); the
# per-row sizes are integer arrays, and the points a row does not have are masked out.


def tail_sizes(num_negatives: Array, max_negatives: int, config: WEINCEConfig) -> Array:
    """``k_a = tail_size(K_a)`` per row, read from a table of ``tail_size`` (Python's
    round-half-to-even, exactly as for one size).

    Args:
        num_negatives: ``(R,)`` integers ``K_a <= max_negatives``.
        max_negatives: the largest number of negatives a row can have.
        config: as in ``tail_size``.

    Returns:
        ``(R,)`` integers, in ``num_negatives``'s dtype.
    """
    return _table(num_negatives, [tail_size(K, config) for K in range(max_negatives + 1)])


def _table(index: Array, values: list[int]) -> Array:
    """``values[index]`` for an integer array ``index`` (a table lookup: no host round trip)."""
    xp = array_namespace(index)
    table = xp.asarray(values, dtype=index.dtype, device=device(index))
    return xp.reshape(xp.take(table, xp.reshape(index, (-1,))), index.shape)


def _masked_fits(
    x: Array, ys: list[Array], kept: Array, xp: Namespace
) -> tuple[list[Array], list[Array], list[Array], Array]:
    """OLS of each ``y`` on ``x`` over the ``kept`` points of each row (the last axis): slopes,
    SSEs, total sums of squares, and whether all kept ``x`` are equal.

    Entries that are not kept may hold anything (infinities, NaN): they never enter a sum.
    """
    count = xp.sum(xp.astype(kept, x.dtype), axis=-1, keepdims=True)
    count = xp.clip(count, min=1.0)
    x = xp.where(kept, x, 0.0)
    constant = xp.max(xp.where(kept, x, -math.inf), axis=-1) == xp.min(
        xp.where(kept, x, math.inf), axis=-1
    )
    xc = xp.where(kept & ~constant[..., None], x - xp.sum(x, axis=-1, keepdims=True) / count, 0.0)
    sxx = xp.clip(xp.sum(xc * xc, axis=-1), min=TINY)
    slopes, sses, ssts = [], [], []
    for y in ys:
        y = xp.where(kept, y, 0.0)
        yc = xp.where(kept, y - xp.sum(y, axis=-1, keepdims=True) / count, 0.0)
        slope = xp.sum(xc * yc, axis=-1) / sxx
        residual = yc - slope[..., None] * xc
        slopes.append(slope)
        sses.append(xp.clip(xp.sum(residual * residual, axis=-1), min=TINY))
        ssts.append(xp.sum(yc * yc, axis=-1))
    return slopes, sses, ssts, constant


def tail_fit_rows(
    top: Array, k_rows: Array, config: WEINCEConfig, xp: Namespace
) -> tuple[Array, Array]:
    """``tail_fit`` with a tail size per row.

    Row ``a`` fits its ``k_a`` largest negatives (``top[a, :k_a]``, descending; the rest of the
    row is ignored) with ``F_r = r / (k_a + 1)`` and burn-in ``b_a = max(1, k_a // 20)``. A row
    with fewer than two kept points gets ``dAIC = 0``, one without negatives also ``rho = NaN``
    (as the reference vectors have it).

    Args:
        top: ``(R, K)``, each row's largest negatives, descending.
        k_rows: ``(R,)`` integers ``<= K``.
        config: ``eps``.
        xp: the namespace.

    Returns:
        ``(rho, d_aic)``, each ``(R,)``.
    """
    eps = config.eps
    width = top.shape[-1]
    position = xp.arange(1, width + 1, device=device(top))[None, :]
    first = xp.clip(k_rows // 20, min=1)[:, None]
    kept = (position > first) & (position <= k_rows[:, None])
    n = xp.astype(k_rows[:, None] - first, top.dtype)[:, 0]
    has_tail = k_rows > 0
    rho = xp.where(has_tail, xp.clip(1.0 - top[:, 0], min=eps), math.nan)
    x = _log_shortfall(xp.where(kept, top, 0.0), eps, xp)
    levels = xp.astype(position, top.dtype) / xp.astype(k_rows[:, None] + 1, top.dtype)
    log_levels = xp.log(xp.where(kept, xp.clip(levels, min=eps), 0.5))
    _, (sse_w, sse_g), _, constant = _masked_fits(x, [log_levels, xp.log(-log_levels)], kept, xp)
    # The wrong-sign penalties: exactly where all kept shortfalls are equal (see tail_fit).
    sse_w = xp.where(constant, sse_w + WRONG_SIGN_PENALTY, sse_w)
    sse_g = xp.where(constant, sse_g + WRONG_SIGN_PENALTY, sse_g)
    safe_n = xp.clip(n, min=1.0)
    d_aic = safe_n * (xp.log(sse_g / safe_n) - xp.log(sse_w / safe_n))
    d_aic = xp.where(n >= 2, d_aic, 0.0)
    return rho, d_aic


def gate_statistics_rows(
    top: Array,
    k_rows: Array,
    config: WEINCEConfig,
    xp: Namespace,
    gather: Callable[[Array], Array] = lambda rho: rho,
) -> dict[str, Array]:
    """``gate_statistics`` with a tail size per row (``tail_fit_rows``).

    ``rho0`` is taken over the anchors of every rank that have a negative (``R'`` of them):
    ``rho_sorted[round(q (R' - 1))]``, or the lower median where no anchor has two kept points.
    A row without negatives has ``lambda = 0``.

    Args:
        top: ``(R, K)``, as in ``tail_fit_rows``.
        k_rows: ``(R,)`` tail sizes.
        config: the loss's configuration.
        xp: the namespace.
        gather: joins every rank's rows; one rank: the identity.

    Returns:
        ``rho``, ``d_aic``, ``lambda`` per row and ``rho0``, by name.
    """
    rho, d_aic = tail_fit_rows(top, k_rows, config, xp)
    fits = xp.astype(k_rows - xp.clip(k_rows // 20, min=1) >= 2, rho.dtype)
    has_tail = xp.astype(k_rows > 0, rho.dtype)
    every = gather(xp.stack([rho, has_tail, fits], axis=1))  # one collective for the three
    every_rho, every_has, every_fits = every[:, 0], every[:, 1] > 0, every[:, 2] > 0
    rows = every.shape[0]
    count = xp.sum(xp.astype(every_has, xp.int32))
    quantile = _table(
        count, [round(config.quantile * (c - 1)) if c else 0 for c in range(rows + 1)]
    )
    median = _table(count, [(c - 1) // 2 if c else 0 for c in range(rows + 1)])
    index = xp.where(xp.any(every_fits), quantile, median)
    ordered = xp.sort(xp.where(every_has, every_rho, math.inf))
    rho0 = xp.take(ordered, xp.reshape(index, (1,)))[0]
    rho0 = xp.where(count > 0, rho0, math.nan)
    lam = xp.where(k_rows > 0, gate(rho, d_aic, rho0, config, xp), 0.0)
    return {"rho": rho, "d_aic": d_aic, "rho0": rho0, "lambda": lam}


def update_beta_pool(
    top_global: Array,
    pool_size: Array,
    beta_t: Array,
    config: WEINCEConfig,
    xp: Namespace,
    *,
    finite: Array | None = None,
) -> dict[str, Array]:
    """``update_beta`` where the pool's size ``|V|`` is an array: per-row numbers of negatives.

    The fit keeps the first ``k_g = min(int(max(beta_min_tail, beta_tail_fraction |V|)), |V|)``,
    computed in ``top_global``'s dtype (as Python does in float64).

    Args:
        top_global: 1-D, the largest ``beta_tail_size`` of the largest pool the shapes allow,
            descending (``-inf`` where the pool is smaller).
        pool_size: 0-d integer, ``|V|``.
        beta_t: the 0-d state before this step.
        config: as in ``update_beta``.
        xp: the namespace.
        finite: as in ``update_beta``.

    Returns:
        As ``update_beta``.
    """
    width = top_global.shape[0]
    size = xp.astype(pool_size, top_global.dtype)
    k_g = xp.floor(xp.clip(config.beta_tail_fraction * size, min=float(config.beta_min_tail)))
    k_g = xp.minimum(xp.astype(k_g, pool_size.dtype), pool_size)
    first = xp.clip(k_g // 20, min=1)
    position = xp.arange(1, width + 1, device=device(top_global))
    kept = (position > first) & (position <= k_g)
    x = _log_shortfall(xp.where(kept, top_global, 0.0), config.eps, xp)
    levels = xp.astype(position, top_global.dtype) / xp.astype(k_g + 1, top_global.dtype)
    y = xp.log(xp.where(kept, levels, 0.5))
    (slope,), (sse,), (sst,), _ = _masked_fits(x, [y], kept, xp)
    fits = (k_g >= MIN_TAIL_FLOOR) & (k_g - first >= 2)
    beta_hat = xp.where(fits, xp.clip(slope, min=0.0), math.nan)
    r2 = xp.where(fits, xp.clip(1.0 - sse / xp.clip(sst, min=TINY), 0.0, 1.0), math.nan)
    updated = fits & (r2 >= config.beta_min_r2) & (beta_hat > 0)
    if finite is not None:
        updated = updated & finite
    low, high = config.beta_clip
    m = config.beta_momentum
    moved = m * beta_t + (1.0 - m) * xp.clip(xp.where(fits, beta_hat, 1.0), low, high)
    return {
        "beta_t": xp.where(updated, moved, beta_t),
        "beta_hat": beta_hat,
        "beta_r2": r2,
        "beta_updated": updated,
    }
