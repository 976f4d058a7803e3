"""Extreme-value evidence about embeddings: is the negatives' upper tail bounded (Weibull domain)?

WEINCE rests on one empirical claim: the hard negatives' cosine similarities have a bounded
upper tail, with its endpoint at the ceiling 1, not a Gumbel-like (exponential) one. ``diagnose``
tests it on a user's embeddings and reports what WEINCE computes on the same batches:

- peaks over a threshold: the negative similarities (each pair once) above a quantile of them,
  fitted by a generalized Pareto distribution (``scipy.stats.genpareto``; a profile-likelihood
  grid where the optimiser fails), with a bootstrap interval of its shape ``xi`` over anchors or
  batches (pairs sharing an anchor are not independent, so pairs are never resampled);
- a likelihood-ratio test of ``xi = 0`` (an exponential tail, refitted, against the GPD);
- ``xi`` against the threshold and the mean-excess function;
- WEINCE's own statistics (``rho``, ``dAIC``, ``lambda``, ``beta_hat`` and its ``R2``), computed by
  the core's loss code on the same batches; ``xi ≈ -1 / beta_hat`` when both see the same tail.

The numbers need SciPy (``pip install 'weince[diagnose]'``); the core does not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

import weince_core as wc
from weince.cli.output import json_ready, track
from weince_core import WEINCEConfig
from weince_core.forms import NORM_FLOOR
from weince_core.ops import canonical_columns, first_copies, row_norms, similarity

FORMS = ("two_view", "single")
# xi against the threshold: these quantiles of the negative similarities.
THRESHOLD_QUANTILES = (0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
# The mean-excess function: at these quantiles.
MEAN_EXCESS_QUANTILES = tuple(float(q) for q in np.round(np.linspace(0.90, 0.999, 34), 4))
MIN_EXCEEDANCES = 30  # fewer points above a threshold make no GPD fit
MIN_BOOTSTRAP = 10  # fewer resamples make no percentile interval
LEVEL = 0.95  # of every interval
SIGNIFICANCE = 0.05  # of the test of xi = 0
ENDPOINT_TOLERANCE = 0.1  # |endpoint - 1| up to this is "near 1"
MIN_BATCHES_TO_RESAMPLE = 20  # from this many batches on, the bootstrap resamples batches
DEFAULT_BATCH_SIZE = 1024
# The fallback's grid: xi over (-1, 1] (below -1 the GPD likelihood is unbounded).
PROFILE_GRID = np.linspace(-0.995, 1.0, 200)

MEANINGS = {
    "bounded": "the negatives' tail is bounded at the cosine ceiling (Weibull domain): the case "
    "WEINCE's shortfall coordinate -log(1 - s) is made for",
    "gumbel-like": "no evidence against an exponential (Gumbel-domain) tail at this threshold: "
    "InfoNCE's softmax link already matches it, so expect little from WEINCE here",
    "check-normalization": "the tail looks bounded, but its endpoint is far from 1, the ceiling "
    "WEINCE's shortfall coordinate measures from: check that these are the vectors the loss "
    "normalises; if they are, the negatives stay far from the ceiling (as random vectors in high "
    "dimension do), where the shortfall coordinate and the softmax barely differ",
    "inconclusive": "the test rejects an exponential tail, but the interval of xi does not lie "
    "below 0: look at xi against the threshold, or give more rows",
    "fit-failed": "the GPD fit failed at this threshold (too few distinct similarities above "
    "it, or no finite likelihood from the optimiser or the profile-likelihood grid): no verdict",
}


class ArgumentError(ValueError):
    """A bad argument of ``diagnose``, found before any work; ``argument`` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


# -- fits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPDFit:
    """A generalized Pareto fit of the excesses over one threshold.

    Attributes:
        quantile: the threshold's quantile among the negative similarities.
        threshold: ``u``, that quantile's value.
        n_exceedances: how many similarities exceed ``u``.
        xi: the shape (``< 0``: bounded tail, ``0``: exponential, ``> 0``: heavy).
        sigma: the scale.
        log_likelihood: the GPD's log-likelihood of the excesses.
        method: ``"mle"`` (scipy's optimiser), ``"profile-grid"`` (the fallback) or ``"failed"``.
    """

    quantile: float
    threshold: float
    n_exceedances: int
    xi: float
    sigma: float
    log_likelihood: float
    method: str

    @property
    def ok(self) -> bool:
        return self.method != "failed"

    @property
    def endpoint(self) -> float | None:
        """The implied upper endpoint ``u - sigma / xi`` of a bounded tail; ``None`` otherwise."""
        if not self.ok or self.xi >= 0:
            return None
        return self.threshold - self.sigma / self.xi


def _log_likelihood(excess: np.ndarray, xi: float, sigma: float) -> float:
    return float(np.sum(stats.genpareto.logpdf(excess, xi, loc=0.0, scale=sigma)))


def fit_gpd(
    excess: np.ndarray, start: tuple[float, float] | None = None
) -> tuple[float, float, float, str]:
    """``(xi, sigma, log_likelihood, method)`` of the GPD (location 0) fitted to ``excess``.

    scipy's maximum-likelihood fit, from ``start`` (``(xi, sigma)``) when given, then, where it
    stopped below the exponential's likelihood (a model the GPD contains, at ``xi = 0``), once
    more from the exponential. Where it raises, or gives a non-finite likelihood or a shape
    below -1 (where the likelihood is unbounded), the profile likelihood on a grid of ``xi``
    takes over (a tail whose shape is below -1, as for cosines in 2 or 3 dimensions, then shows
    as the grid's edge, -0.995). ``method`` is ``"failed"`` where neither gives a finite
    likelihood.

    Args:
        excess: the excesses over the threshold (positive).
        start: a first guess ``(xi, sigma)``, or ``None``.

    Returns:
        ``(xi, sigma, log_likelihood, method)``.
    """
    floor = _exponential_log_likelihood(excess)
    starts = [start, (0.0, float(np.mean(excess)))]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for guess in starts:
            found = _scipy_fit(excess, guess)
            if found is not None and found[2] >= floor - 1e-9 * abs(floor):
                return (*found, "mle")
        return _profile_fit(excess)


def _scipy_fit(
    excess: np.ndarray, start: tuple[float, float] | None
) -> tuple[float, float, float] | None:
    """``genpareto.fit``'s ``(xi, sigma, log_likelihood)``, or ``None`` where it failed."""
    try:
        if start is None:
            xi, _, sigma = stats.genpareto.fit(excess, floc=0.0)
        else:
            xi, _, sigma = stats.genpareto.fit(excess, start[0], floc=0.0, scale=start[1])
    except (RuntimeError, ValueError, FloatingPointError):
        return None
    xi, sigma = float(xi), float(sigma)
    ll = _log_likelihood(excess, xi, sigma) if sigma > 0 else math.nan
    if not (math.isfinite(ll) and xi > -1):
        return None
    return xi, sigma, ll


def _profile_fit(excess: np.ndarray) -> tuple[float, float, float, str]:
    """The fallback: for each ``xi`` of ``PROFILE_GRID``, the best ``sigma`` (a bounded scalar
    search in ``log sigma``); the grid point of the largest likelihood."""
    largest = float(np.max(excess))
    mean = float(np.mean(excess))
    if not (largest > 0 and math.isfinite(largest)):
        return math.nan, math.nan, math.nan, "failed"
    best = (-math.inf, math.nan, math.nan)
    for xi in PROFILE_GRID:
        # The support [0, -sigma / xi] must hold every excess where xi < 0.
        low = max(-xi * largest * (1 + 1e-9), 1e-6 * mean) if xi < 0 else 1e-6 * mean
        high = max(low, mean) * 1e3

        def negative(log_sigma: float, xi: float = float(xi)) -> float:
            ll = _log_likelihood(excess, xi, math.exp(log_sigma))
            return -ll if math.isfinite(ll) else math.inf

        found = optimize.minimize_scalar(
            negative, bounds=(math.log(low), math.log(high)), method="bounded"
        )
        if math.isfinite(found.fun) and -found.fun > best[0]:
            best = (-float(found.fun), float(xi), math.exp(float(found.x)))
    ll, xi, sigma = best
    if not math.isfinite(ll):
        return math.nan, math.nan, math.nan, "failed"
    return xi, sigma, ll, "profile-grid"


def _exponential_log_likelihood(excess: np.ndarray) -> float:
    """The exponential's log-likelihood, refitted (its MLE scale is the mean excess)."""
    _, scale = stats.expon.fit(excess, floc=0.0)
    return float(np.sum(stats.expon.logpdf(excess, loc=0.0, scale=scale)))


def fit_threshold(
    values: np.ndarray, quantile: float, start: tuple[float, float] | None = None
) -> tuple[GPDFit, np.ndarray]:
    """The GPD fit above the ``quantile`` of ``values`` (1-D), and the excesses it fitted
    (``start``: as ``fit_gpd``'s).

    Args:
        values: the similarities, 1-D.
        quantile: the threshold's quantile, in (0, 1).
        start: as ``fit_gpd``'s.

    Returns:
        The fit and the excesses.
    """
    threshold = float(np.quantile(values, quantile))
    excess = values[values > threshold] - threshold
    if excess.size < MIN_EXCEEDANCES:
        return GPDFit(
            quantile, threshold, excess.size, math.nan, math.nan, math.nan, "failed"
        ), excess
    xi, sigma, ll, method = fit_gpd(excess, start)
    return GPDFit(quantile, threshold, excess.size, xi, sigma, ll, method), excess


# -- the tail evidence ------------------------------------------------------------------------


@dataclass(frozen=True)
class TailEvidence:
    """Everything ``diagnose`` says about one sample of negative similarities (no WEINCE)."""

    fit: GPDFit
    excess: np.ndarray = field(repr=False)  # the fitted excesses, for the QQ plot
    xi_ci: tuple[float, float]
    bootstrap_unit: str
    bootstrap_resamples: int
    bootstrap_succeeded: int
    exponential_scale: float
    lr_statistic: float
    p_value_exponential: float
    xi_by_threshold: list[dict[str, Any]]
    mean_excess: list[dict[str, Any]]
    verdict: str


def tail_evidence(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    threshold_quantile: float = 0.99,
    bootstrap: int = 200,
    seed: int = 0,
    unit: str = "values",
) -> TailEvidence:
    """The peaks-over-threshold evidence of a 1-D sample of negative similarities.

    Args:
        values: the similarities, each pair once.
        groups: for each value, the integer id (0 .. G-1) of the unit the bootstrap resamples
            (its anchor, or its batch); ``None``: each value its own unit.
        threshold_quantile: the threshold's quantile, in (0, 1).
        bootstrap: resamples of the units for the interval of ``xi`` (at least 10).
        seed: of the resampling.
        unit: what a group is, for the report (``"anchors"``, ``"batches"``).

    Returns:
        The fit, its interval, the test of ``xi = 0``, ``xi`` against the threshold, the mean
        excess and the verdict (see ``verdict``).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    _check_quantile(threshold_quantile)
    _check_bootstrap(bootstrap)
    _check_exceedances(values.size, threshold_quantile, "values")
    if groups is None:
        groups = np.arange(values.size)
    fit, excess = fit_threshold(values, threshold_quantile)
    scale, statistic, p_value = _exponential_test(excess, fit)
    low, high, succeeded = _bootstrap_interval(values, np.asarray(groups), fit, bootstrap, seed)
    return TailEvidence(
        fit=fit,
        excess=excess,
        xi_ci=(low, high),
        bootstrap_unit=unit,
        bootstrap_resamples=bootstrap,
        bootstrap_succeeded=succeeded,
        exponential_scale=scale,
        lr_statistic=statistic,
        p_value_exponential=p_value,
        xi_by_threshold=_xi_by_threshold(values, fit),
        mean_excess=_mean_excess(values),
        verdict=verdict(fit, (low, high), p_value),
    )


def _exponential_test(excess: np.ndarray, fit: GPDFit) -> tuple[float, float, float]:
    """The refitted exponential's scale, and the likelihood-ratio statistic and p-value of
    ``xi = 0`` against the GPD (chi-squared with 1 degree of freedom)."""
    if not fit.ok:
        return math.nan, math.nan, math.nan
    _, scale = stats.expon.fit(excess, floc=0.0)
    statistic = max(2.0 * (fit.log_likelihood - _exponential_log_likelihood(excess)), 0.0)
    return float(scale), statistic, float(stats.chi2.sf(statistic, df=1))


def _bootstrap_interval(
    values: np.ndarray, groups: np.ndarray, fit: GPDFit, resamples: int, seed: int
) -> tuple[float, float, int]:
    """The percentile interval of ``xi`` over resamples of the groups (with replacement), the
    threshold held at the sample's; and how many resamples gave a fit."""
    if not fit.ok:
        return math.nan, math.nan, 0
    above = values > fit.threshold
    excess, owner = values[above] - fit.threshold, groups[above]
    num_groups = int(groups.max()) + 1
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(resamples):
        copies = np.bincount(rng.integers(0, num_groups, num_groups), minlength=num_groups)
        sample = np.repeat(excess, copies[owner])
        if sample.size < MIN_EXCEEDANCES:
            continue
        xi, _, _, method = fit_gpd(sample, start=(fit.xi, fit.sigma))
        if method != "failed":
            shapes.append(xi)
    if len(shapes) < max(MIN_BOOTSTRAP, resamples // 2):
        return math.nan, math.nan, len(shapes)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(shapes, [tail, 100 - tail])
    return float(low), float(high), len(shapes)


def _xi_by_threshold(values: np.ndarray, main: GPDFit) -> list[dict[str, Any]]:
    """``xi`` at each of ``THRESHOLD_QUANTILES``, with a pointwise band of the normal
    approximation, ``xi ± z (1 + xi) / sqrt(n)`` (a guide: it treats pairs as independent)."""
    z = float(stats.norm.ppf(0.5 + LEVEL / 2))
    points = []
    start = (main.xi, main.sigma) if main.ok else None
    for quantile in THRESHOLD_QUANTILES:
        fit, _ = fit_threshold(values, quantile, start)
        half = z * (1 + fit.xi) / math.sqrt(fit.n_exceedances) if fit.ok else math.nan
        points.append(
            {
                "quantile": quantile,
                "threshold": fit.threshold,
                "n_exceedances": fit.n_exceedances,
                "xi": fit.xi if fit.ok else None,
                "xi_low": fit.xi - half if fit.ok else None,
                "xi_high": fit.xi + half if fit.ok else None,
            }
        )
    return points


def _mean_excess(values: np.ndarray) -> list[dict[str, Any]]:
    """``e(u) = mean(s - u | s > u)`` at the ``MEAN_EXCESS_QUANTILES``: a line of slope
    ``xi / (1 - xi)`` where the GPD holds (falling for a bounded tail, flat for an exponential)."""
    ordered = np.sort(values)
    tail_sums = np.cumsum(ordered[::-1])[::-1]  # tail_sums[i] = sum(ordered[i:])
    points = []
    for quantile in MEAN_EXCESS_QUANTILES:
        threshold = float(np.quantile(values, quantile))
        first = int(np.searchsorted(ordered, threshold, side="right"))
        count = ordered.size - first
        mean = float(tail_sums[first] / count - threshold) if count else math.nan
        points.append(
            {
                "quantile": quantile,
                "threshold": threshold,
                "mean_excess": mean,
                "n_exceedances": count,
            }
        )
    return points


def verdict(fit: GPDFit, xi_ci: tuple[float, float], p_value: float) -> str:
    """``"bounded"``: ``xi < 0``, its interval below 0 and the endpoint within
    ``ENDPOINT_TOLERANCE`` of 1; ``"check-normalization"``: the same but the endpoint farther;
    ``"gumbel-like"``: the test does not reject ``xi = 0`` (at ``SIGNIFICANCE``);
    ``"inconclusive"``: it rejects, yet the interval does not lie below 0; ``"fit-failed"``.

    Args:
        fit: the GPD fit at the threshold.
        xi_ci: the bootstrap interval of ``xi``.
        p_value: of the test of ``xi = 0``.

    Returns:
        The verdict's name (a key of ``MEANINGS``).
    """
    if not fit.ok:
        return "fit-failed"
    endpoint = fit.endpoint
    if endpoint is not None and xi_ci[1] < 0:  # a NaN interval is never below 0
        return "bounded" if abs(endpoint - 1.0) <= ENDPOINT_TOLERANCE else "check-normalization"
    if not p_value < SIGNIFICANCE:
        return "gumbel-like"
    return "inconclusive"


# -- WEINCE on the same batches ---------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One batch as WEINCE sees it: the rows of the input it holds, in the loss's row order."""

    index: int
    views: tuple[np.ndarray, ...]  # (z,) for the single form, (z_i, z_j) for two views
    rows: np.ndarray  # each anchor's row in its view of the input
    view_names: tuple[str, ...]


@dataclass(frozen=True)
class AnchorTable:
    """The per-anchor statistics of every batch, in the loss's anchor order."""

    batch: np.ndarray
    view: np.ndarray  # "z", "z_i" or "z_j"
    row: np.ndarray
    rho: np.ndarray
    d_aic: np.ndarray
    lam: np.ndarray
    rho0: np.ndarray  # of the anchor's batch
    hardest: np.ndarray  # the largest negative similarity of the anchor
    exceedances: np.ndarray  # of the anchor's pairs (each pair once) above the threshold

    def rows(self) -> Iterable[dict[str, Any]]:
        """One dict per anchor: the CSV's rows.

        Yields:
            The rows, in the loss's anchor order.
        """
        for i in range(self.batch.size):
            yield {
                "batch": int(self.batch[i]),
                "view": str(self.view[i]),
                "row": int(self.row[i]),
                "rho": float(self.rho[i]),
                "d_aic": float(self.d_aic[i]),
                "lambda": float(self.lam[i]),
                "rho0": float(self.rho0[i]),
                "hardest_negative": float(self.hardest[i]),
                "exceedances": int(self.exceedances[i]),
            }


def _unit_rows(z: np.ndarray) -> np.ndarray:
    """The rows as the loss normalises them: ``z / max(||z||, 1e-8)``."""
    return z / np.maximum(row_norms(z, np), NORM_FLOOR)[:, None]


def _batch_statistics(batch: Batch, config: WEINCEConfig) -> tuple[dict[str, Any], np.ndarray]:
    """The core's statistics of one batch (its loss code, on float64 NumPy), and the batch's
    similarity matrix in the loss's row order (its copies canonicalised as the loss does)."""
    if len(batch.views) == 2:
        z_i, z_j = batch.views
        state = wc.init_state(config, like=z_i)
        _, _, batch_stats, _ = wc.nt_xent_forward(z_i, z_j, state, config)
        u = _unit_rows(np.concatenate([z_i, z_j]))
    else:
        # The single form: every other row is a negative. The general rows code runs with each
        # row's own column as its "positive" (so that it is no negative): the statistics are
        # those of rows whose negatives are all j != i; the loss value is of no interest.
        u = _unit_rows(batch.views[0])
    sim = canonical_columns(similarity(u, u, np), *first_copies(u, np), np)
    if len(batch.views) == 1:
        rows = u.shape[0]
        state = wc.init_state(config, like=u)
        _, _, batch_stats, _ = wc.rows_forward(
            sim, np.arange(rows), None, state, config, num_negatives=rows - 1
        )
    return batch_stats, sim


def _negative_pairs(batch: Batch, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each negative pair once (``i < j``; two views: no positive pair): similarities and the
    anchor ``i`` they are counted for."""
    first, second = np.triu_indices(sim.shape[0], 1)
    if len(batch.views) == 2:
        n = sim.shape[0] // 2
        keep = second != first + n
        first, second = first[keep], second[keep]
    return sim[first, second], first


# -- the diagnosis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """What ``diagnose`` finds; ``as_json()`` holds every number but the per-anchor table.

    The tail: ``threshold`` (the ``threshold_quantile`` of the negative similarities, each pair
    once), ``n_exceedances``, the GPD's ``xi`` with its bootstrap interval ``xi_ci``, ``sigma``,
    the implied ``endpoint`` (``None`` unless ``xi < 0``), the test of ``xi = 0``
    (``p_value_exponential``), ``xi_by_threshold`` and ``mean_excess``. WEINCE: the mean gate
    ``lambda_mean``, ``frac_lambda_above_half`` (the anchors the gate sends mostly to the
    shortfall coordinate), ``beta_hat`` and ``beta_r2`` (means over batches), ``xi_from_beta``
    (``-1 / beta_hat``). ``verdict`` and its ``meaning``.
    """

    form: str
    rows: int
    dim: int
    batches: int
    config: str
    threshold_quantile: float
    threshold: float
    n_pairs: int
    n_exceedances: int
    fit_method: str
    xi: float
    xi_ci: tuple[float, float]
    sigma: float
    endpoint: float | None
    bootstrap: dict[str, Any]
    exponential_scale: float
    lr_statistic: float
    p_value_exponential: float
    xi_by_threshold: list[dict[str, Any]]
    mean_excess: list[dict[str, Any]]
    lambda_mean: float
    frac_lambda_above_half: float
    rho_median: float
    d_aic_median: float
    rho0: list[float]
    beta_hat: float
    beta_r2: float
    beta_hat_by_batch: list[float]
    xi_from_beta: float | None
    verdict: str
    meaning: str
    anchors: AnchorTable = field(repr=False)
    excess: np.ndarray = field(repr=False)

    @property
    def fit_ok(self) -> bool:
        return self.verdict != "fit-failed"

    def as_json(self) -> dict[str, Any]:
        """Every number but the per-anchor table, JSON-ready (NaN as ``None``).

        Returns:
            A dict of plain numbers, strings and lists.
        """
        skip = {"anchors", "excess"}
        return {
            name: json_ready(getattr(self, name))
            for name in self.__dataclass_fields__
            if name not in skip
        }


def diagnose(
    embeddings: Any,
    *,
    form: str = "two_view",
    threshold_quantile: float = 0.99,
    batch_size: int | None = None,
    config: WEINCEConfig | str = "paper",
    bootstrap: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> Diagnosis:
    """Is the upper tail of these embeddings' negative similarities bounded, and what would
    WEINCE compute on them?

    Args:
        embeddings: ``form="single"``: one ``(R, d)`` array whose negatives are all pairs
            ``i != j``. ``form="two_view"``: a pair ``(z_i, z_j)`` of ``(N, d)`` arrays (or
            ``(T, N, d)``: ``T`` steps), or one ``(2, N, d)`` array; the negatives are as the
            loss's (every pair but an anchor's positive).
        form: ``"two_view"`` (the default) or ``"single"``.
        threshold_quantile: the peaks-over-threshold threshold, a quantile in (0, 1) of the
            negative similarities (each pair once).
        batch_size: rows (single) or pairs (two views) per batch, as in training: statistics
            and negatives are those within a batch. Default: 1024; an input is split into
            batches of at most this size, as even as can be.
        config: the WEINCE configuration or a preset name (``"paper"``, ``"blend"``) whose gate
            is computed; ``beta_hat`` is fitted whatever its ``estimate_beta``.
        bootstrap: resamples for the interval of ``xi`` (at least 10), of anchors, or of
            batches when there are at least 20.
        seed: of the bootstrap.
        progress: a progress bar over the batches on stderr, when it is a terminal.

    Returns:
        A ``Diagnosis``: the numbers of the JSON report (``as_json()``) and the per-anchor table.

    Raises:
        ArgumentError: (a ``ValueError``) naming the argument, before any work: a wrong shape,
            a NaN or infinity, too few rows for a tail, a quantile outside (0, 1), a bootstrap
            count below 10, an unknown form or preset.
    """
    config, preset = _check_config(config)
    if form not in FORMS:
        raise ArgumentError("form", f"must be one of {FORMS}; got {form!r}")
    _check_quantile(threshold_quantile)
    _check_bootstrap(bootstrap)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2
    ):
        raise ArgumentError("batch_size", f"must be an integer >= 2; got {batch_size!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ArgumentError("seed", f"must be an integer; got {seed!r}")
    batches = _batches(embeddings, form, batch_size or DEFAULT_BATCH_SIZE)
    pairs = sum(_pair_count(b) for b in batches)
    _check_exceedances(pairs, threshold_quantile, "embeddings")

    values, owners, stats_by_batch, tables = [], [], [], []
    anchor_offset = 0
    for batch in track(batches, "diagnose", enabled=progress):
        batch_stats, sim = _batch_statistics(batch, config)
        pair_values, pair_anchor = _negative_pairs(batch, sim)
        values.append(pair_values)
        owners.append((pair_anchor + anchor_offset, np.full(pair_values.size, batch.index)))
        stats_by_batch.append(batch_stats)
        # Not sim itself: one batch's (rows x rows) matrix is held at a time.
        tables.append(
            (batch, batch_stats, _hardest_negatives(batch, sim), pair_values, pair_anchor)
        )
        anchor_offset += sim.shape[0]
    values_all = np.concatenate(values)
    by_batch = len(batches) >= MIN_BATCHES_TO_RESAMPLE
    groups = np.concatenate([owner[1] if by_batch else owner[0] for owner in owners])
    evidence = tail_evidence(
        values_all,
        groups,
        threshold_quantile=threshold_quantile,
        bootstrap=bootstrap,
        seed=seed,
        unit="batches" if by_batch else "anchors",
    )
    anchors = _anchor_table(tables, evidence.fit.threshold)
    beta_hats = [float(s["beta_hat"]) for s in stats_by_batch]
    beta_hat = _nanmean(beta_hats)
    fit = evidence.fit
    first = batches[0].views[0]
    return Diagnosis(
        form=form,
        rows=int(sum(b.rows.size for b in batches)),
        dim=int(first.shape[1]),
        batches=len(batches),
        config=preset,
        threshold_quantile=threshold_quantile,
        threshold=fit.threshold,
        n_pairs=int(values_all.size),
        n_exceedances=fit.n_exceedances,
        fit_method=fit.method,
        xi=fit.xi,
        xi_ci=evidence.xi_ci,
        sigma=fit.sigma,
        endpoint=fit.endpoint,
        bootstrap={
            "unit": evidence.bootstrap_unit,
            "resamples": evidence.bootstrap_resamples,
            "succeeded": evidence.bootstrap_succeeded,
            "level": LEVEL,
            "seed": seed,
        },
        exponential_scale=evidence.exponential_scale,
        lr_statistic=evidence.lr_statistic,
        p_value_exponential=evidence.p_value_exponential,
        xi_by_threshold=evidence.xi_by_threshold,
        mean_excess=evidence.mean_excess,
        lambda_mean=float(np.mean(anchors.lam)),
        frac_lambda_above_half=float(np.mean(anchors.lam > 0.5)),
        rho_median=float(np.median(anchors.rho)),
        d_aic_median=float(np.median(anchors.d_aic)),
        rho0=[float(s["rho0"]) for s in stats_by_batch],
        beta_hat=beta_hat,
        beta_r2=_nanmean([float(s["beta_r2"]) for s in stats_by_batch]),
        beta_hat_by_batch=beta_hats,
        xi_from_beta=-1.0 / beta_hat if beta_hat > 0 else None,
        verdict=evidence.verdict,
        meaning=MEANINGS[evidence.verdict],
        anchors=anchors,
        excess=evidence.excess,
    )


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _hardest_negatives(batch: Batch, sim: np.ndarray) -> np.ndarray:
    """Each anchor's largest negative similarity."""
    count = sim.shape[0]
    masked = sim.copy()
    np.fill_diagonal(masked, -np.inf)
    if len(batch.views) == 2:
        masked[np.arange(count), (np.arange(count) + count // 2) % count] = -np.inf
    return masked.max(axis=1)


def _anchor_table(tables: list[tuple[Any, ...]], threshold: float) -> AnchorTable:
    names = ("batch", "view", "row", "rho", "d_aic", "lam", "rho0", "hardest", "exceedances")
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch, batch_stats, hardest, pair_values, pair_anchor in tables:
        count = hardest.size
        columns["batch"].append(np.full(count, batch.index))
        columns["view"].append(np.repeat(np.array(batch.view_names), count // len(batch.views)))
        columns["row"].append(batch.rows)
        columns["rho"].append(np.asarray(batch_stats["rho"], dtype=np.float64))
        columns["d_aic"].append(np.asarray(batch_stats["d_aic"], dtype=np.float64))
        columns["lam"].append(np.asarray(batch_stats["lambda"], dtype=np.float64))
        columns["rho0"].append(np.full(count, float(batch_stats["rho0"])))
        columns["hardest"].append(hardest)
        above = pair_anchor[pair_values > threshold]
        columns["exceedances"].append(np.bincount(above, minlength=count))
    return AnchorTable(**{name: np.concatenate(parts) for name, parts in columns.items()})


# -- arguments --------------------------------------------------------------------------------


def _check_config(config: WEINCEConfig | str) -> tuple[WEINCEConfig, str]:
    if isinstance(config, str):
        try:
            name, config = config, WEINCEConfig.preset(config)
        except ValueError as error:
            raise ArgumentError("config", str(error)) from None
    elif isinstance(config, WEINCEConfig):
        name = "custom"
    else:
        raise ArgumentError("config", f"must be a WEINCEConfig or a preset name; got {config!r}")
    if not config.uses_tail_statistics:
        raise ArgumentError(
            "config",
            f"{name!r} has the gate off and computes no tail statistics; use paper or blend",
        )
    return config.replace(estimate_beta=True), name


def _check_quantile(quantile: Any) -> None:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ArgumentError("threshold_quantile", f"must be a number in (0, 1); got {quantile!r}")


def _check_bootstrap(count: Any) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < MIN_BOOTSTRAP:
        raise ArgumentError("bootstrap", f"must be an integer >= {MIN_BOOTSTRAP}; got {count!r}")


def _check_exceedances(pairs: int, quantile: float, argument: str) -> None:
    expected = math.floor(pairs * (1 - quantile))
    if expected < MIN_EXCEEDANCES:
        raise ArgumentError(
            argument,
            f"{pairs} negative pairs leave about {expected} above the {quantile:g} quantile; "
            f"a tail fit needs at least {MIN_EXCEEDANCES}: give more rows or a lower "
            "threshold quantile",
        )


def _as_real(array: Any, what: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array) or array.dtype == bool:
        raise ArgumentError("embeddings", f"{what} must hold real numbers; got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ArgumentError(
            "embeddings", f"{what} has a NaN or infinity at index {tuple(int(i) for i in bad)}"
        )
    return np.asarray(array, dtype=np.float64)


def _batches(embeddings: Any, form: str, batch_size: int) -> list[Batch]:
    """The input split into batches of at most ``batch_size`` rows (pairs), as even as can be;
    ``ArgumentError`` for a wrong shape or a non-finite entry."""
    if form == "single":
        z = _as_real(embeddings, "the (R, d) array")
        if z.ndim != 2 or z.shape[0] < 3 or z.shape[1] < 1:
            raise ArgumentError(
                "embeddings",
                f"form 'single' needs one (R, d) array with R >= 3; got shape {z.shape}",
            )
        parts = np.array_split(np.arange(z.shape[0]), math.ceil(z.shape[0] / batch_size))
        return [Batch(i, (z[rows],), rows, ("z",)) for i, rows in enumerate(parts)]
    if isinstance(embeddings, (tuple, list)) and len(embeddings) == 2:
        z_i, z_j = (_as_real(z, name) for z, name in zip(embeddings, ("z_i", "z_j"), strict=True))
    else:
        stacked = _as_real(embeddings, "the (2, N, d) array")
        if stacked.ndim != 3 or stacked.shape[0] != 2:
            raise ArgumentError(
                "embeddings",
                "form 'two_view' needs a pair (z_i, z_j) or a (2, N, d) array; got shape "
                f"{stacked.shape}",
            )
        z_i, z_j = stacked[0], stacked[1]
    if z_i.shape != z_j.shape or z_i.ndim not in (2, 3) or z_i.shape[-2] < 2 or z_i.shape[-1] < 1:
        raise ArgumentError(
            "embeddings",
            "z_i and z_j must have one shape, (N, d) or (T, N, d) with N >= 2; got "
            f"{z_i.shape} and {z_j.shape}",
        )
    steps = [(z_i, z_j)] if z_i.ndim == 2 else list(zip(z_i, z_j, strict=True))
    batches: list[Batch] = []
    for a, b in steps:
        for rows in np.array_split(np.arange(a.shape[0]), math.ceil(a.shape[0] / batch_size)):
            if rows.size < 2:
                raise ArgumentError("batch_size", f"leaves a batch of {rows.size} pair; need >= 2")
            batches.append(
                Batch(
                    len(batches), (a[rows], b[rows]), np.concatenate([rows, rows]), ("z_i", "z_j")
                )
            )
    return batches


def _pair_count(batch: Batch) -> int:
    rows = sum(view.shape[0] for view in batch.views)
    pairs = rows * (rows - 1) // 2
    return pairs - (rows // 2 if len(batch.views) == 2 else 0)


# -- the report -------------------------------------------------------------------------------


def format_report(diagnosis: Diagnosis) -> str:
    """The short text report that ``weince diagnose`` prints.

    Args:
        diagnosis: what ``diagnose`` returned.

    Returns:
        The report, a few lines.
    """
    d = diagnosis
    lines = [
        f"weince diagnose: {d.rows} anchors of dimension {d.dim} ({d.form}), {d.batches} "
        f"batch(es), {d.n_pairs} negative pairs (each once); WEINCE preset {d.config}",
        f"peaks over threshold: u = {d.threshold:.4f} (the {d.threshold_quantile:g} quantile), "
        f"{d.n_exceedances} exceedances",
    ]
    if not d.fit_ok:
        lines.append("GPD fit: FAILED at this threshold; no verdict")
    else:
        level = round(100 * d.bootstrap["level"])
        low, high = d.xi_ci
        ci = f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) else "unavailable"
        end = f"{d.endpoint:.4f}" if d.endpoint is not None else "none (xi >= 0)"
        lines += [
            f"GPD fit ({d.fit_method}): xi = {d.xi:.3f}, {level}% CI {ci} "
            f"(bootstrap: {d.bootstrap['succeeded']} of {d.bootstrap['resamples']} resamples of "
            f"{d.bootstrap['unit']}), sigma = {d.sigma:.4g}, endpoint {end}",
            f"exponential tail (xi = 0, refitted): LR = {d.lr_statistic:.2f}, "
            f"p = {d.p_value_exponential:.3g}",
        ]
    shapes = ", ".join(
        f"{p['quantile']:g}: {p['xi']:.2f}" if p["xi"] is not None else f"{p['quantile']:g}: -"
        for p in d.xi_by_threshold
    )
    lines.append(f"xi by threshold quantile: {shapes}")
    beta = f"{d.beta_hat:.3f} (R2 {d.beta_r2:.3f})" if math.isfinite(d.beta_hat) else "none"
    relation = (
        f"-1/beta_hat = {d.xi_from_beta:.3f}" if d.xi_from_beta is not None else "-1/beta_hat: none"
    )
    lines += [
        f"WEINCE: lambda mean {d.lambda_mean:.3f}, "
        f"{100 * d.frac_lambda_above_half:.1f}% of anchors with lambda > 0.5 (shortfall "
        f"coordinate), median rho {d.rho_median:.3g}, "
        f"median dAIC {d.d_aic_median:.2f}",
        f"WEINCE: beta_hat {beta}; {relation} (compare xi = {d.xi:.3f})",
    ]
    if d.fit_ok:
        lines.append(f"verdict: {d.verdict}: {d.meaning}")
    else:
        lines.append(f"fit failed: {d.meaning}")
    return "\n".join(lines)
