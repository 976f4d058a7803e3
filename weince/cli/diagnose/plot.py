"""The picture of ``weince diagnose --plot``: QQ plot, xi against threshold, mean excess, lambda."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats


def plot_diagnosis(path: Path, diagnosis: Any, title: str = "") -> None:
    """Write a 2 x 2 PNG of a ``weince.cli.diagnose.diagnosis.Diagnosis``.

    Args:
        path: the PNG to write.
        diagnosis: what ``weince.cli.diagnose.diagnosis.diagnose`` returned.
        title: a first line of the figure's title (the input's name, say).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    d = diagnosis
    figure = Figure(figsize=(12, 8.5), layout="constrained")
    verdict = f"verdict: {d.verdict}" if d.fit_ok else "the GPD fit failed: no verdict"
    figure.suptitle(
        f"{title}\n{d.rows} anchors, d = {d.dim}, {d.form}; {verdict}".strip(), fontsize=11
    )
    qq, by_threshold, mean_excess, lam = figure.subplots(2, 2).ravel()
    _qq(qq, d)
    _xi_by_threshold(by_threshold, d)
    _mean_excess(mean_excess, d)
    lam.hist(d.anchors.lam, bins=np.linspace(0, 1, 31), color="tab:red", alpha=0.8)
    lam.axvline(0.5, color="0.3", linestyle=":", linewidth=1)
    lam.set_xlabel("λ per anchor (0: softmax, 1: shortfall coordinate)")
    lam.set_ylabel("anchors")
    lam.set_title(
        f"WEINCE's gate: mean λ {d.lambda_mean:.3f}, "
        f"{100 * d.frac_lambda_above_half:.1f}% of anchors above 0.5"
    )
    lam.grid(alpha=0.3)
    figure.savefig(path, dpi=110)


def _qq(ax: Any, d: Any) -> None:
    """Empirical excesses against the fitted GPD's quantiles, and the refitted exponential's."""
    ax.set_title(f"QQ plot of the {d.n_exceedances} excesses over u = {d.threshold:.4f}")
    if not d.fit_ok:
        ax.text(0.5, 0.5, "GPD fit failed", ha="center", transform=ax.transAxes)
        return
    excess = np.sort(d.excess)
    levels = (np.arange(1, excess.size + 1) - 0.5) / excess.size
    gpd = stats.genpareto.ppf(levels, d.xi, loc=0.0, scale=d.sigma)
    exponential = stats.expon.ppf(levels, loc=0.0, scale=d.exponential_scale)
    ax.plot(gpd, excess, ".", markersize=3, color="tab:red", label=f"GPD, ξ = {d.xi:.3f}")
    ax.plot(
        exponential,
        excess,
        ".",
        markersize=3,
        color="tab:blue",
        alpha=0.6,
        label="exponential (ξ = 0, refitted)",
    )
    top = float(max(excess[-1], gpd[-1], exponential[-1]))
    ax.plot([0, top], [0, top], color="0.3", linewidth=1)
    ax.set_xlabel("model quantile of the excess")
    ax.set_ylabel("observed excess")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _xi_by_threshold(ax: Any, d: Any) -> None:
    points = [p for p in d.xi_by_threshold if p["xi"] is not None]
    ax.set_title("GPD shape ξ against the threshold")
    ax.axhline(0.0, color="0.3", linewidth=1)
    if d.xi_from_beta is not None:
        ax.axhline(
            d.xi_from_beta,
            color="tab:purple",
            linestyle="--",
            linewidth=1,
            label=f"-1/β̂ = {d.xi_from_beta:.3f}",
        )
    if points:
        q = np.array([p["quantile"] for p in points])
        ax.fill_between(
            q,
            [p["xi_low"] for p in points],
            [p["xi_high"] for p in points],
            color="tab:red",
            alpha=0.2,
            lw=0,
            label="95% normal-approximation band",
        )
        ax.plot(q, [p["xi"] for p in points], "o-", color="tab:red", label="ξ (MLE)")
    if d.fit_ok and np.all(np.isfinite(d.xi_ci)):
        low, high = d.xi_ci
        ax.errorbar(
            [d.threshold_quantile],
            [d.xi],
            yerr=[[d.xi - low], [high - d.xi]],
            fmt="s",
            color="black",
            capsize=4,
            label=f"bootstrap CI at {d.threshold_quantile:g}",
        )
    ax.set_xscale("logit")
    quantiles = [p["quantile"] for p in d.xi_by_threshold]
    ax.set_xticks(quantiles, [f"{q:g}" for q in quantiles])
    ax.minorticks_off()
    ax.set_xlabel("threshold quantile")
    ax.set_ylabel("ξ")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _mean_excess(ax: Any, d: Any) -> None:
    """e(u) with the fitted GPD's line above its threshold: (sigma + xi (u - u0)) / (1 - xi)."""
    points = [p for p in d.mean_excess if p["n_exceedances"] > 0]
    u = np.array([p["threshold"] for p in points])
    ax.plot(
        u, [p["mean_excess"] for p in points], "o", markersize=3, color="tab:blue", label="observed"
    )
    if d.fit_ok and d.xi < 1:
        line = u[u >= d.threshold]
        ax.plot(
            line,
            (d.sigma + d.xi * (line - d.threshold)) / (1 - d.xi),
            color="tab:red",
            label="fitted GPD",
        )
    ax.axvline(d.threshold, color="0.3", linestyle=":", linewidth=1)
    ax.set_title("Mean excess e(u) = mean(s - u | s > u)")
    ax.set_xlabel("threshold u (cosine similarity)")
    ax.set_ylabel("e(u)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
