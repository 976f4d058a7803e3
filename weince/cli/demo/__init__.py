"""Train encoders with InfoNCE and WEINCE on real images and compare their frozen features.

SimCLR-style training (two augmented views per image, a small CNN with a projection head) on
scikit-learn's handwritten digits (1,797 images of 8 x 8, 10 classes; no download) or on your
own images (--data). Every loss gets the same encoder, initial weights, batches, optimiser and
schedule; the losses compared are the `infonce` and `paper` presets (and `blend` with --all).
The encoder's features (before the projection head) are then frozen and scored on a held-out
test split by cosine k-NN and a linear probe, over several seeds. Writes table.txt,
results.json (every number) and results.png to --out; with --save-embeddings also each trained
encoder's projections of the test images (what the loss sees), for `weince diagnose`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from weince.cli.args import config_value, output_folder, positive_float, positive_int
from weince.cli.output import progress_bar, write_json
from weince_core import WEINCEConfig

from .data import SPLIT_SEED, TEST_FRACTION, DataError, Split
from .protocol import Protocol, UsageError, steps_per_epoch

DEFAULT_OUT = Path("weince-out") / "demo"
# The seconds-long smoke protocol of --quick; explicit flags still win.
QUICK = {"epochs": 2, "seeds": 1, "batch_size": 128}
FULL = {"epochs": Protocol.epochs, "seeds": 3, "batch_size": Protocol.batch_size}
DEMO_PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``weince demo``.

    Args:
        parser: the command's parser, to which the options are added.
    """
    defaults = Protocol()
    parser.add_argument(
        "--epochs", type=positive_int(1), help=f"training epochs (default {FULL['epochs']})"
    )
    parser.add_argument(
        "--seeds", type=positive_int(1), help=f"seeds 0..N-1 per loss (default {FULL['seeds']})"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int(2),
        help=f"image pairs per step, N (default {FULL['batch_size']})",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=defaults.lr, help="peak learning rate (%(default)s)"
    )
    parser.add_argument(
        "--temperature",
        type=config_value("temperature"),
        default=defaults.temperature,
        help="tau, shared by every loss (%(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (%(default)s)")
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch")
    parser.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="an .npz with images 'x' (n, h, w) or (n, h, w, c) and labels 'y' (n,) "
        "(default: scikit-learn's digits)",
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        default=DEFAULT_OUT,
        help="output folder, created if missing (%(default)s)",
    )
    parser.add_argument("--all", action="store_true", help="also train with the blend preset")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run: {epochs} epochs, {seeds} seed, batch {batch_size}".format(
            **QUICK
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--save-embeddings",
        action="store_true",
        help="also write each trained encoder's projections of the test images (what the loss "
        "sees) to OUT/embeddings/LOSS-seedS.npy: (R, d) arrays for `weince diagnose --form single`",
    )


def run(args: argparse.Namespace) -> int:
    """Run the comparison; 0 on success, 2 (with a message) when an input cannot be used.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status.
    """
    try:
        return _compare(args)
    except DataError as error:
        print(f"weince demo: error: --data {args.data}: {error}", file=sys.stderr)
    except UsageError as error:
        print(f"weince demo: error: {error}", file=sys.stderr)
    return 2


def _setting(args: argparse.Namespace, name: str) -> int:
    value = getattr(args, name)
    if value is not None:
        return int(value)
    return (QUICK if args.quick else FULL)[name]


def _backend(name: str) -> ModuleType:
    missing = [pkg for module, pkg in DEMO_PACKAGES.items() if not importlib.util.find_spec(module)]
    if missing:
        raise UsageError(f"weince demo needs {', '.join(missing)}: pip install 'weince[demo]'")
    try:
        return importlib.import_module(f"weince.cli.demo.{name}")
    except ImportError as error:
        raise UsageError(
            f"--backend {name} cannot start ({error}); pip install 'weince[{name},demo]'"
        ) from error


def _compare(args: argparse.Namespace) -> int:
    from . import report
    from .data import load_digits_dataset, load_npz_dataset, split_dataset
    from .eval import metric_names

    started = time.perf_counter()
    backend = _backend(args.backend)
    backend.resolve_device(args.device)  # a missing device fails now, not after the references
    split = split_dataset(load_npz_dataset(args.data) if args.data else load_digits_dataset())
    protocol = Protocol(
        epochs=_setting(args, "epochs"),
        batch_size=min(_setting(args, "batch_size"), len(split.x_train)),
        lr=args.lr,
        temperature=args.temperature,
    )
    seeds = list(range(_setting(args, "seeds")))
    losses = ["infonce", "paper", *(["blend"] if args.all else [])]
    # temperature is a field every preset shares: one value for all, the rest as published.
    configs = {loss: WEINCEConfig.preset(loss, temperature=protocol.temperature) for loss in losses}
    metrics = metric_names(protocol.knn_ks)
    per_epoch = steps_per_epoch(len(split.x_train), protocol.batch_size)
    header = _header(split, protocol, args, len(seeds), per_epoch)
    print(header, flush=True)

    runs = _reference_runs(backend, split, protocol, seeds, args.device)
    runs += _training_runs(backend, split, protocol, seeds, configs, args)

    summary = report.summarize(runs, metrics)
    differences = report.paired_differences(runs, losses, metrics)
    training = {loss: _training_summary(runs, loss, configs[loss], per_epoch) for loss in losses}
    table = report.format_table(summary, differences, training, metrics, len(seeds))
    payload = {
        "command": "weince demo",
        "arguments": {k: str(v) for k, v in vars(args).items() if not callable(v)},
        "backend": args.backend,
        "device": args.device,
        "dataset": _dataset_info(split),
        "protocol": dataclasses.asdict(protocol),
        "steps_per_epoch": per_epoch,
        "seeds": seeds,
        "losses": {loss: dataclasses.asdict(config) for loss, config in configs.items()},
        "metrics": metrics,
        "summary": summary,
        "differences_vs_infonce": differences,
        "training": training,
        "runs": runs,
        "wall_seconds": time.perf_counter() - started,
        "versions": _versions(args.backend),
    }
    _write_outputs(args.out, header, table, payload)
    print(f"\n{table}\n")
    print(
        f"wall time {payload['wall_seconds']:.0f} s; "
        f"wrote table.txt, results.json and results.png to {args.out}"
    )
    return 0


def _scorer(split: Split, protocol: Protocol) -> Any:
    from .eval import evaluate

    def score(features_train: np.ndarray, features_test: np.ndarray) -> dict[str, float]:
        return evaluate(features_train, split.y_train, features_test, split.y_test, protocol.knn_ks)

    return score


def _reference_runs(
    backend: ModuleType, split: Split, protocol: Protocol, seeds: list[int], device: str
) -> list[dict[str, Any]]:
    """What a trained encoder must beat: the raw pixels, and the untrained encoder per seed."""
    from .report import PIXELS, RANDOM_ENCODER

    score = _scorer(split, protocol)
    flat_train, flat_test = (x.reshape(len(x), -1) for x in (split.x_train, split.x_test))
    pixels = score(flat_train, flat_test)
    runs: list[dict[str, Any]] = [{"method": PIXELS, "seed": None, "metrics": pixels}]
    for seed in seeds:
        initial = backend.initial_features(split, protocol, seed, device)
        metrics = score(initial.features_train, initial.features_test)
        runs.append({"method": RANDOM_ENCODER, "seed": seed, "metrics": metrics})
    return runs


def _training_runs(
    backend: ModuleType,
    split: Split,
    protocol: Protocol,
    seeds: list[int],
    configs: dict[str, WEINCEConfig],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """One training run per loss and seed, each scored on its frozen features."""
    score = _scorer(split, protocol)
    per_run = protocol.epochs * steps_per_epoch(len(split.x_train), protocol.batch_size)
    runs = []
    total = len(configs) * len(seeds) * per_run
    with progress_bar(total, "training", enabled=not args.no_progress) as update:
        for loss, config in configs.items():
            for seed in seeds:
                update(description=f"{loss} seed {seed}")
                result = backend.train_run(split, config, seed, protocol, args.device, update)
                if args.save_embeddings:
                    _save_embeddings(args.out, loss, seed, result.embeddings_test)
                runs.append(
                    {
                        "method": loss,
                        "seed": seed,
                        "metrics": score(result.features_train, result.features_test),
                        "seconds": result.seconds,
                        "curves": result.curves,
                    }
                )
    return runs


def _save_embeddings(out: Path, loss: str, seed: int, embeddings: np.ndarray | None) -> None:
    """``out/embeddings/LOSS-seedS.npy``: one run's projections of the test images."""
    if embeddings is None:
        raise RuntimeError(f"the {loss} run of seed {seed} returned no embeddings to save")
    folder = out / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{loss}-seed{seed}.npy", embeddings)


def _write_outputs(out: Path, header: str, table: str, payload: dict[str, Any]) -> None:
    """table.txt, results.png and results.json under ``out``."""
    from .plot import plot_results

    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(f"{header}\n\n{table}\n")
    losses = list(payload["losses"])
    runs = payload["runs"]
    curves = {loss: [r["curves"] for r in runs if r["method"] == loss] for loss in losses}
    plot_results(
        out / "results.png",
        payload["summary"],
        curves,
        payload["metrics"],
        payload["steps_per_epoch"],
        header,
    )
    write_json(out / "results.json", payload)


def _header(
    split: Split, protocol: Protocol, args: argparse.Namespace, num_seeds: int, per_epoch: int
) -> str:
    shape = "x".join(str(s) for s in split.x_train.shape[1:])
    header = (
        f"weince demo: {split.dataset.name}, {len(split.x_train)} train / {len(split.x_test)} "
        f"test images of {shape}, {split.dataset.num_classes} classes; "
        f"{args.backend} on {args.device}\n"
        f"{protocol.epochs} epochs x {per_epoch} steps of {protocol.batch_size} pairs, AdamW "
        f"lr {protocol.lr:g} (warm-up, cosine), tau {protocol.temperature:g} for every loss, "
        f"{num_seeds} seed(s)"
    )
    if args.quick:
        header += "\n--quick: a smoke test of the pipeline; its accuracies are not a result"
    return header


def _training_summary(
    runs: list[dict[str, Any]], loss: str, config: WEINCEConfig, per_epoch: int
) -> dict[str, float]:
    """Last epoch's mean loss and ``lambda_mean``, final ``beta_t``, seconds; means over seeds."""
    mine = [r for r in runs if r["method"] == loss]
    last = slice(-per_epoch, None)
    return {
        "loss": float(np.mean([r["curves"]["loss"][last].mean() for r in mine])),
        "lambda_mean": float(np.mean([r["curves"]["lambda_mean"][last].mean() for r in mine])),
        "beta_t": float(np.mean([r["curves"]["beta_t"][-1] for r in mine]))
        if config.estimate_beta
        else float("nan"),
        "seconds": float(np.mean([r["seconds"] for r in mine])),
    }


def _dataset_info(split: Split) -> dict[str, Any]:
    return {
        "name": split.dataset.name,
        "image_shape": list(split.x_train.shape[1:]),
        "classes": list(split.dataset.class_names),
        "train": len(split.x_train),
        "test": len(split.x_test),
        "test_fraction": TEST_FRACTION,
        "split_seed": SPLIT_SEED,
    }


def _versions(backend: str) -> dict[str, str]:
    import sklearn

    import weince_core

    framework = importlib.import_module(backend)
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        backend: framework.__version__,
        "scikit-learn": sklearn.__version__,
        "weince_core": weince_core.__version__,
    }
