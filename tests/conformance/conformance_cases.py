"""Inputs, runs and comparisons shared by the conformance tests.

Each backend runs each case once per dtype and preset (``outcome`` is cached), through the same
``Backend.run_steps`` as ``weince crosscheck``: the framework's adapter where there is one, else
the core. Its results are compared with the core on NumPy float64 arrays holding the same inputs
(rounded to the dtype under test), within ``weince_core.testing.tolerance(dtype, delta)``:
the table of floors and the reasons for them are in the docstring of ``weince_core.testing``.

``backend_dtypes()`` parametrizes a test over every backend and the dtypes that backend has; a
backend that cannot run here is skipped, with the reason, by the ``backend`` fixture.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest

from weince.testing import Backend, all_backends
from weince_core import WEINCEConfig
from weince_core.testing import (
    Difference,
    ReferenceCache,
    StepResult,
    Tolerance,
    compare,
    generated_batches,
    tolerance,
)

BACKENDS = all_backends()
PRESETS = ("paper", "blend", "infonce")
Batch = tuple[np.ndarray, np.ndarray]


def backend_dtypes(*only: str, adapters_only: bool = False) -> pytest.MarkDecorator:
    """Parametrize a test over every backend (the ``backend`` fixture) and each dtype it has.

    ``only`` keeps just those dtypes; ``adapters_only`` the backends whose framework has an
    adapter (the others run the core, which tests/core checks on every backend). Ids read
    ``torch-cpu-bfloat16``.
    """
    pairs = [
        pytest.param(b, dtype, id=f"{b.id}-{dtype}")
        for b in BACKENDS
        for dtype in b.dtypes
        if (not only or dtype in only) and (b.adapter or not adapters_only)
    ]
    return pytest.mark.parametrize(("backend", "dtype"), pairs, indirect=["backend"])


def backend_dtype_presets() -> pytest.MarkDecorator:
    """``backend_dtypes()`` times every preset, for float64 and float32; half precision runs
    the ``paper`` preset alone (it holds every term, and each run costs a JAX compilation)."""
    triples = [
        pytest.param(b, dtype, preset, id=f"{b.id}-{dtype}-{preset}")
        for b in BACKENDS
        for dtype in b.dtypes
        for preset in (PRESETS if dtype in ("float64", "float32") else ("paper",))
    ]
    return pytest.mark.parametrize(("backend", "dtype", "preset"), triples, indirect=["backend"])


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Seeded inputs: ``kind`` is ``random`` (two views), ``zero_rows``, ``collapsed`` (every
    cosine rounds to 1, even in float64) or ``near_cap`` (1 - cosine around eps = 1e-6)."""

    kind: str
    n: int
    d: int
    steps: int = 3
    seed: int = 0

    @functools.cached_property
    def batches(self) -> tuple[Batch, ...]:
        batches = generated_batches(self.n, self.d, self.steps, self.seed)
        rng = np.random.default_rng(self.seed + 1)
        if self.kind == "random":
            return batches
        if self.kind == "zero_rows":
            return tuple((_zero(z_i, 0, 3), _zero(z_j, 1, 4)) for z_i, z_j in batches)
        noise = {"collapsed": 1e-12, "near_cap": 1e-3}[self.kind]
        out = []
        for z_i, z_j in batches:
            direction = rng.standard_normal(self.d)
            out.append((direction + noise * z_i, direction + noise * z_j))
        return tuple(out)


def _zero(z: np.ndarray, start: int, step: int) -> np.ndarray:
    z = z.copy()
    z[start::step] = 0.0
    return z


# -- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One backend's results on one case, and what they are held to."""

    path: str  # "adapter" or "core"
    inputs: tuple[Batch, ...]  # as the backend holds them (rounded to the dtype), float64
    results: list[StepResult]
    reference: list[StepResult]  # the core on NumPy float64 arrays of the same inputs
    tolerance: Tolerance  # tolerance(dtype, delta) for these inputs

    def differences(self) -> dict[str, Difference]:
        return compare(self.results, self.reference, self.tolerance)


_REFERENCES = ReferenceCache()


@functools.cache
def outcome(backend: Backend, dtype: str, preset: str, case: Case) -> Outcome:
    inputs = rounded(backend, dtype, case)
    path, results = backend.run_steps(inputs, WEINCEConfig.preset(preset), dtype)
    reference = _REFERENCES.get(inputs, preset)
    return Outcome(path, inputs, results, reference, tolerance(dtype, _REFERENCES.delta(inputs)))


def rounded(backend: Backend, dtype: str, case: Case) -> tuple[Batch, ...]:
    """The case's inputs after the round trip through ``backend`` in ``dtype``."""
    return tuple(
        tuple(backend.to_numpy(backend.asarray(z, dtype)) for z in batch)  # type: ignore[misc]
        for batch in case.batches
    )


@functools.cache
def numpy_outcome(dtype: str, preset: str, case: Case) -> Outcome:
    """NumPy's run of ``case`` in ``dtype``'s compute dtype (float64, else float32)."""
    numpy = next(b for b in BACKENDS if b.id == "numpy")
    compute = "float64" if dtype == "float64" else "float32"
    # The inputs rounded to ``dtype`` first, then held in the compute dtype (exact).
    inputs = tuple(tuple(np.asarray(z) for z in b) for b in _rounded_like(dtype, case))
    path, results = numpy.run_steps(inputs, WEINCEConfig.preset(preset), compute)
    reference = _REFERENCES.get(inputs, preset)
    return Outcome(path, inputs, results, reference, tolerance(dtype, _REFERENCES.delta(inputs)))


def _rounded_like(dtype: str, case: Case) -> tuple[Batch, ...]:
    """The inputs rounded to ``dtype`` by the first runnable backend that has it."""
    backend = next(b for b in BACKENDS if not b.skip_reason and b.supports(dtype))
    return rounded(backend, dtype, case)


def assert_agree(outcome: Outcome, quantities: tuple[str, ...], what: str) -> None:
    """Each quantity within its tolerance of the reference, or a message naming the worst."""
    differences = outcome.differences()
    for q in quantities:
        diff = differences[q]
        assert diff.passed, (
            f"{what} ({outcome.path}): {q} off by {diff.error:.2e} > {diff.tolerance:.1e} "
            f"(abs {diff.abs:.2e}, rel {diff.rel:.2e})"
        )


def expected_loss_dtype(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"
