"""Is the upper tail of your embeddings' negative similarities bounded (Weibull), as WEINCE assumes?

Fits a generalized Pareto distribution to the negative cosine similarities above a threshold
(each pair once, within batches of --batch-size), with a bootstrap interval of its shape xi over
anchors (or batches), tests an exponential (Gumbel-like) tail, follows xi over thresholds and the
mean excess, and runs WEINCE's own statistics (rho, dAIC, lambda, beta_hat) on the same batches.
Prints a short report with a verdict: bounded, gumbel-like, check-normalization, inconclusive,
or that the fit failed. The Python function is weince.cli.diagnose.diagnosis.diagnose.

Exit status: 0 with a report, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from weince.cli.args import open_fraction, output_file, positive_int
from weince.cli.output import write_json

# The function's argument names, as the command line spells them.
OPTIONS = {
    "embeddings": "EMBEDDINGS",
    "form": "--form",
    "threshold_quantile": "--threshold-quantile",
    "batch_size": "--batch-size",
    "config": "--config",
    "bootstrap": "--bootstrap",
    "seed": "--seed",
}
PRESETS = ("paper", "blend")


class UsageError(Exception):
    """A bad argument: the message names it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``weince diagnose``.

    Args:
        parser: the command's parser, to which the options are added.
    """
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "embeddings",
        type=Path,
        metavar="EMBEDDINGS",
        help="a .npy or .npz file. two_view: as `weince crosscheck --input` reads it ((2, N, d), "
        "(2N, d), or .npz with z_i and z_j); single: one (R, d) array (.npy, or .npz with one "
        "array or an array z)",
    )
    parser.add_argument(
        "--form",
        choices=("two_view", "single"),
        default="two_view",
        help="two_view: negatives as the two-view loss's; single: all pairs i != j (%(default)s)",
    )
    parser.add_argument(
        "--threshold-quantile",
        type=open_fraction,
        default=0.99,
        metavar="Q",
        help="the threshold: this quantile of the negative similarities, in (0, 1) (%(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int(2),
        metavar="B",
        help="rows (single) or pairs (two_view) per batch, as in training (default: 1024)",
    )
    parser.add_argument(
        "--config",
        choices=PRESETS,
        default="paper",
        help="the WEINCE preset whose statistics are reported (%(default)s)",
    )
    parser.add_argument(
        "--bootstrap",
        type=positive_int(10),
        default=200,
        metavar="N",
        help="resamples of anchors (or batches) for the interval of xi (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="of the bootstrap (%(default)s)")
    parser.add_argument("--json", type=output_file, metavar="PATH", help="write every number here")
    parser.add_argument(
        "--csv", type=output_file, metavar="PATH", help="write the per-anchor table here"
    )
    parser.add_argument(
        "--plot",
        type=output_file,
        metavar="PATH",
        help="write a PNG: QQ plot, xi against threshold, mean excess, histogram of lambda",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def load_embeddings(path: Path, form: str) -> Any:
    """The file's embeddings: ``(z_i, z_j)`` (stacked over steps) for ``two_view``, one array for
    ``single``; ``UsageError`` naming EMBEDDINGS when it cannot be read so.

    Args:
        path: the ``.npy`` or ``.npz`` file.
        form: ``"two_view"`` or ``"single"``.

    Returns:
        What ``diagnose`` takes as ``embeddings``.
    """
    if form == "two_view":
        from weince.cli.crosscheck import UsageError as InputError
        from weince.cli.crosscheck import load_batches

        try:
            batches = load_batches(path, steps=1)
        except InputError as error:
            raise UsageError(str(error).replace("--input:", "EMBEDDINGS:", 1)) from None
        if len(batches) == 1:
            return batches[0]
        return tuple(np.stack(view) for view in zip(*batches, strict=True))
    if not path.is_file():
        raise UsageError(f"EMBEDDINGS: no such file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"EMBEDDINGS: cannot read {path} as .npy or .npz: {error}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = loaded.files
        if len(names) == 1:
            return loaded[names[0]]
        if "z" in names:
            return loaded["z"]
        raise UsageError(
            f"EMBEDDINGS: {path} holds {', '.join(names) or 'nothing'}; --form single needs one "
            "array, or an array named z"
        )


def _check_packages(args: argparse.Namespace) -> None:
    missing = ["scipy"] if importlib.util.find_spec("scipy") is None else []
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        missing.append("matplotlib")
    if missing:
        raise UsageError(
            f"weince diagnose needs {', '.join(missing)}: pip install 'weince[diagnose]'"
        )


def run(args: argparse.Namespace) -> int:
    """Diagnose the file; print the report; write the JSON, CSV and plot asked for.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status: 0 with a report, 2 for a usage error.
    """
    try:
        _check_packages(args)
        embeddings = load_embeddings(args.embeddings, args.form)
        from weince.cli.diagnose.diagnosis import ArgumentError, diagnose, format_report

        try:
            diagnosis = diagnose(
                embeddings,
                form=args.form,
                threshold_quantile=args.threshold_quantile,
                batch_size=args.batch_size,
                config=args.config,
                bootstrap=args.bootstrap,
                seed=args.seed,
                progress=not args.no_progress,
            )
        except ArgumentError as error:
            raise UsageError(
                f"{OPTIONS.get(error.argument, error.argument)}: {error.message}"
            ) from None
    except UsageError as error:
        print(f"weince diagnose: error: {error}", file=sys.stderr)
        return 2
    print(format_report(diagnosis))
    if args.json is not None:
        write_json(args.json, {"input": str(args.embeddings), **diagnosis.as_json()})
    if args.csv is not None:
        write_csv(args.csv, diagnosis)
    if args.plot is not None:
        from weince.cli.diagnose.plot import plot_diagnosis

        plot_diagnosis(args.plot, diagnosis, title=args.embeddings.name)
    return 0


def write_csv(path: Path, diagnosis: Any) -> None:
    """One row per anchor: its batch, view and row, and WEINCE's statistics of it.

    Args:
        path: the file to write.
        diagnosis: what ``diagnosis.diagnose`` returned.
    """
    rows = list(diagnosis.anchors.rows())
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
