"""The demo's picture: accuracy per method with error bars, and the training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .eval import metric_label
from .report import REFERENCE_NOTES

LOSS_COLOURS = {"infonce": "tab:blue", "paper": "tab:red", "blend": "tab:orange"}
REFERENCE_COLOURS = ("0.55", "0.78")


def plot_results(
    path: Path,
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    curves: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    metrics: Sequence[str],
    steps_per_epoch: int,
    title: str,
) -> None:
    """Write a 2 x 2 PNG: accuracies, training loss, ``lambda_mean`` and ``beta_t`` per step.

    ``curves[loss]`` holds one dict of per-step arrays per seed. Each curve is the mean over
    seeds, per step (faint) and per epoch (bold, with a band of one standard deviation).

    Args:
        path: the PNG to write.
        summary: per method and metric, the mean and standard deviation.
        curves: per loss, one dict of per-step arrays per seed.
        metrics: the metrics, in order.
        steps_per_epoch: training steps per epoch.
        title: the figure's title.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(13, 9), layout="constrained")
    figure.suptitle(title, fontsize=11)
    acc, loss_ax, lam_ax, beta_ax = figure.subplots(2, 2).ravel()

    methods = list(summary)
    width = 0.8 / len(methods)
    x = np.arange(len(metrics))
    references = iter(REFERENCE_COLOURS)
    lowest = 1.0
    for i, method in enumerate(methods):
        means = np.array([summary[method][m]["mean"] for m in metrics]) * 100
        stds = np.array([summary[method][m]["std"] for m in metrics]) * 100
        lowest = min(lowest, float((means - stds).min()) / 100)
        colour = LOSS_COLOURS.get(method) or next(references, "0.4")
        label = f"{method} ({REFERENCE_NOTES[method]})" if method in REFERENCE_NOTES else method
        offset = (i - (len(methods) - 1) / 2) * width
        acc.bar(x + offset, means, width, yerr=stds, capsize=3, color=colour, label=label)
    acc.set_xticks(x, [metric_label(m) for m in metrics])
    acc.set_ylim(max(0.0, 100 * lowest - 3), 100)
    acc.set_ylabel("test accuracy (%)")
    acc.set_title("Frozen features: mean ± std over seeds")
    acc.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    acc.grid(axis="y", alpha=0.3)

    panels = (
        (loss_ax, "loss", "training loss (each loss's own objective)"),
        (lam_ax, "lambda_mean", "λ mean (share of the shortfall coordinate)"),
        (beta_ax, "beta_t", "β_t (online shortfall slope)"),
    )
    for ax, key, label in panels:
        drawn = False
        for loss, per_seed in curves.items():
            if key == "beta_t" and not _varies(per_seed, key):
                continue  # a constant beta_t is unused by that loss
            steps = np.stack([seed_curves[key] for seed_curves in per_seed])  # (seeds, steps)
            line_colour = LOSS_COLOURS.get(loss)
            # Faint: every step (mean over seeds). Bold: epoch means, with the seeds' spread.
            step_x = (np.arange(steps.shape[1]) + 1) / steps_per_epoch
            ax.plot(step_x, steps.mean(axis=0), color=line_colour, alpha=0.25, linewidth=0.6)
            epochs = steps.reshape(len(steps), -1, steps_per_epoch).mean(axis=2)
            mean, std = epochs.mean(axis=0), epochs.std(axis=0)
            epoch_x = np.arange(1, epochs.shape[1] + 1)
            ax.plot(epoch_x, mean, color=line_colour, label=loss, linewidth=1.6)
            ax.fill_between(epoch_x, mean - std, mean + std, color=line_colour, alpha=0.2, lw=0)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no loss here estimates β_t", ha="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def _varies(per_seed: Sequence[Mapping[str, np.ndarray]], key: str) -> bool:
    return any(np.ptp(seed_curves[key]) > 0 for seed_curves in per_seed)
