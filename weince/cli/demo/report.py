"""The demo's results: summaries over seeds, the terminal table, the JSON and the PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weince.cli.output import table

from .eval import metric_label

PIXELS = "pixels"
RANDOM_ENCODER = "random encoder"
REFERENCE_NOTES = {PIXELS: "raw pixels, no encoder", RANDOM_ENCODER: "untrained CNN"}
BASELINE = "infonce"


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}``; ``std`` is the sample standard deviation (0 for one value).

    Args:
        values: the values, one per seed.

    Returns:
        The dict.
    """
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": [float(v) for v in array]}


def summarize(
    runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and metric, the mean and standard deviation over seeds of ``runs``.

    Each run is ``{"method", "seed", "metrics": {...}}``; methods keep their first-seen order.

    Args:
        runs: the runs.
        metrics: the metrics to summarise.

    Returns:
        ``summary[method][metric]``, as ``mean_std`` gives it.
    """
    methods = list(dict.fromkeys(run["method"] for run in runs))
    return {
        method: {
            metric: mean_std([r["metrics"][metric] for r in runs if r["method"] == method])
            for metric in metrics
        }
        for method in methods
    }


def paired_differences(
    runs: Sequence[Mapping[str, Any]], losses: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per loss other than InfoNCE, ``loss - infonce`` of each metric, seed by seed.

    Seeds pair runs that share the initial weights and the batches, so the spread of the
    difference is smaller than the spreads of the two means suggest.

    Args:
        runs: the runs.
        losses: the losses trained.
        metrics: the metrics.

    Returns:
        ``differences[loss][metric]``, as ``mean_std`` gives it.
    """
    by_key = {(r["method"], r["seed"]): r["metrics"] for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["method"] == BASELINE})
    return {
        loss: {
            metric: mean_std(
                [by_key[(loss, s)][metric] - by_key[(BASELINE, s)][metric] for s in seeds]
            )
            for metric in metrics
        }
        for loss in losses
        if loss != BASELINE and seeds
    }


def _percent(stat: Mapping[str, Any], spread: bool = True, signed: bool = False) -> str:
    sign = "+" if signed else ""
    text = f"{100 * stat['mean']:{sign}.1f}"
    return f"{text} ± {100 * stat['std']:.1f}" if spread else text


def format_table(
    summary: Mapping[str, Mapping[str, Mapping[str, Any]]],
    differences: Mapping[str, Mapping[str, Mapping[str, Any]]],
    training: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    num_seeds: int,
) -> str:
    """The terminal table: test accuracy (%) per method, then the paired differences.

    ``training`` holds, per trained loss, the last epoch's mean loss, ``lambda_mean`` and the
    final ``beta_t`` (when the loss estimates it), and the mean seconds per run.

    Args:
        summary: as ``summarize`` gives it.
        differences: as ``paired_differences`` gives it.
        training: per trained loss, its training summary.
        metrics: the metrics, in column order.
        num_seeds: the seeds per loss.

    Returns:
        The table's text.
    """
    headers = ["method", *(metric_label(m) for m in metrics)]
    extra = ["last-epoch loss", "λ mean", "β_t", "s / run"]
    rows: list[list[str]] = []
    for method, stats in summary.items():
        deterministic = method == PIXELS
        label = f"{method} ({REFERENCE_NOTES[method]})" if method in REFERENCE_NOTES else method
        row = [label, *(_percent(stats[m], spread=not deterministic) for m in metrics)]
        info = training.get(method)
        if info is None:
            row += ["", "", "", ""]
        else:
            beta = "" if math.isnan(info["beta_t"]) else f"{info['beta_t']:.2f}"
            row += [
                f"{info['loss']:.3f}",
                f"{info['lambda_mean']:.3f}",
                beta,
                f"{info['seconds']:.1f}",
            ]
        rows.append(row)
    for loss, stats in differences.items():
        label = f"{loss} − {BASELINE} (paired)"
        rows.append([label, *(_percent(stats[m], signed=True) for m in metrics), "", "", "", ""])
    headers += extra
    title = f"Test accuracy (%), mean ± sample std over {num_seeds} seed(s)"
    grid = table(
        headers, rows, justify="l" + "r" * len(headers), rules=True, sections=[len(summary)]
    )
    return f"{title}\n{grid}"
