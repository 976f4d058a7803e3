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


@dataclass(frozen=True)
class Golden:
    """One reference file of ../shared/golden: a preset, and per-step inputs and outputs."""

    name: str
    config: WEINCEConfig
    steps: int
    data: Any  # NpzFile

    def step(self, t: int) -> dict[str, np.ndarray]:
        prefix = f"s{t}_"
        return {k[len(prefix) :]: self.data[k] for k in self.data.files if k.startswith(prefix)}


def golden_names() -> list[str]:
    names = sorted(p.stem for p in GOLDEN_DIR.glob("*.npz"))
    if not names:
        raise FileNotFoundError(
            f"no reference vectors in {GOLDEN_DIR}: the tests need ../shared/golden beside the "
            "checkout, or WEINCE_GOLDEN set to their folder"
        )
    return names


def load_golden(name: str) -> Golden:
    meta = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
    config = WEINCEConfig.preset(meta["preset"], beta_init=meta["beta_t_initial"])
    return Golden(name, config, meta["steps"], np.load(GOLDEN_DIR / f"{name}.npz"))


@pytest.fixture(params=golden_names())
def golden(request: pytest.FixtureRequest) -> Golden:
    return load_golden(request.param)


BACKENDS = all_backends()


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    if b.skip_reason:
        pytest.skip(b.skip_reason)
    return b


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: longer tests")
