"""The reference vectors: files of inputs and outputs per step, and where they are."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import WEINCEConfig

# -- reference vectors -------------------------------------------------------------------------

# The environment variables that point at the reference vectors, by folder name.
GOLDEN_VARIABLES = {"golden": "WEINCE_GOLDEN", "golden_forms": "WEINCE_GOLDEN_FORMS"}


@dataclass(frozen=True)
class Golden:
    """One reference file: a preset, and per-step inputs and outputs.

    ``meta`` is the file's description (the preset, the form and its options, input names).
    """

    name: str
    config: WEINCEConfig
    steps: int
    data: Any  # NpzFile
    meta: dict[str, Any]

    def step(self, t: int) -> dict[str, np.ndarray]:
        """The arrays of one step.

        Args:
            t: the step, from 0 to ``steps - 1``.

        Returns:
            Inputs and outputs by name (``zi``, ``zj``, ``loss``, ``grad_zi``, ``beta_t``...).
        """
        prefix = f"s{t}_"
        return {k[len(prefix) :]: self.data[k] for k in self.data.files if k.startswith(prefix)}


def golden_directory(kind: str, default: str | os.PathLike[str]) -> Path:
    """Where the reference vectors of one kind are: the environment's choice, else a default.

    Args:
        kind: ``"golden"`` (two views, ``WEINCE_GOLDEN``) or ``"golden_forms"`` (the pairing
            forms, ``WEINCE_GOLDEN_FORMS``).
        default: the folder used when the variable is not set.

    Returns:
        The folder.

    Raises:
        ValueError: ``kind`` is neither.
    """
    if kind not in GOLDEN_VARIABLES:
        raise ValueError(f"kind must be one of {', '.join(GOLDEN_VARIABLES)}; got {kind!r}")
    return Path(os.environ.get(GOLDEN_VARIABLES[kind]) or default)


def golden_names(directory: str | os.PathLike[str]) -> list[str]:
    """The reference files of a folder, by name (``paper_paired_n256_d64``...).

    Args:
        directory: a folder of ``<name>.npz`` and ``<name>.json`` pairs.

    Returns:
        The names, sorted.

    Raises:
        FileNotFoundError: the folder is missing or holds no ``.npz`` file; the message names
            the folder and the environment variables that choose it.
    """
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.npz"))
    if not names:
        what = "does not exist" if not directory.is_dir() else "holds no reference vectors"
        variables = " and ".join(GOLDEN_VARIABLES.values())
        raise FileNotFoundError(
            f"{directory} {what} (*.npz with *.json): point {variables} at the folders of "
            f"reference vectors (the repository keeps them in tests/data/golden and "
            f"tests/data/golden_forms)"
        )
    return names


def load_golden(name: str, directory: str | os.PathLike[str]) -> Golden:
    """One reference file.

    Args:
        name: the file's name without extension (:func:`golden_names`).
        directory: the folder holding ``<name>.npz`` and ``<name>.json``.

    Returns:
        The reference, with the configuration its JSON names (preset and initial ``beta_t``).

    Raises:
        FileNotFoundError: either file is missing; the message names the folder and the
            environment variables that choose it.
    """
    directory = Path(directory)
    if not (directory / f"{name}.npz").is_file() or not (directory / f"{name}.json").is_file():
        variables = " and ".join(GOLDEN_VARIABLES.values())
        raise FileNotFoundError(
            f"no reference {name!r} (.npz and .json) in {directory}: check {variables}"
        )
    meta = json.loads((directory / f"{name}.json").read_text())
    config = WEINCEConfig.preset(meta["preset"], beta_init=meta["beta_t_initial"])
    return Golden(name, config, meta["steps"], np.load(directory / f"{name}.npz"), meta)
