"""Shared fixtures: the reference vectors and the backend matrix (``weince_core.testing``).

The reference vectors are the repository's ``tests/data/golden`` (two views) and
``tests/data/golden_forms`` (the pairing forms, docs/math.md section 9); ``WEINCE_GOLDEN`` and
``WEINCE_GOLDEN_FORMS`` point elsewhere. Every test reads them through the fixtures here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from weince.testing import Backend, all_backends
from weince_core.testing import Golden, golden_directory, golden_names, load_golden

try:  # float64 everywhere in JAX; tests of JAX's float32 default run in a subprocess.
    import jax

    jax.config.update("jax_enable_x64", True)
    # XLA multiplies float32 matrices in TF32 on GPUs by default, which costs three digits;
    # the float32 tolerances assume full float32 products, as on every other backend.
    jax.config.update("jax_default_matmul_precision", "highest")
except ImportError:
    pass

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_DIR = golden_directory("golden", DATA / "golden")
GOLDEN_FORMS_DIR = golden_directory("golden_forms", DATA / "golden_forms")


def _names(directory: Path) -> list[object]:
    # A missing or empty folder fails each test that needs it with the loader's message
    # (naming the folder and the variables), not the collection of the suite with a traceback.
    try:
        return list(golden_names(directory))
    except FileNotFoundError as error:
        return [pytest.param(error, id="missing")]


def _load(name: object, directory: Path) -> Golden:
    if isinstance(name, FileNotFoundError):
        pytest.fail(str(name), pytrace=False)
    return load_golden(str(name), directory)


@pytest.fixture(params=_names(GOLDEN_DIR))
def golden(request: pytest.FixtureRequest) -> Golden:
    """A reference file of the two-view loss (every file in turn)."""
    return _load(request.param, GOLDEN_DIR)


@pytest.fixture(params=_names(GOLDEN_FORMS_DIR))
def golden_form(request: pytest.FixtureRequest) -> Golden:
    """A reference file of a pairing form (docs/math.md section 9; every file in turn)."""
    return _load(request.param, GOLDEN_FORMS_DIR)


BACKENDS = all_backends()


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend of the matrix in turn; one that cannot run here is skipped with why."""
    b: Backend = request.param
    if b.skip_reason:
        pytest.skip(b.skip_reason)
    return b
