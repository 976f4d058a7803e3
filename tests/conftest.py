"""Shared fixtures: the reference vectors and the backend matrix."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backends import Backend, all_backends

from weince_core import WEINCEConfig

try:  # float64 everywhere in JAX; tests of JAX's float32 default run in a subprocess.
    import jax

    jax.config.update("jax_enable_x64", True)
    # XLA multiplies float32 matrices in TF32 on GPUs by default, which costs three digits;
    # the float32 tolerances assume full float32 products, as on every other backend.
    jax.config.update("jax_default_matmul_precision", "highest")
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("WEINCE_GOLDEN", ROOT.parent / "shared" / "golden"))
GOLDEN_FORMS_DIR = Path(
    os.environ.get("WEINCE_GOLDEN_FORMS", ROOT.parent / "shared" / "golden_forms")
)


@dataclass(frozen=True)
class Golden:
    """One reference file of ../shared/golden (or golden_forms): a preset, and per-step inputs
    and outputs; ``meta`` is the file's description (the form, its options, input names)."""

    name: str
    config: WEINCEConfig
    steps: int
    data: Any  # NpzFile
    meta: dict[str, Any]

    def step(self, t: int) -> dict[str, np.ndarray]:
        prefix = f"s{t}_"
        return {k[len(prefix) :]: self.data[k] for k in self.data.files if k.startswith(prefix)}


def golden_names(directory: Path = GOLDEN_DIR) -> list[str]:
    names = sorted(p.stem for p in directory.glob("*.npz"))
    if not names:
        variable = "WEINCE_GOLDEN_FORMS" if directory == GOLDEN_FORMS_DIR else "WEINCE_GOLDEN"
        raise FileNotFoundError(
            f"no reference vectors in {directory}: the tests need ../shared/{directory.name} "
            f"beside the checkout, or {variable} set to their folder"
        )
    return names


def load_golden(name: str, directory: Path = GOLDEN_DIR) -> Golden:
    meta = json.loads((directory / f"{name}.json").read_text())
    config = WEINCEConfig.preset(meta["preset"], beta_init=meta["beta_t_initial"])
    return Golden(name, config, meta["steps"], np.load(directory / f"{name}.npz"), meta)


@pytest.fixture(params=golden_names())
def golden(request: pytest.FixtureRequest) -> Golden:
    return load_golden(request.param)


@pytest.fixture(params=golden_names(GOLDEN_FORMS_DIR))
def golden_form(request: pytest.FixtureRequest) -> Golden:
    """A reference file of ../shared/golden_forms (SPEC.md section 9)."""
    return load_golden(request.param, GOLDEN_FORMS_DIR)


BACKENDS = all_backends()


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    if b.skip_reason:
        pytest.skip(b.skip_reason)
    return b


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: longer tests")
